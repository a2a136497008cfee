//! Checkers over a drill's history and the ledger: what every drill must show, whatever its
//! fault. Each returns [`Check`]s for the verdict table.

use super::driver::{Answer, History, Record};
use crate::env::Env;
use crate::invariants;
use crate::verdict::{Check, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The fault window of a run, as offsets from its start.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Duration,
    /// When the fault was lifted (the process resumed, or restarted and answering).
    pub end: Duration,
}

/// A stable error code: lower-case snake case, as the service and the load balancer send them.
pub fn stable_code(code: &str) -> bool {
    code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// How close to an instance's SIGKILL a request must end for a closed connection to count as
/// lost with it.
const LOST_WITH_KILL: Duration = Duration::from_millis(500);

/// Every failure is an HTTP answer whose body is JSON with a stable `error` code, and every
/// 503 says when to come back (`Retry-After`). Timeouts, resets and HTML pages are violations.
///
/// One exception, reported apart: a request in flight on an instance at the instant it was
/// SIGKILLed (`killed_at`) whose connection was closed without an answer. HAProxy does that
/// on purpose to a client connection that already carried a request (haproxy/haproxy#3414:
/// it closes the client as the server closed it, so that the client may retry); the others get
/// `502 lb_bad_gateway`. Either way the outcome is unknown to the client.
pub fn error_shape(scenario: &str, history: &History, killed_at: Option<Duration>) -> Check {
    let mut transport: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lost_with_kill = 0;
    let mut no_code = 0;
    let mut example = None;
    let mut no_retry_after = 0;
    let mut refused = 0;
    for record in &history.records {
        match &record.answer {
            Answer::Ok { .. } => {}
            Answer::Transport("request")
                if killed_at.is_some_and(|killed| {
                    record.end >= killed && record.end <= killed + LOST_WITH_KILL
                }) =>
            {
                lost_with_kill += 1
            }
            Answer::Transport(kind) => *transport.entry(kind).or_default() += 1,
            Answer::Refused {
                status,
                code,
                retry_after,
                snippet,
            } => {
                refused += 1;
                if !code.as_deref().is_some_and(stable_code) {
                    no_code += 1;
                    if example.is_none() {
                        example = Some(format!(
                            "{status} {}",
                            code.clone().or_else(|| snippet.clone()).unwrap_or_default()
                        ));
                    }
                }
                if *status == 503 && !retry_after {
                    no_retry_after += 1;
                }
            }
        }
    }
    let mut problems = Vec::new();
    if no_code > 0 {
        problems.push(format!(
            "{no_code} without a JSON error code (e.g. {:?})",
            example.unwrap_or_default()
        ));
    }
    if no_retry_after > 0 {
        problems.push(format!("{no_retry_after} × 503 without Retry-After"));
    }
    for (kind, n) in &transport {
        problems.push(format!("{n} × {kind} (no HTTP answer)"));
    }
    let ok = problems.is_empty();
    Check::new(
        scenario,
        "every error is JSON with a stable code",
        ok,
        if ok {
            format!(
                "{refused} error answers, all JSON with a code; 503s carry Retry-After{}",
                if lost_with_kill > 0 {
                    format!("; {lost_with_kill} in flight on the killed instance lost their connection (outcome unknown)")
                } else {
                    String::new()
                }
            )
        } else {
            problems.join("; ")
        },
    )
}

/// Every 200 carried a fence, and that fence is in the ledger: a success the client saw was
/// written.
pub fn successes_in_ledger(scenario: &str, history: &History, ledger: &BTreeSet<i64>) -> Check {
    let mut total = 0;
    let mut without_fence = 0;
    let mut missing = 0;
    for record in &history.records {
        if let Answer::Ok { fence } = &record.answer {
            total += 1;
            match fence {
                None => without_fence += 1,
                Some(fence) if !ledger.contains(fence) => missing += 1,
                Some(_) => {}
            }
        }
    }
    Check::new(
        scenario,
        "every 200 is in the ledger (by its fence)",
        without_fence == 0 && missing == 0,
        format!(
            "{total} × 200, {} ledger rows; {missing} fences missing from the ledger, {without_fence} answers without a fence",
            ledger.len()
        ),
    )
}

/// From the lift on, the first second (by end time) with successes and no errors; `None` if
/// the run never had one. The second the fault was lifted in counts, from its start.
pub fn recovery(history: &History, window: Window) -> Option<Duration> {
    let buckets = history.buckets();
    let first = window.end.as_secs() as usize;
    buckets
        .iter()
        .enumerate()
        .skip(first)
        .find(|(_, b)| b.ok > 0 && b.errors == 0)
        .map(|(second, _)| Duration::from_secs(second as u64).saturating_sub(window.end))
}

pub fn recovery_check(scenario: &str, recovered: Option<Duration>) -> Check {
    Check::new(
        scenario,
        "recovers after the fault is lifted",
        recovered.is_some(),
        match recovered {
            Some(after) => format!(
                "first clean second (successes, no errors) {} after the lift",
                seconds(after)
            ),
            None => "no second without errors before the run ended".into(),
        },
    )
}

/// The failed share, as information (or as a check where a drill expects none).
pub fn failed_share(scenario: &str, history: &History, expect_none: bool) -> Check {
    let detail = format!(
        "{} of {} failed ({:.2}%): {}",
        history.failed(),
        history.records.len(),
        history.failed_share() * 100.0,
        history.answers_text(|r| !r.ok())
    );
    if expect_none {
        Check::new(scenario, "no failed request", history.failed() == 0, detail)
    } else {
        Check::note(scenario, "failed requests", detail)
    }
}

/// The invariants in PostgreSQL: stock = initial − Σ ledger, no oversell, fences strictly
/// increasing in ledger order, every 200 in the ledger. Overlapping holds are shown, not
/// failed: under faults a holder can outlive its lease, and the fence is what keeps its write
/// out (or, if it wrote first, keeps the next holder's stale read from landing).
pub fn invariants(
    env: &Env,
    scenario: &str,
    product: i64,
    initial: i64,
    history: &History,
) -> Result<Vec<Check>, String> {
    let mut checks = invariants::stock_checks(env, scenario, product, initial, true)?;
    for mut check in invariants::hold_checks(scenario, &invariants::holds(env, product)?) {
        if check.name == "no overlapping holds" {
            check.outcome = Outcome::Note;
            check.name = "overlapping holds (fenced; shown only)".into();
        }
        checks.push(check);
    }
    let ledger: BTreeSet<i64> = env
        .sql(&format!(
            "SELECT fence FROM stock_ledger WHERE product_id = {product} AND fence IS NOT NULL"
        ))?
        .iter()
        .filter_map(|row| row.first()?.parse().ok())
        .collect();
    checks.push(successes_in_ledger(scenario, history, &ledger));
    Ok(checks)
}

/// Ledger rows of `product` written between two offsets of a run that began at `epoch_us`
/// (database clock = this machine's clock).
pub fn ledger_rows_between(
    env: &Env,
    product: i64,
    epoch_us: i64,
    from: Duration,
    to: Duration,
) -> Result<i64, String> {
    let at = |offset: Duration| (epoch_us as f64 + offset.as_micros() as f64) / 1e6;
    env.sql_i64(&format!(
        "SELECT count(*) FROM stock_ledger WHERE product_id = {product} \
         AND created_at >= to_timestamp({:.6}) AND created_at < to_timestamp({:.6})",
        at(from),
        at(to)
    ))
}

/// The longest time without a write between two offsets of the run, from the ledger: how long
/// the lock sat unused. A hold abandoned by a client that hung up, if the service did not
/// release it, shows as a gap as long as the lock's ttl.
pub fn longest_ledger_gap(
    env: &Env,
    product: i64,
    epoch_us: i64,
    from: Duration,
    to: Duration,
) -> Result<Duration, String> {
    let from_us = epoch_us.saturating_add(i64::try_from(from.as_micros()).unwrap_or(i64::MAX));
    let to_us = epoch_us.saturating_add(i64::try_from(to.as_micros()).unwrap_or(i64::MAX));
    let times: Vec<i64> = env
        .sql(&format!(
            "SELECT (extract(epoch FROM created_at) * 1000000)::bigint FROM stock_ledger \
             WHERE product_id = {product} ORDER BY id"
        ))?
        .iter()
        .filter_map(|row| row.first()?.parse().ok())
        .filter(|t| (from_us..to_us).contains(t))
        .collect();
    let mut previous = from_us;
    let mut longest = 0;
    for t in times.iter().copied().chain([to_us]) {
        longest = longest.max(t - previous);
        previous = previous.max(t);
    }
    Ok(Duration::from_micros(u64::try_from(longest).unwrap_or(0)))
}

/// The first success that started at or after `from`, as its end offset.
pub fn first_success_after(history: &History, from: Duration) -> Option<Duration> {
    history
        .records
        .iter()
        .filter(|r| r.ok() && r.start >= from)
        .map(|r| r.end)
        .min()
}

/// p50 and max latency of some requests, as text.
pub fn latency_text(records: &[&Record]) -> String {
    if records.is_empty() {
        return "no requests".into();
    }
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency()).collect();
    latencies.sort();
    format!(
        "{} requests, p50 {:.0} ms, max {:.0} ms",
        latencies.len(),
        latencies[latencies.len() / 2].as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    )
}

