//! What several scenarios use: what a scenario leaves ([`Outcome`]), the deduct URL, the exact-outcome check, the per-instance
//! share of sales, and oha on a thread of its own.

use crate::env::Env;
use crate::oha::{oha, Load, OhaRun};
use crate::verdict::Check;
use std::collections::BTreeMap;
use std::path::Path;
use std::thread::JoinHandle;

/// What a scenario leaves for the report.
#[derive(Debug, Default)]
pub struct Outcome {
    pub checks: Vec<Check>,
    pub loads: Vec<Load>,
    pub markdown: String,
    /// (file name, SVG) pairs.
    pub charts: Vec<(String, String)>,
}

/// How long each timed run (`strategies`, `spread`) lasts.
pub const STRATEGY_SECONDS: u64 = 8;

/// `POST /product/{product}/deduct?strategy=…` through the load balancer.
pub fn deduct_url(env: &Env, product: i64, strategy: &str) -> String {
    format!(
        "{}/product/{product}/deduct?strategy={strategy}",
        env.lb_url
    )
}

/// Successful deductions of `product` per instance, from the ledger.
pub fn share_per_instance(env: &Env, product: i64) -> Result<Vec<(String, f64)>, String> {
    Ok(env
        .sql(&format!("SELECT instance, count(*) FROM stock_ledger WHERE product_id = {product} GROUP BY instance ORDER BY instance"))?
        .into_iter()
        .map(|row| (row[0].clone(), row[1].parse().unwrap_or(0.0)))
        .collect())
}

/// The run answered exactly `expected` (status, count) pairs and had no transport error.
pub fn exact_statuses(scenario: &str, load: &Load, expected: &[(u16, u64)]) -> Check {
    let mut wanted: BTreeMap<u16, u64> = expected.iter().copied().collect();
    wanted.retain(|_, n| *n > 0);
    let ok = load.statuses == wanted && load.errors == 0;
    let expected_text = expected
        .iter()
        .map(|(s, n)| format!("{n}×{s}"))
        .collect::<Vec<_>>()
        .join(", ");
    Check::new(
        scenario,
        "exact outcome",
        ok,
        format!("got {}; expected {expected_text}", load.statuses_text()),
    )
}

/// Starts oha on a thread of its own (it blocks until done), so the caller can act meanwhile.
pub fn oha_in_background(env: &Env, run: &OhaRun, dir: &Path) -> JoinHandle<Result<Load, String>> {
    let (env, run, dir) = (env.clone(), run.clone(), dir.to_path_buf());
    std::thread::spawn(move || oha(&env, &run, &dir))
}

/// What a background oha measured.
pub fn join_oha(thread: JoinHandle<Result<Load, String>>) -> Result<Load, String> {
    thread.join().map_err(|_| "oha thread panicked")?
}
