//! The chaos load driver: a bounded set of reqwest clients that deduct one unit at a time and
//! record every answer (a history, in Jepsen's sense), so the checkers can look at each error
//! body, not only at status counts as oha reports them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// Per request: longer than the deduct handler's wait budget (20 s), so a lock that cannot be
/// had ends as the service's own 423, not as a client timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(25);
/// No client starts a request later than this after the run began, whatever the scenario does.
const MAX_RUN: Duration = Duration::from_secs(180);
/// Requests per client at most (a bound; a run makes a few thousand in all).
const MAX_REQUESTS_PER_CLIENT: usize = 100_000;
/// The body of every deduction.
pub const DEDUCT_BODY: &str = r#"{"quantity":1}"#;

/// A group of identical clients aimed at one base URL.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Shown in the report (`lb`, `app2`, `probe`).
    pub label: String,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub clients: usize,
    /// Pause between one client's requests (zero: back to back).
    pub pace: Duration,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx; the body's `fence`, if it had one.
    Ok { fence: Option<i64> },
    /// Any other status; `code` is the body's `error` string when the body is JSON with one.
    Refused {
        status: u16,
        code: Option<String>,
        retry_after: bool,
        /// The start of a body that had no JSON `error` code, for the report.
        snippet: Option<String>,
    },
    /// No HTTP answer: `timeout`, `connect`, `body`, `request` or `other`.
    Transport(&'static str),
}

/// One request of the history; offsets are from the run's start.
#[derive(Debug, Clone)]
pub struct Record {
    /// Index into [`History::streams`].
    pub stream: usize,
    pub start: Duration,
    pub end: Duration,
    pub answer: Answer,
}

impl Record {
    pub fn ok(&self) -> bool {
        matches!(self.answer, Answer::Ok { .. })
    }

    pub fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// `200`, `503 lock_unavailable`, `timeout`: how the report names an answer.
    pub fn label(&self) -> String {
        match &self.answer {
            Answer::Ok { .. } => "200".into(),
            Answer::Refused {
                status,
                code: Some(code),
                ..
            } => format!("{status} {code}"),
            Answer::Refused { status, .. } => format!("{status} (no JSON code)"),
            Answer::Transport(kind) => (*kind).into(),
        }
    }
}

/// Everything a run recorded.
#[derive(Debug, Clone)]
pub struct History {
    pub streams: Vec<String>,
    pub records: Vec<Record>,
    /// The run's start on the system clock, in µs since the epoch (PostgreSQL's `created_at` is
    /// on the same clock: everything runs on this machine).
    pub epoch_us: i64,
    /// How long the run lasted (until the last request ended).
    pub length: Duration,
}

/// One second of a run, by the time requests ended.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    pub ok: u64,
    pub errors: u64,
    /// Errors by [`Record::label`] (`503 lock_unavailable`, `timeout`).
    pub codes: BTreeMap<String, u64>,
}

impl History {
    /// Per-second counts of answers, by end time, over the whole run.
    pub fn buckets(&self) -> Vec<Bucket> {
        let seconds = self.length.as_secs() as usize + 1;
        let mut buckets = vec![Bucket::default(); seconds];
        for record in &self.records {
            let index = (record.end.as_secs() as usize).min(seconds - 1);
            let bucket = &mut buckets[index];
            if record.ok() {
                bucket.ok += 1;
            } else {
                bucket.errors += 1;
                *bucket.codes.entry(record.label()).or_default() += 1;
            }
        }
        buckets
    }

    pub fn failed(&self) -> usize {
        self.records.iter().filter(|r| !r.ok()).count()
    }

    /// Failed share, 0..=1.
    pub fn failed_share(&self) -> f64 {
        self.failed() as f64 / self.records.len().max(1) as f64
    }