/// `1.3 s`.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(records: Vec<(u64, u64, Answer)>) -> History {
        let records: Vec<Record> = records
            .into_iter()
            .map(|(start, end, answer)| Record {
                stream: 0,
                start: Duration::from_millis(start),
                end: Duration::from_millis(end),
                answer,
            })
            .collect();
        let length = records.iter().map(|r| r.end).max().unwrap_or_default();
        History {
            streams: vec!["lb".into()],
            records,
            epoch_us: 0,
            length,
        }
    }

    fn refused(status: u16, code: Option<&str>, retry_after: bool) -> Answer {
        Answer::Refused {
            status,
            code: code.map(String::from),
            retry_after,
            snippet: code.is_none().then(|| "<html>".into()),
        }
    }

    #[test]
    fn stable_codes_are_snake_case() {
        assert!(stable_code("lock_unavailable"));
        assert!(stable_code("lb_no_server"));
        assert!(!stable_code(""));
        assert!(!stable_code("Service Unavailable"));
        assert!(!stable_code("_x"));
    }

    #[test]
    fn error_shape_flags_html_timeouts_and_missing_retry_after() {
        let good = history(vec![
            (0, 10, Answer::Ok { fence: Some(1) }),
            (0, 10, refused(503, Some("lock_unavailable"), true)),
            (0, 10, refused(423, Some("lock_busy"), true)),
        ]);
        assert_eq!(error_shape("t", &good, None).outcome, Outcome::Pass);
        for bad in [
            refused(503, None, true),
            refused(503, Some("database_unavailable"), false),
            Answer::Transport("timeout"),
        ] {
            let history = history(vec![(0, 10, bad)]);
            assert_eq!(error_shape("t", &history, None).outcome, Outcome::Fail);
        }
    }

    #[test]
    fn successes_must_be_in_the_ledger() {
        let history = history(vec![
            (0, 10, Answer::Ok { fence: Some(5) }),
            (0, 10, Answer::Ok { fence: Some(6) }),
        ]);
        let ledger: BTreeSet<i64> = [5, 6, 7].into();
        assert_eq!(
            successes_in_ledger("t", &history, &ledger).outcome,
            Outcome::Pass
        );
        let ledger: BTreeSet<i64> = [5].into();
        assert_eq!(
            successes_in_ledger("t", &history, &ledger).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn recovery_is_the_first_clean_second_from_the_lift() {
        let history = history(vec![
            (0, 500, Answer::Ok { fence: Some(1) }),
            (1000, 2100, refused(503, Some("lock_unavailable"), true)),
            (2000, 3200, refused(503, Some("lock_unavailable"), true)),
            (3000, 3900, Answer::Ok { fence: Some(2) }),
            (4000, 4100, Answer::Ok { fence: Some(3) }),
        ]);
        let window = Window {
            start: Duration::from_millis(1000),
            end: Duration::from_millis(2500),
        };
        // Second 2 had an error, second 3 too (3.2 s), second 4 is clean.
        assert_eq!(
            recovery(&history, window),
            Some(Duration::from_millis(1500))
        );
        let never = Window {
            start: Duration::ZERO,
            end: Duration::from_millis(4500),
        };
        assert_eq!(recovery(&history, never), Some(Duration::ZERO));
        let too_late = Window {
            start: Duration::ZERO,
            end: Duration::from_millis(5000),
        };
        assert_eq!(recovery(&history, too_late), None);
    }
}
