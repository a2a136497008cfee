//! `classic`: the original demo — 1000 in stock, 1050 buyers at 350 concurrency — with charts
//! of who held the lock when. `quorum` runs it again with a Redis node killed mid-run.

use super::common::Outcome;
use super::common::{deduct_url, exact_statuses, join_oha, oha_in_background, share_per_instance};
use crate::env::Env;
use crate::invariants;
use crate::invariants::Hold;
use crate::oha::{oha, Load, OhaRun};
use crate::report::load_table;
use crate::svg;
use crate::verdict::Check;
use fencelock_testkit::Component;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const STOCK: i64 = 1000;
const BUYERS: u32 = 1050;
const CONCURRENCY: u32 = 350;
/// How long after the load starts the fault (if any) is injected.
const FAULT_AFTER: Duration = Duration::from_millis(150);

/// One instance's lock holds: (name, [(start µs, end µs)]).
type Lane = (String, Vec<(i64, i64)>);

/// The original demo.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    run_with_fault(env, dir, "classic", None).await
}

/// `classic` under `name`, with `fault` (if any) SIGKILLed shortly after the load starts.
pub async fn run_with_fault(
    env: &Env,
    dir: &Path,
    name: &str,
    fault: Option<Component>,
) -> Result<Outcome, String> {
    let product = env.reset(STOCK).await?;
    let load = deduct(env, dir, name, product, fault).await?;
    let (checks, holds) = verify(env, name, product, &load)?;
    outcome(env, name, product, load, checks, &holds)
}

/// 1050 deductions at 350 concurrency, with the fault injected [`FAULT_AFTER`] into them.
async fn deduct(
    env: &Env,
    dir: &Path,
    name: &str,
    product: i64,
    fault: Option<Component>,
) -> Result<Load, String> {
    let run = OhaRun::count(
        name,
        deduct_url(env, product, "lock"),
        "{}",
        CONCURRENCY,
        BUYERS,
    );
    let Some(component) = fault else {
        return oha(env, &run, dir);
    };
    let background = oha_in_background(env, &run, dir);
    tokio::time::sleep(FAULT_AFTER).await;
    env.xtask("kill", component)?;
    join_oha(background)
}

/// Exactly 1000 sales and 50 refusals, the stock invariant, and the holds in order.
fn verify(
    env: &Env,
    name: &str,
    product: i64,
    load: &Load,
) -> Result<(Vec<Check>, Vec<Hold>), String> {
    let mut checks = vec![exact_statuses(name, load, &[(200, 1000), (409, 50)])];
    checks.extend(invariants::stock_checks(env, name, product, STOCK, true)?);
    let holds = invariants::holds(env, product)?;
    checks.extend(invariants::hold_checks(name, &holds));
    Ok((checks, holds))
}

/// The load table, the share per instance, and three charts: the share, every hold by
/// instance, and 40 ms of holds around a move between instances.
fn outcome(
    env: &Env,
    name: &str,
    product: i64,
    load: Load,
    checks: Vec<Check>,
    holds: &[Hold],
) -> Result<Outcome, String> {
    let share = share_per_instance(env, product)?;
    let lanes = lanes(holds);
    let zoomed = around_first_move(holds, &lanes);
    let charts = vec![
        (
            format!("{name}-per-instance.svg"),
            svg::bars(
                &format!("{name}: successful deductions per instance"),
                "",
                &share,
            ),
        ),
        (
            format!("{name}-timeline.svg"),
            svg::timeline(
                &format!("{name}: lock holds of product:{product} by instance"),
                &lanes,
            ),
        ),
        (
            format!("{name}-timeline-40ms.svg"),
            svg::timeline(
                &format!("{name}: 40 ms around a move between instances"),
                &zoomed,
            ),
        ),
    ];
    let markdown = format!(
        "{}\nSuccessful deductions per instance: {}.\n\n![per instance]({name}-per-instance.svg)\n\n![timeline]({name}-timeline.svg)\n\n![timeline zoomed]({name}-timeline-40ms.svg)\n",
        load_table(std::slice::from_ref(&load)),
        share.iter().map(|(i, n)| format!("{i} {n:.0}")).collect::<Vec<_>>().join(", ")
    );
    Ok(Outcome {
        checks,
        loads: vec![load],
        markdown,
        charts,
    })
}

/// The holds by instance, in instance order.
fn lanes(holds: &[Hold]) -> Vec<Lane> {
    let mut lanes: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for hold in holds {
        lanes
            .entry(hold.instance.clone())
            .or_default()
            .push((hold.start_us, hold.end_us));
    }
    lanes.into_iter().collect()
}

/// 40 ms around the first time the lock moved between instances, where single holds and the
/// gaps between them are visible.
fn around_first_move(holds: &[Hold], lanes: &[Lane]) -> Vec<Lane> {
    let switch = holds
        .windows(2)
        .find(|pair| pair[0].instance != pair[1].instance)
        .map_or_else(
            || holds.first().map_or(0, |h| h.start_us),
            |pair| pair[1].start_us,
        );
    let (from, to) = (switch - 20_000, switch + 20_000);
    lanes
        .iter()
        .map(|(name, bars)| {
            (
                name.clone(),
                bars.iter()
                    .copied()
                    .filter(|b| b.0 >= from && b.1 <= to)
                    .collect(),
            )
        })
        .collect()
}
