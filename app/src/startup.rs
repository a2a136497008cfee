//! Building and running one instance: migrations, pools, the Locker, routes, middleware and the
//! scheduled job.

use crate::configuration::Settings;
use crate::idempotency;
use crate::input::{check_headers, check_path, path_error, query_error};
use crate::state::AppState;
use crate::{db, job, telemetry};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use fencelock::{Locker, LockerConfig};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tracing::Instrument;
use utoipa_actix_web::AppExt;

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The lock configuration was refused.
    #[error("REDIS_URLS / LOCK_PREFIX: {0}")]
    Locker(#[from] fencelock::LockError),
    /// The CA file for `rediss://` could not be used.
    #[error("REDIS_TLS_CA: {0}")]
    Tls(String),
    /// Migrations could not run (is PostgreSQL up? is DATABASE_URL right?).
    #[error("DATABASE_URL: {0}")]
    Database(String),
    /// The address could not be bound.
    #[error("BIND: {0}")]
    Bind(#[from] std::io::Error),
}

/// A built instance, bound and ready to run.
pub struct Application {
    port: u16,
    instance: String,
    server: Server,
    state: AppState,
    job_interval: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The lock configuration: the URLs as they are, or, with `REDIS_TLS_CA`, clients that trust
/// that CA (and only it) for `rediss://`.
fn locker_config(settings: &Settings) -> Result<LockerConfig, StartupError> {
    let config = match &settings.redis_tls_ca {
        None => LockerConfig::new(settings.redis_urls.clone()),
        Some(path) => {
            let ca = std::fs::read(path)
                .map_err(|err| StartupError::Tls(format!("{}: {err}", path.display())))?;
            let clients = settings.redis_urls.iter().map(|url| {
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                };
                redis::Client::build_with_tls(url.as_str(), certificates).map_err(|err| {
                    StartupError::Tls(format!("{}: {err}", fencelock::redact_url(url)))
                })
            });
            LockerConfig::from_clients(clients.collect::<Result<Vec<_>, _>>()?)
        }
    };
    Ok(config.prefix(settings.lock_prefix.clone()))
}

impl Application {
    /// Runs migrations, binds `settings.bind` (port 0 = any free port) and builds the server.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        db::run_migrations(&settings.database_url)
            .await
            .map_err(StartupError::Database)?;
        let db = db::Database::new(&settings.database_url, settings.db_pool_size);
        let locker = Locker::new(locker_config(&settings)?)?;
        let listener = TcpListener::bind(settings.bind)?;
        let port = listener.local_addr()?.port();
        let instance = settings
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", hostname()));
        let state = AppState {
            db,
            locker: locker.clone(),
            instance: instance.clone(),
            allow_reset: settings.allow_reset,
        };
        // Installed before the first request so lock metrics are recorded from the start.
        let _ = telemetry::metrics_handle();
        let app_state = web::Data::new(state.clone());
        let app_locker = web::Data::new(locker);
        let batches = web::Data::new(crate::routes::product::Batches::new(
            settings.batch_queue_limit,
        ));
        let header_instance = instance.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(app_locker.clone())
                .app_data(batches.clone())
                .app_data(web::PathConfig::default().error_handler(path_error))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .into_utoipa_app()
                .configure(crate::api::routes)
                .into_app()
                .service(crate::api::docs())
                .default_service(web::to(not_found))
                .wrap(actix_web::middleware::from_fn(observe_request))
                .wrap(DefaultHeaders::new().add(("X-Instance", header_instance.clone())))
        })
        // A client that hangs up cancels its handler (and so releases its lock) at once.
        .h1_allow_half_closed(false)
        // No deadline for a request's head here: actix-web answers one with a bare, non-JSON
        // 408, and an instance resumed after a pause (SIGSTOP, a stalled VM) found the head the
        // load balancer had sent meanwhile past it. Slow clients are the load balancer's to
        // time out (`timeout http-request 10s`, a JSON 408 `lb_request_timeout`).
        .client_request_timeout(Duration::ZERO)
        // Idle keep-alive connections are closed by the load balancer (HAProxy keeps them up to
        // its 60 s server timeout), never by us: an app-side close racing the proxy's reuse of
        // that connection can cut a request in flight.
        .keep_alive(Duration::from_secs(75))
        .shutdown_timeout(30);
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Application {
            port,
            instance,
            server,
            state,
            job_interval: settings.job_interval,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This instance's id (`X-Instance`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Serves until SIGTERM/SIGINT (graceful: in-flight requests finish and release their
    /// locks) and runs the scheduled job meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(instance = %self.instance, port = self.port, "listening");
        let scheduler = (!self.job_interval.is_zero())
            .then(|| tokio::spawn(job::run_scheduler(self.state.clone(), self.job_interval)));
        let pruner = tokio::spawn(prune_idempotency_keys(self.state.clone()));
        let outcome = self.server.await;
        if let Some(scheduler) = scheduler {
            scheduler.abort();
        }
        pruner.abort();
        tracing::info!(instance = %self.instance, "stopped");
        outcome
    }
}

