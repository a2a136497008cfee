//! What every drill shares: the timings of a run, the clients through the load balancer, a
//! run in progress ([`Run`]: start the clients, note what the nemesis did, lift the fault and
//! run the checks every drill shares) and what it leaves ([`DrillOutcome`]), and the nemesis
//! reached from async code.

use crate::chaos::checks::{self, Window};
use crate::chaos::cluster::{blocking, Cluster};
use crate::chaos::driver::{Driver, History, Stream};
use crate::verdict::Check;
use fencelock_testkit::Component;
use std::time::Duration;

/// The deduct handler's lock TTL (no auto-extend), from the service's configuration: the
/// handlers' `#[distributed_lock(ttl_ms = LOCK_TTL_MS)]` name the same constant.
pub const LOCK_TTL: Duration = Duration::from_millis(fencelock_app::configuration::LOCK_TTL_MS);
/// Load before the fault.
pub const WARM: Duration = Duration::from_secs(8);
/// How long a fault stays in force (kills: until the restart begins).
pub const FAULT: Duration = Duration::from_secs(10);
/// Load after the fault is lifted.
pub const AFTER: Duration = Duration::from_secs(10);
/// Clients through the load balancer, back to back.
pub const LB_CLIENTS: usize = 16;
/// Stock large enough never to run out.
pub const INITIAL: i64 = 100_000_000;

/// What a drill leaves for the verdict and the report.
#[derive(Debug)]
pub struct DrillOutcome {
    pub name: &'static str,
    /// The product the drill deducted from.
    pub product: i64,
    /// What happened when, in one paragraph.
    pub timeline: String,
    pub history: History,
    pub window: Window,
    pub recovery: Option<Duration>,
    pub checks: Vec<Check>,
    /// What the nemesis did, as it happened.
    pub notes: Vec<String>,
}

/// A run in progress: the product it deducts from and its clients.
#[derive(Debug)]
pub struct Run {
    pub product: i64,
    pub driver: Driver,
    notes: Vec<String>,
    /// When an instance was SIGKILLed (see [`checks::error_shape`]).
    pub killed_at: Option<Duration>,
}

impl Run {
    /// Resets to one product and starts the clients.
    pub async fn start(cluster: &Cluster, streams: &[Stream]) -> Result<Run, String> {
        let product = cluster.env.reset(INITIAL).await?;
        Ok(Run {
            product,
            killed_at: None,
            driver: Driver::start(&cluster.client, product, streams),
            notes: Vec::new(),
        })
    }

    pub fn note(&mut self, text: String) {
        println!("  {:>5.1} s  {text}", self.driver.now().as_secs_f64());
        self.notes.push(text);
    }

    /// Lifts every fault still in force (always, whatever `injected` says), keeps the load
    /// [`AFTER`] more, stops it and runs the checks every drill shares.
    pub async fn finish(
        mut self,
        cluster: &Cluster,
        name: &'static str,
        timeline: String,
        start: Duration,
        injected: Result<(), String>,
        expect_no_failures: bool,
    ) -> Result<DrillOutcome, String> {
        let faults = cluster.faults.clone();
        let pending = faults.any_pending();
        // The fault's end is the moment before it is lifted: lifting runs on a blocking thread
        // and takes milliseconds, and a service that recovers within them would otherwise have
        // its first writes after the lift counted as written during the fault.
        let end = self.driver.now();
        let lifted = blocking(move || faults.lift_all()).await;
        if pending {
            self.note(match &lifted {
                Ok(()) => "fault lifted".into(),
                Err(err) => format!("lifting the fault failed: {err}"),
            });
        }
        if injected.is_ok() && lifted.is_ok() {
            self.driver.sleep_until(end + AFTER).await;
        }
        let history = self.driver.finish().await;
        injected?;
        lifted?;
        let window = Window { start, end };
        let (env, product, recorded) = (cluster.env.clone(), self.product, history.clone());
        let mut checks =
            blocking(move || checks::invariants(&env, name, product, INITIAL, &recorded)).await?;
        checks.push(checks::error_shape(name, &history, self.killed_at));
        let recovery = checks::recovery(&history, window);
        checks.push(checks::recovery_check(name, recovery));
        checks.push(checks::failed_share(name, &history, expect_no_failures));
        Ok(DrillOutcome {
            name,
            product,
            timeline,
            history,
            window,
            recovery,
            checks,
            notes: self.notes,
        })
    }
}

/// The clients through the load balancer, back to back.
pub fn lb(cluster: &Cluster) -> Stream {
    Stream {
        label: "lb".into(),
        base: cluster.env.lb_url.trim_end_matches('/').to_string(),
        clients: LB_CLIENTS,
        pace: Duration::ZERO,
    }
}

/// The instance that wrote the product's newest ledger row: under load the lock stays on one
/// instance for a streak of local handoffs, so this is likely the holder right now.
pub async fn newest_writer(cluster: &Cluster, product: i64) -> Result<Option<Component>, String> {
    let env = cluster.env.clone();
    let rows = blocking(move || {
        env.sql(&format!(
            "SELECT instance FROM stock_ledger WHERE product_id = {product} ORDER BY id DESC LIMIT 1"
        ))
    })
    .await?;
    Ok(rows
        .first()
        .and_then(|row| row.first()?.parse::<Component>().ok())
        .filter(|writer| cluster.apps.iter().any(|(app, _)| app == writer)))
}

/// Ledger rows of `product` so far.
pub async fn ledger_count(cluster: &Cluster, product: i64) -> Result<i64, String> {
    let env = cluster.env.clone();
    blocking(move || {
        env.sql_i64(&format!(
            "SELECT count(*) FROM stock_ledger WHERE product_id = {product}"
        ))
    })
    .await
}

/// [`Faults::pause`](crate::chaos::faults::Faults::pause) off the runtime.
pub async fn pause(cluster: &Cluster, name: Component) -> Result<u32, String> {
    let faults = cluster.faults.clone();
    blocking(move || faults.pause(name)).await
}

/// [`Faults::resume`](crate::chaos::faults::Faults::resume) off the runtime.
pub async fn resume(cluster: &Cluster, name: Component) -> Result<(), String> {
    let faults = cluster.faults.clone();
    blocking(move || faults.resume(name)).await
}

/// [`Faults::kill`](crate::chaos::faults::Faults::kill) off the runtime.
pub async fn kill(cluster: &Cluster, name: Component) -> Result<(), String> {
    let faults = cluster.faults.clone();
    blocking(move || faults.kill(name)).await
}

/// `redis1, redis2, redis3`: components as the timelines name them.
pub fn names(components: &[Component]) -> String {
    components
        .iter()
        .map(Component::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