    /// `1234×200, 5×503 lock_unavailable, 2×timeout`, most frequent first.
    pub fn answers_text(&self, keep: impl Fn(&Record) -> bool) -> String {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for record in self.records.iter().filter(|r| keep(r)) {
            *counts.entry(record.label()).or_default() += 1;
        }
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if counts.is_empty() {
            return "no requests".into();
        }
        counts
            .iter()
            .map(|(label, n)| format!("{n}×{label}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The index of a stream by label.
    pub fn stream(&self, label: &str) -> Option<usize> {
        self.streams.iter().position(|s| s == label)
    }
}

/// A run in progress: clients looping until [`Driver::finish`].
#[derive(Debug)]
pub struct Driver {
    started: Instant,
    epoch_us: i64,
    stop: Arc<AtomicBool>,
    streams: Vec<String>,
    handles: Vec<JoinHandle<Vec<Record>>>,
}

impl Driver {
    /// Starts every stream's clients against `POST /product/{product}/deduct`.
    pub fn start(client: &reqwest::Client, product: i64, streams: &[Stream]) -> Driver {
        let started = Instant::now();
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (index, stream) in streams.iter().enumerate() {
            let url = format!("{}/product/{product}/deduct", stream.base);
            for _ in 0..stream.clients {
                handles.push(tokio::spawn(client_loop(
                    client.clone(),
                    url.clone(),
                    index,
                    stream.pace,
                    started,
                    Arc::clone(&stop),
                )));
            }
        }
        Driver {
            started,
            epoch_us,
            stop,
            streams: streams.iter().map(|s| s.label.clone()).collect(),
            handles,
        }
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sleeps until `offset` after the run's start (at once if that has passed).
    pub async fn sleep_until(&self, offset: Duration) {
        tokio::time::sleep_until((self.started + offset).into()).await;
    }

    /// Stops the clients (they finish the request in flight, within [`REQUEST_TIMEOUT`]) and
    /// returns the history, in start order.
    pub async fn finish(mut self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        let mut records = Vec::new();
        for handle in std::mem::take(&mut self.handles) {
            // A client task cannot panic short of a bug; its records are lost then, and the
            // checks see fewer requests.
            if let Ok(mut part) = handle.await {
                records.append(&mut part);
            }
        }
        records.sort_by_key(|r| r.start);
        let length = records.iter().map(|r| r.end).max().unwrap_or_default();
        History {
            streams: std::mem::take(&mut self.streams),
            records,
            epoch_us: self.epoch_us,
            length,
        }
    }
}

impl Drop for Driver {
    /// A drill that fails half-way (or is interrupted) drops its driver: its clients stop after
    /// the request in flight instead of loading the next drill.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn client_loop(
    client: reqwest::Client,
    url: String,
    stream: usize,
    pace: Duration,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Record> {
    let mut records = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_RUN {
            break;
        }
        let start = started.elapsed();
        let answer = deduct(&client, &url).await;
        records.push(Record {
            stream,
            start,
            end: started.elapsed(),
            answer,
        });
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    records
}

/// One `POST …/deduct` with `{"quantity":1}`, read to the end of its body.
pub async fn deduct(client: &reqwest::Client, url: &str) -> Answer {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(DEDUCT_BODY)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) => return Answer::Transport(transport_kind(&err)),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(err) => return Answer::Transport(transport_kind(&err)),
    };
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if (200..300).contains(&status) {
        return Answer::Ok {
            fence: json.as_ref().and_then(|j| j["fence"].as_i64()),
        };
    }
    let code = json
        .as_ref()
        .and_then(|j| j["error"].as_str())
        .map(String::from);
    let snippet = code.is_none().then(|| {
        String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>()
            .replace(['\n', '\r', '|'], " ")
    });
    Answer::Refused {
        status,
        code,
        retry_after,
        snippet,
    }
}

fn transport_kind(err: &reqwest::Error) -> &'static str {
    // The first few in full, for the log: the kind alone does not say what happened.
    static SHOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
        let mut cause = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            cause.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        eprintln!("transport error: {cause}");
    }
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else if err.is_request() {
        "request"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(end_ms: u64, answer: Answer) -> Record {
        Record {
            stream: 0,
            start: Duration::ZERO,
            end: Duration::from_millis(end_ms),
            answer,
        }
    }

    #[test]
    fn buckets_count_by_end_second() {
        let history = History {
            streams: vec!["lb".into()],
            records: vec![
                record(100, Answer::Ok { fence: Some(1) }),
                record(900, Answer::Transport("timeout")),
                record(2500, Answer::Ok { fence: Some(2) }),
            ],
            epoch_us: 0,
            length: Duration::from_millis(2500),
        };
        let buckets = history.buckets();
        assert_eq!(buckets.len(), 3);
        assert_eq!((buckets[0].ok, buckets[0].errors), (1, 1));
        assert_eq!(buckets[0].codes.get("timeout"), Some(&1));
        assert_eq!((buckets[1].ok, buckets[1].errors), (0, 0));
        assert_eq!((buckets[2].ok, buckets[2].errors), (1, 0));
        assert_eq!(history.answers_text(|_| true), "2×200, 1×timeout");
    }
}
