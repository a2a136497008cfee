//! `strategies`: one hot product under each strategy (`none`, `lock`, `db-row`, `atomic`) at 64
//! concurrency with ample stock; `none` is expected to break the stock invariant.

use super::common::Outcome;
use super::common::{deduct_url, STRATEGY_SECONDS};
use crate::env::Env;
use crate::invariants;
use crate::oha::{oha, Load, OhaRun};
use crate::report::load_table;
use crate::svg;
use crate::verdict::Check;
use std::path::Path;
use std::time::Duration;

const STRATEGIES: [&str; 4] = ["none", "lock", "db-row", "atomic"];
/// Stock that never runs out.
const INITIAL: i64 = 100_000_000;

/// Each strategy in turn on a fresh product, then the charts.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    for strategy in STRATEGIES {
        let product = env.reset(INITIAL).await?;
        let load = oha(
            env,
            &OhaRun::timed(
                &format!("strategy-{strategy}"),
                deduct_url(env, product, strategy),
                64,
                Duration::from_secs(STRATEGY_SECONDS),
            ),
            dir,
        )?;
        outcome
            .checks
            .extend(verify(env, strategy, product, &load)?);
        outcome.loads.push(load);
    }
    outcome.charts = charts(&outcome.loads);
    outcome.markdown = format!(
        "{}\n![throughput](strategies-throughput.svg)\n\n![latency](strategies-latency.svg)\n",
        load_table(&outcome.loads)
    );
    Ok(outcome)
}

/// The stock invariant (expected broken under `none`), the holds under `lock`, and every
/// request answered 200.
fn verify(env: &Env, strategy: &str, product: i64, load: &Load) -> Result<Vec<Check>, String> {
    let name = format!("strategies/{strategy}");
    let mut checks = invariants::stock_checks(env, &name, product, INITIAL, strategy != "none")?;
    if strategy == "lock" {
        checks.extend(invariants::hold_checks(
            &name,
            &invariants::holds(env, product)?,
        ));
    }
    let non_200 = load.requests - load.count(200);
    checks.push(if strategy == "none" {
        Check::expected_broken(
            &name,
            "all requests succeed",
            non_200 == 0,
            load.statuses_text(),
        )
    } else {
        Check::new(
            &name,
            "all requests succeed",
            non_200 == 0,
            load.statuses_text(),
        )
    });
    Ok(checks)
}

/// Throughput and latency per strategy.
fn charts(loads: &[Load]) -> Vec<(String, String)> {
    let label = |load: &Load| load.label.trim_start_matches("strategy-").to_string();
    vec![
        (
            "strategies-throughput.svg".into(),
            svg::bars(
                "Deductions per second on one hot product (64 concurrent clients)",
                "req/s",
                &loads
                    .iter()
                    .map(|l| (label(l), l.requests_per_sec))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "strategies-latency.svg".into(),
            svg::paired_bars(
                "Latency per strategy",
                "ms",
                ["p50", "p99"],
                &loads
                    .iter()
                    .map(|l| (label(l), l.p50_ms, l.p99_ms))
                    .collect::<Vec<_>>(),
            ),
        ),
    ]
}
