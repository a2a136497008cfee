//! `redis-kill`, `postgres-kill`, `app-kill`: components SIGKILLed and restarted.

use super::run::{
    kill, lb, names, newest_writer, DrillOutcome, Run, AFTER, FAULT, LB_CLIENTS, LOCK_TTL, WARM,
};
use crate::chaos::checks::{self, seconds};
use crate::chaos::cluster::Cluster;
use crate::verdict::Check;
use fencelock_testkit::Component;

/// Redis killed and restarted: the single node, or a majority of the quorum (one node of five
/// is a non-event, see `cargo xtask load quorum`). Restarted nodes come back empty.
pub async fn redis_kill(cluster: &Cluster) -> Result<DrillOutcome, String> {
    let nodes: Vec<Component> = if cluster.env.quorum {
        cluster
            .redis
            .iter()
            .take(cluster.redis.len() / 2 + 1)
            .copied()
            .collect()
    } else {
        cluster.redis.iter().take(1).copied().collect()
    };
    kill_and_restart(cluster, "redis-kill", nodes).await
}

/// PostgreSQL killed and restarted.
pub async fn postgres_kill(cluster: &Cluster) -> Result<DrillOutcome, String> {
    kill_and_restart(cluster, "postgres-kill", vec![Component::Postgres]).await
}

/// SIGKILL `victims` at +8 s, restart them 10 s later (`cargo xtask restart`, which returns once
/// each is up), then 10 s of load.
async fn kill_and_restart(
    cluster: &Cluster,
    name: &'static str,
    victims: Vec<Component>,
) -> Result<DrillOutcome, String> {
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGKILL {} (`cargo xtask kill`), \
         after {} restart (`cargo xtask restart`; the fault counts as lifted when that returns), then {} more load.",
        seconds(WARM), names(&victims), seconds(FAULT), seconds(AFTER)
    );
    let mut run = Run::start(cluster, &[lb(cluster)]).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let injected = kill_all(cluster, &mut run, &victims).await;
    if injected.is_ok() {
        run.driver.sleep_until(start + FAULT).await;
    }
    run.finish(cluster, name, timeline, start, injected, false)
        .await
}

async fn kill_all(cluster: &Cluster, run: &mut Run, victims: &[Component]) -> Result<(), String> {
    for &victim in victims {
        kill(cluster, victim).await?;
        run.note(format!("SIGKILL {victim}"));
    }
    Ok(())
}

/// An instance SIGKILLed and restarted: the newest ledger writer, so most likely with the lock
/// in hand; its lock must expire within the ttl.
pub async fn app_kill(cluster: &Cluster) -> Result<DrillOutcome, String> {
    let name = "app-kill";
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGKILL the newest ledger writer (likely the lock holder), \
         after {} restart it (`cargo xtask restart` waits until it is healthy; the fault counts as lifted then), then {} more load.",
        seconds(WARM), seconds(FAULT), seconds(AFTER)
    );
    let mut run = Run::start(cluster, &[lb(cluster)]).await?;
    run.driver.sleep_until(WARM).await;
    let victim = newest_writer(cluster, run.product)
        .await?
        .unwrap_or(cluster.apps[0].0);
    let start = run.driver.now();
    run.killed_at = Some(start);
    let injected = kill_all(cluster, &mut run, std::slice::from_ref(&victim)).await;
    if injected.is_ok() {
        run.driver.sleep_until(start + FAULT).await;
    }
    let mut drill = run
        .finish(cluster, name, timeline, start, injected, false)
        .await?;
    let next = checks::first_success_after(&drill.history, start);
    drill.checks.push(Check::note(
        name,
        "next success after the kill",
        match next {
            Some(end) => format!(
                "{} after killing {victim} (a lock it held expires within the ttl, {})",
                seconds(end.saturating_sub(start)),
                seconds(LOCK_TTL)
            ),
            None => format!("none after killing {victim}"),
        },
    ));
    Ok(drill)
}
