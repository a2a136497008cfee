//! Logs (tracing) and metrics (Prometheus), set up once per process.

use crate::configuration::LogFormat;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt;
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber (`RUST_LOG` filters, default `info`). Later calls do nothing, so
/// tests may start several instances in one process.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let output = match format {
        LogFormat::Json => fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_target(false).compact().boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(ClientErrorsAtWarn)
        .with(output.with_filter(NotAClientError))
        .try_init();
}

/// actix-http logs the end of every connection it closed on a client's fault (a malformed
/// request head, a client that hung up) at ERROR, as `stream error: …`, where no handler can
/// answer or log it. Those are the client's errors, not the service's: this layer logs them
/// again at WARN, and [`NotAClientError`] keeps the ERROR original out of the output.
///
/// The WARN line is written by a thread of its own: an event raised inside a subscriber's
/// callback would be dropped (tracing does not re-enter a dispatcher). The queue is bounded, so
/// a flood of bad requests costs no memory; what does not fit is counted, not logged.
struct ClientErrorsAtWarn;

impl ClientErrorsAtWarn {
    fn report(message: String) {
        static QUEUE: OnceLock<std::sync::mpsc::SyncSender<String>> = OnceLock::new();
        let queue = QUEUE.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<String>(256);
            let spawned = std::thread::Builder::new()
                .name("client-error-log".into())
                .spawn(move || {
                    for message in receiver {
                        tracing::warn!(error = %message, "connection closed after a client error");
                    }
                });
            if let Err(err) = spawned {
                eprintln!("cannot start the client-error log thread: {err}");
            }
            sender
        });
        metrics::counter!("http_client_stream_errors_total").increment(1);
        let _ = queue.try_send(message);
    }
}

/// See [`ClientErrorsAtWarn`].
struct NotAClientError;

/// The message of an actix-http "stream error" event, if `event` is one.
fn actix_stream_error(event: &Event<'_>) -> Option<String> {
    let metadata = event.metadata();
    if *metadata.level() != Level::ERROR || !metadata.target().starts_with("actix_http::h1") {
        return None;
    }
    let mut message = Message(String::new());
    event.record(&mut message);
    message.0.starts_with("stream error").then_some(message.0)
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for ClientErrorsAtWarn {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if let Some(message) = actix_stream_error(event) {
            ClientErrorsAtWarn::report(message);
        }
    }
}

impl<S: Subscriber> Filter<S> for NotAClientError {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        actix_stream_error(event).is_none()
    }
}

/// The process-wide Prometheus recorder (installed on first use; the `metrics` facade is global).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                fencelock::observe::describe_metrics();
                metrics::describe_counter!(
                    "http_requests_total",
                    "HTTP requests by route and status"
                );
                metrics::describe_histogram!(
                    "http_request_duration_seconds",
                    metrics::Unit::Seconds,
                    "HTTP request latency"
                );
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records `(level, message)` of every event it is shown.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(Level, String)>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message.0));
        }
    }

    /// The only test in this binary that installs a global subscriber (the WARN comes from
    /// the logging thread, which sees only the global one).
    #[test]
    fn actix_stream_errors_are_logged_at_warn_and_other_errors_stay_errors() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(ClientErrorsAtWarn)
            .with(seen.clone().with_filter(NotAClientError));
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}", "bad header");
        tracing::error!(target: "actix_http::h1::dispatcher", "Response payload stream error");
        tracing::error!("database error");
        for _ in 0..100 {
            if seen.0.lock().unwrap().len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut seen = seen.0.lock().unwrap().clone();
        seen.sort_by_key(|(level, _)| *level);
        let levels: Vec<Level> = seen.iter().map(|(level, _)| *level).collect();
        assert_eq!(
            levels,
            [Level::ERROR, Level::ERROR, Level::WARN],
            "{seen:?}"
        );
        assert_eq!(seen[2].1, "connection closed after a client error");
    }
}
