//! oha, driven and read: how a run is asked for ([`OhaRun`]), what it measured ([`Load`]), and
//! which of its transport errors are real.

use crate::env::Env;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What oha measured in one run.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub label: String,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors (connection failures, resets).
    pub errors: u64,
    /// Requests still in flight when a timed run ended (oha abandons them; not a failure).
    pub aborted_at_deadline: u64,
}

impl Load {
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    pub fn statuses_text(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{n}×{status}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!("{}×error", self.errors));
        }
        if self.aborted_at_deadline > 0 {
            parts.push(format!(
                "({} in flight at the deadline)",
                self.aborted_at_deadline
            ));
        }
        parts.join(", ")
    }
}

/// How oha is driven.
#[derive(Debug, Clone)]
pub struct OhaRun {
    pub label: String,
    pub url: String,
    pub body: String,
    pub concurrency: u32,
    /// A request count (`-n`) or, when `None`, a duration (`-z`).
    pub requests: Option<u32>,
    pub duration: Duration,
    /// `url` is a regex of URLs (`--rand-regex-url`), e.g. to spread over products.
    pub url_regex: bool,
    /// oha's per-request timeout (`-t`); a request past it counts as an error. `None`: oha
    /// waits forever.
    pub timeout: Option<Duration>,
}

impl OhaRun {
    /// `requests` POSTs of `body` at `concurrency`.
    pub fn count(label: &str, url: String, body: &str, concurrency: u32, requests: u32) -> OhaRun {
        OhaRun {
            label: label.to_string(),
            url,
            body: body.to_string(),
            concurrency,
            requests: Some(requests),
            duration: Duration::ZERO,
            url_regex: false,
            timeout: None,
        }
    }

    /// POSTs of `{}` at `concurrency` for `duration`.
    pub fn timed(label: &str, url: String, concurrency: u32, duration: Duration) -> OhaRun {
        OhaRun {
            requests: None,
            duration,
            ..OhaRun::count(label, url, "{}", concurrency, 0)
        }
    }

    /// Gives up on a request after `timeout` (it then counts as an error): for runs whose
    /// verdict is that every request is answered in time.
    pub fn timeout(mut self, timeout: Duration) -> OhaRun {
        self.timeout = Some(timeout);
        self
    }

    /// `url` is a regex of URLs (oha's `--rand-regex-url`, where `.` is literal).
    pub fn url_regex(mut self) -> OhaRun {
        self.url_regex = true;
        self
    }
}

/// Runs oha (JSON output) and parses what it measured.
pub fn oha(env: &Env, run: &OhaRun, out_dir: &Path) -> Result<Load, String> {
    let file = out_dir.join(format!("oha-{}.json", run.label));
    let mut command = Command::new(&env.oha);
    command
        .args(["--no-tui", "--output-format", "json", "-o"])
        .arg(&file)
        .args(["-c", &run.concurrency.to_string(), "-m", "POST"])
        .args(["-H", "content-type: application/json", "-d", &run.body]);
    match run.requests {
        Some(requests) => command.args(["-n", &requests.to_string()]),
        None => command.args(["-z", &format!("{}s", run.duration.as_secs())]),
    };
    if run.url_regex {
        command.arg("--rand-regex-url");
    }
    if let Some(timeout) = run.timeout {
        command.args(["-t", &format!("{}ms", timeout.as_millis())]);
    }
    command.arg(&run.url);
    let status = command
        .status()
        .map_err(|err| format!("cannot run oha ({}): {err}", env.oha.display()))?;
    if !status.success() {
        return Err(format!("oha failed ({status})"));
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).map_err(|err| err.to_string())?)
            .map_err(|err| format!("oha JSON: {err}"))?;
    let number = |value: &Value| value.as_f64().unwrap_or(0.0);
    let statuses: BTreeMap<u16, u64> = json["statusCodeDistribution"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(status, n)| Some((status.parse().ok()?, n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let errors_by_kind: BTreeMap<String, u64> = json["errorDistribution"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(kind, n)| Some((kind.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let (errors, aborted_at_deadline) = split_errors(&errors_by_kind, run);
    Ok(Load {
        label: run.label.clone(),
        requests: statuses.values().sum::<u64>() + errors,
        aborted_at_deadline,
        requests_per_sec: number(&json["summary"]["requestsPerSec"]),
        p50_ms: number(&json["latencyPercentiles"]["p50"]) * 1000.0,
        p99_ms: number(&json["latencyPercentiles"]["p99"]) * 1000.0,
        statuses,
        errors,
    })
}

/// Splits oha's transport errors into real ones and requests a timed run cut at its deadline.
///
/// When `-z` runs out, oha abandons the requests in flight (at most one per connection) and
/// labels most "aborted due to deadline", but a request whose connection it drops mid-response
/// can come out as "connection closed before message completed" instead. In a timed run such
/// errors count as cut at the deadline, as long as all cut requests together fit the
/// concurrency; beyond that, or in a counted run, they are real errors.
fn split_errors(errors_by_kind: &BTreeMap<String, u64>, run: &OhaRun) -> (u64, u64) {
    let count = |wanted: &dyn Fn(&str) -> bool| -> u64 {
        errors_by_kind
            .iter()
            .filter(|(kind, _)| wanted(kind))
            .map(|(_, n)| n)
            .sum()
    };
    let total = count(&|_| true);
    if run.requests.is_some() {
        return (total, 0);
    }
    let aborted = count(&|kind| kind.contains("deadline"));
    let closed_early = count(&|kind| kind.contains("connection closed before message completed"));
    let in_flight = u64::from(run.concurrency);
    let cut = if aborted + closed_early <= in_flight {
        aborted + closed_early
    } else {
        aborted
    };
    (total - cut, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(kinds: &[(&str, u64)]) -> BTreeMap<String, u64> {
        kinds.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    const ABORTED: &str = "aborted due to deadline";
    const CLOSED: &str = "connection closed before message completed";

    #[test]
    fn a_timed_run_counts_requests_cut_at_the_deadline_within_the_concurrency() {
        let run = OhaRun::timed("t", "http://127.0.0.1/".into(), 64, Duration::from_secs(1));
        assert_eq!(
            split_errors(&errors(&[(ABORTED, 63), (CLOSED, 1)]), &run),
            (0, 64)
        );
        // More than one per connection cannot all be deadline cuts.
        assert_eq!(
            split_errors(&errors(&[(ABORTED, 60), (CLOSED, 10)]), &run),
            (10, 60)
        );
        assert_eq!(
            split_errors(&errors(&[(ABORTED, 2), ("connection refused", 3)]), &run),
            (3, 2)
        );
    }

    #[test]
    fn a_counted_run_has_no_deadline_so_every_error_counts() {
        let run = OhaRun::count("c", "http://127.0.0.1/".into(), "{}", 64, 100);
        assert_eq!(split_errors(&errors(&[(CLOSED, 1)]), &run), (1, 0));
    }
}