/// Deletes expired idempotency records every [`idempotency::PRUNE_INTERVAL`] (lookups ignore
/// them already; this keeps the table small) until the task is dropped.
async fn prune_idempotency_keys(state: AppState) {
    loop {
        tokio::time::sleep(idempotency::PRUNE_INTERVAL).await;
        let mut pruned = 0;
        // Until a batch comes back short; bounded all the same (1,000 batches: 5 million).
        for _ in 0..1_000 {
            match state
                .db
                .write(async |conn| idempotency::prune(conn).await)
                .await
            {
                Ok(batch) => {
                    pruned += batch;
                    if (batch as i64) < idempotency::PRUNE_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "pruning idempotency keys failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, "expired idempotency keys deleted");
        }
    }
}

/// No route took the request: `405 method_not_allowed` with `Allow` when the path is known,
/// else `404 not_found`.
async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let allowed = crate::api::allowed_methods(req.path());
    if allowed.is_empty() {
        return HttpResponse::NotFound()
            .json(serde_json::json!({"error": "not_found", "message": "no such route"}));
    }
    method_not_allowed(req.method(), &allowed)
}

/// `405 method_not_allowed` with `Allow`.
fn method_not_allowed(method: &actix_web::http::Method, allowed: &[&str]) -> HttpResponse {
    let allow = allowed.join(", ");
    HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, allow.clone()))
        .json(serde_json::json!({
            "error": "method_not_allowed",
            "message": format!("{method} is not served here; allowed: {allow}"),
        }))
}

/// Per request: a request id (taken from `X-Request-Id` or made), a span that every log line
/// inside carries, one completion log line, and HTTP metrics by route pattern and status.
async fn observe_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 64)
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let instance = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.instance.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        %request_id,
        %instance,
        method = %req.method(),
        path = %req.path(),
    );
    let started = Instant::now();
    let refused = check_headers(&req).and_then(|()| check_path(req.path()));
    let wrong_method = crate::api::refused_on_exact_route(req.path(), req.method().as_str());
    let mut response = match (refused, wrong_method) {
        (Err(refused), _) => {
            span.in_scope(|| tracing::warn!(code = refused.code(), "request refused"));
            let response = actix_web::ResponseError::error_response(&refused);
            req.into_response(response).map_into_right_body()
        }
        (Ok(()), Some(allowed)) => {
            let response = method_not_allowed(req.method(), &allowed);
            req.into_response(response).map_into_right_body()
        }
        (Ok(()), None) => {
            // HEAD is served by the GET route; actix-http sends the head without the body
            // (it decided that from the request line, before this rewrite).
            // (Only where GET is served: elsewhere a HEAD is told 405 as itself.)
            if req.method() == actix_web::http::Method::HEAD
                && crate::api::allowed_methods(req.path()).contains(&"GET")
            {
                req.head_mut().method = actix_web::http::Method::GET;
            }
            next.call(req)
                .instrument(span.clone())
                .await?
                .map_into_left_body()
        }
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    // Probes (the load balancer checks /health every second) would drown the log at INFO.
    let probe = route.starts_with("/health") || route == "/metrics";
    metrics::counter!("http_requests_total", "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if probe {
            tracing::debug!(status, elapsed_ms, "request completed");
        } else {
            tracing::info!(status, elapsed_ms, "request completed");
        }
    });
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(response)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
