//! `node-hang` and `majority-hang` (quorum only): Redis nodes SIGSTOPped and resumed.

use super::run::{lb, names, pause, DrillOutcome, Run, AFTER, FAULT, LB_CLIENTS, LOCK_TTL, WARM};
use crate::chaos::checks::{self, seconds};
use crate::chaos::cluster::{blocking, Cluster};
use crate::chaos::driver::Answer;
use crate::verdict::Check;
use fencelock_testkit::Component;
use std::time::Duration;

/// Majority hung: from this long after the fault began, requests must be refused promptly and
/// nothing may be written.
const GRACE: Duration = Duration::from_secs(2);
/// "Promptly": well inside the lock's wait budget (20 s).
const PROMPT: Duration = LOCK_TTL;
/// The codes a request may be refused with while a majority is hung. The service's own answer;
/// a load balancer that takes every instance out of rotation answers `lb_no_server` instead,
/// which hides whether the service itself fails fast.
const MAJORITY_CODES: [&str; 1] = ["lock_unavailable"];

/// Quorum: one node of five SIGSTOPped for 10 s. The runtime suspects it after one node
/// timeout and skips it: no request may fail.
pub async fn node_hang(cluster: &Cluster) -> Result<DrillOutcome, String> {
    let name = "node-hang";
    let node = cluster.redis[0];
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGSTOP {node} (one of {}), SIGCONT {} later, then {} more load. \
         Expected: no failed request.",
        seconds(WARM), cluster.redis.len(), seconds(FAULT), seconds(AFTER)
    );
    hang(cluster, name, timeline, std::slice::from_ref(&node), true).await
}

/// Quorum: a majority SIGSTOPped for 10 s: requests are refused promptly with 503
/// `lock_unavailable` (not left to wait out the wait budget, not 423), nothing is written, and
/// the service recovers after SIGCONT.
pub async fn majority_hang(cluster: &Cluster) -> Result<DrillOutcome, String> {
    let name = "majority-hang";
    let nodes: Vec<Component> = cluster
        .redis
        .iter()
        .take(cluster.redis.len() / 2 + 1)
        .copied()
        .collect();
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGSTOP {} (a majority of {}), SIGCONT {} later, then {} more load. \
         Expected from {} into the fault on: every request refused within {} with 503 `lock_unavailable`, no 423, nothing written.",
        seconds(WARM), names(&nodes), cluster.redis.len(), seconds(FAULT), seconds(AFTER), seconds(GRACE), seconds(PROMPT)
    );
    let mut drill = hang(cluster, name, timeline, &nodes, false).await?;
    let (from, to) = (drill.window.start + GRACE, drill.window.end);
    let in_fault: Vec<_> = drill
        .history
        .records
        .iter()
        .filter(|r| r.start >= from && r.start < to && !r.ok())
        .collect();
    let prompt_refusals = in_fault
        .iter()
        .filter(|r| {
            matches!(&r.answer, Answer::Refused { status: 503, code: Some(code), .. } if MAJORITY_CODES.contains(&code.as_str()))
                && r.latency() <= PROMPT
        })
        .count();
    let busy = in_fault
        .iter()
        .filter(|r| matches!(&r.answer, Answer::Refused { status: 423, .. }))
        .count();
    drill.checks.push(Check::new(
        name,
        "majority hung: refused promptly with 503 lock_unavailable",
        !in_fault.is_empty() && prompt_refusals == in_fault.len(),
        format!(
            "{} of {} failures started from +{} were a 503 lock_unavailable within {} ({busy} × 423); answers: {}; {}",
            prompt_refusals,
            in_fault.len(),
            seconds(from),
            seconds(PROMPT),
            drill
                .history
                .answers_text(|r| r.start >= from && r.start < to),
            checks::latency_text(&in_fault)
        ),
    ));
    let (env, product, epoch_us) = (cluster.env.clone(), drill.product, drill.history.epoch_us);
    let written =
        blocking(move || checks::ledger_rows_between(&env, product, epoch_us, from, to)).await?;
    drill.checks.push(Check::new(
        name,
        "majority hung: nothing written",
        written == 0,
        format!(
            "{written} ledger rows between +{} and the SIGCONT",
            seconds(from)
        ),
    ));
    Ok(drill)
}

/// SIGSTOP `nodes` at +8 s, SIGCONT them 10 s later.
async fn hang(
    cluster: &Cluster,
    name: &'static str,
    timeline: String,
    nodes: &[Component],
    expect_no_failures: bool,
) -> Result<DrillOutcome, String> {
    let mut run = Run::start(cluster, &[lb(cluster)]).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let mut injected = Ok(());
    for &node in nodes {
        match pause(cluster, node).await {
            Ok(pid) => run.note(format!("SIGSTOP {node} (pid {pid})")),
            Err(err) => {
                injected = Err(err);
                break;
            }
        }
    }
    if injected.is_ok() {
        run.driver.sleep_until(start + FAULT).await;
    }
    run.finish(cluster, name, timeline, start, injected, expect_no_failures)
        .await
}
