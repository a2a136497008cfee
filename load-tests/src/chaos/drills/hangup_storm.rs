//! `hangup-storm`: clients that send a deduction and hang up, while the load goes on.

use super::run::{lb, DrillOutcome, Run, AFTER, FAULT, LB_CLIENTS, LOCK_TTL, WARM};
use crate::chaos::checks::{self, seconds};
use crate::chaos::cluster::{blocking, socket_addr, Cluster};
use crate::chaos::driver::Stream;
use crate::chaos::storm::{self, Storm};
use crate::verdict::Check;
use std::time::Duration;

/// Hang-up clients per target (the load balancer and each instance).
const STORM_CLIENTS: usize = 8;
/// The probe's pause between requests during the storm.
const PROBE_PACE: Duration = Duration::from_millis(200);
/// A lock left behind by a hung-up request would stand for the ttl; anything under half of it
/// means the next waiter got the lock without waiting for expiry.
const GAP_LIMIT: Duration = Duration::from_millis(LOCK_TTL.as_millis() as u64 / 2);

/// Many clients send a deduction and hang up 30–100 ms later, through the load balancer and
/// straight at each instance, while the normal load and a paced probe go on.
pub async fn hangup_storm(cluster: &Cluster) -> Result<DrillOutcome, String> {
    let name = "hangup-storm";
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back, and a probe through it every {} ms. \
         From +{} for {}, {STORM_CLIENTS} storm clients per target (the load balancer and each instance) send a deduction and hang up after {}–{} ms \
         (half close, half reset); then {} more load.",
        PROBE_PACE.as_millis(), seconds(WARM), seconds(FAULT), storm::HANG_UP_MS.0, storm::HANG_UP_MS.1, seconds(AFTER)
    );
    let probe = Stream {
        label: "probe".into(),
        clients: 1,
        pace: PROBE_PACE,
        ..lb(cluster)
    };
    let mut targets = vec![("lb".to_string(), socket_addr(&cluster.env.lb_url)?)];
    for (app, base) in &cluster.apps {
        targets.push((app.to_string(), socket_addr(base)?));
    }
    let mut run = Run::start(cluster, &[lb(cluster), probe]).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let storm = Storm::start(&targets, STORM_CLIENTS, run.product, cluster.seed);
    run.note(format!(
        "storm: {} hang-up clients",
        STORM_CLIENTS * targets.len()
    ));
    run.driver.sleep_until(start + FAULT).await;
    let tallies = storm.stop().await;
    run.note("storm over".into());
    let mut drill = run
        .finish(cluster, name, timeline, start, Ok(()), true)
        .await?;
    let end = drill.window.end;
    let (env, product, epoch_us) = (cluster.env.clone(), drill.product, drill.history.epoch_us);
    let gap =
        blocking(move || checks::longest_ledger_gap(&env, product, epoch_us, start, end)).await?;
    drill.checks.push(Check::new(
        name,
        "the lock moves on at once after hang-ups",
        gap < GAP_LIMIT,
        format!(
            "longest time without a write during the storm: {:.0} ms (a lock left to expire stands for {})",
            gap.as_secs_f64() * 1000.0,
            seconds(LOCK_TTL)
        ),
    ));
    if let Some(probe) = drill.history.stream("probe") {
        let during: Vec<_> = drill
            .history
            .records
            .iter()
            .filter(|r| r.stream == probe && r.start >= start && r.start < end)
            .collect();
        let after: Vec<_> = drill
            .history
            .records
            .iter()
            .filter(|r| r.stream == probe && r.start >= end)
            .collect();
        drill.checks.push(Check::note(
            name,
            "probe: time to get the lock and answer",
            format!(
                "during the storm {}; after it {}",
                checks::latency_text(&during),
                checks::latency_text(&after)
            ),
        ));
    }
    drill.checks.push(Check::note(
        name,
        "storm connections",
        tallies
            .iter()
            .map(|(target, t)| {
                format!(
                    "{target}: {} hung up, {} answered first, {} failed",
                    t.hung_up, t.answered, t.failed
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    ));
    Ok(drill)
}
