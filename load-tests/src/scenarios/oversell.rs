//! `oversell`: 1000 in stock, 3000 buyers at 64 concurrency: exactly 1000 sales, stock 0,
//! never below.

use super::common::Outcome;
use super::common::{deduct_url, exact_statuses};
use crate::env::Env;
use crate::invariants;
use crate::oha::{oha, Load, OhaRun};
use crate::report::load_table;
use crate::verdict::Check;
use std::path::Path;

const NAME: &str = "oversell";
const STOCK: i64 = 1000;

/// Set-up, run, checks, outcome.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let product = env.reset(STOCK).await?;
    let load = oha(
        env,
        &OhaRun::count(NAME, deduct_url(env, product, "lock"), "{}", 64, 3000),
        dir,
    )?;
    let checks = verify(env, product, &load)?;
    Ok(Outcome {
        markdown: load_table(std::slice::from_ref(&load)),
        checks,
        loads: vec![load],
        charts: Vec::new(),
    })
}

/// Exactly 1000 sales and 2000 refusals, the stock invariant, and the holds in order.
fn verify(env: &Env, product: i64, load: &Load) -> Result<Vec<Check>, String> {
    let mut checks = vec![exact_statuses(NAME, load, &[(200, 1000), (409, 2000)])];
    checks.extend(invariants::stock_checks(env, NAME, product, STOCK, true)?);
    checks.extend(invariants::hold_checks(
        NAME,
        &invariants::holds(env, product)?,
    ));
    Ok(checks)
}
