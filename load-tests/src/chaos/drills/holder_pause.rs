//! `holder-pause`: the lock holder SIGSTOPped past 2 × ttl.

use super::run::{
    lb, ledger_count, newest_writer, pause, resume, DrillOutcome, Run, AFTER, LB_CLIENTS, LOCK_TTL,
    WARM,
};
use crate::chaos::checks::{self, seconds};
use crate::chaos::cluster::Cluster;
use crate::chaos::driver::Stream;
use crate::verdict::Check;
use fencelock_testkit::Component;
use std::time::Duration;

/// The lock holder's pause: past 2 × ttl.
const PAUSE: Duration = Duration::from_millis(2 * LOCK_TTL.as_millis() as u64 + 1000);
/// Clients straight at each instance (holder pause), so that the lock's other contenders keep
/// asking while every client of the load balancer may be stuck on the paused instance.
const DIRECT_CLIENTS: usize = 2;
/// Holder pause: how long after the SIGSTOP in-flight writes may still land, then how long no
/// other instance may write for the paused one to count as the holder.
const IN_FLIGHT: Duration = Duration::from_millis(300);
const QUIET: Duration = Duration::from_millis(800);
const HOLDER_ATTEMPTS: usize = 12;

/// The lock holder paused past 2 × ttl: its lock must expire and pass to another instance long
/// before it resumes, and its late write must be fenced out.
pub async fn holder_pause(cluster: &Cluster) -> Result<DrillOutcome, String> {
    let name = "holder-pause";
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer and {DIRECT_CLIENTS} straight at each instance deduct back to back. \
         At +{} SIGSTOP the instance holding `product:{{id}}` (the newest ledger writer, confirmed when no other instance writes for {} after the pause; up to {HOLDER_ATTEMPTS} tries), \
         SIGCONT it {} later (> 2 × ttl {}), then {} more load.",
        seconds(WARM), seconds(QUIET), seconds(PAUSE), seconds(LOCK_TTL), seconds(AFTER)
    );
    let mut streams = vec![lb(cluster)];
    streams.extend(cluster.apps.iter().map(|(app, base)| Stream {
        label: app.to_string(),
        base: base.clone(),
        clients: DIRECT_CLIENTS,
        pace: Duration::ZERO,
    }));
    let mut run = Run::start(cluster, &streams).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let injected = pause_holder(cluster, &mut run).await;
    if let Ok(paused) = &injected {
        run.driver.sleep_until(paused.at + PAUSE).await;
    }
    let outcome = injected.as_ref().map(|_| ()).map_err(Clone::clone);
    let mut drill = run
        .finish(cluster, name, timeline, start, outcome, false)
        .await?;
    let paused = injected?;
    let resumed = drill.window.end;
    drill.checks.push(Check::new(
        name,
        "drill: the paused instance held the lock",
        paused.confirmed,
        format!(
            "{} paused at +{}: {}",
            paused.name,
            seconds(paused.at),
            if paused.confirmed {
                format!("no other instance wrote for {} after", seconds(QUIET))
            } else {
                format!("others kept writing on all {HOLDER_ATTEMPTS} tries")
            }
        ),
    ));
    let takeover = checks::first_success_after(&drill.history, paused.at + IN_FLIGHT)
        .map(|end| end.saturating_sub(paused.at));
    drill.checks.push(Check::new(
        name,
        "another instance takes the lock before the holder resumes",
        takeover.is_some_and(|t| paused.at + t < resumed),
        match takeover {
            Some(t) => format!(
                "first success {} after the SIGSTOP (ttl {}); the holder resumed after {}",
                seconds(t),
                seconds(LOCK_TTL),
                seconds(resumed.saturating_sub(paused.at))
            ),
            None => "no success after the SIGSTOP".into(),
        },
    ));
    // In flight at the SIGCONT after waiting over a second: mostly the requests that sat on the
    // paused instance, the holder's own among them (fenced out: 409 lock_lost).
    let across = drill.history.answers_text(|r| {
        r.start < resumed && r.end >= resumed && r.latency() > Duration::from_secs(1)
    });
    drill.checks.push(Check::note(
        name,
        "requests stuck over the pause, answered after SIGCONT",
        across,
    ));
    Ok(drill)
}

#[derive(Debug)]
struct Paused {
    name: Component,
    at: Duration,
    confirmed: bool,
}

/// SIGSTOPs the newest writer; it holds the lock if nobody else writes for [`QUIET`]. If
/// others do, resumes it and tries again; the last try stays paused either way.
async fn pause_holder(cluster: &Cluster, run: &mut Run) -> Result<Paused, String> {
    for attempt in 1..=HOLDER_ATTEMPTS {
        let holder = newest_writer(cluster, run.product)
            .await?
            .unwrap_or(cluster.apps[0].0);
        let pid = pause(cluster, holder).await?;
        let at = run.driver.now();
        run.note(format!("SIGSTOP {holder} (pid {pid}), try {attempt}"));
        tokio::time::sleep(IN_FLIGHT).await;
        let before = ledger_count(cluster, run.product).await?;
        tokio::time::sleep(QUIET).await;
        let written = ledger_count(cluster, run.product).await? - before;
        if written == 0 {
            run.note(format!(
                "no write for {}: {holder} holds the lock",
                seconds(QUIET)
            ));
            return Ok(Paused {
                name: holder,
                at,
                confirmed: true,
            });
        }
        if attempt == HOLDER_ATTEMPTS {
            run.note(format!(
                "{written} rows written by others: {holder} is not the holder; keeping it paused anyway"
            ));
            return Ok(Paused {
                name: holder,
                at,
                confirmed: false,
            });
        }
        resume(cluster, holder).await?;
        run.note(format!(
            "{written} rows written by others: {holder} is not the holder; SIGCONT, try again"
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("no attempt to pause the holder".into())
}
