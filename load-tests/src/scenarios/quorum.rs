//! `quorum`: `classic` against the 5-node quorum with one node killed mid-run (no errors), then
//! a majority killed (503s, nothing written); the nodes are restarted afterwards.

use super::classic;
use super::common::deduct_url;
use super::common::Outcome;
use crate::env::Env;
use crate::oha::{oha, Load, OhaRun};
use crate::report::load_table;
use crate::verdict::Check;
use fencelock_testkit::Component;
use std::path::Path;

/// Killed one at a time: the first during `classic`, the next two make a majority.
const NODES: [Component; 3] = [
    Component::Redis(1),
    Component::Redis(2),
    Component::Redis(3),
];
const STOCK: i64 = 100;

/// One node down, then three; then every killed node restarted.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    if !env.quorum {
        return Err("the quorum scenario needs the 5-node cluster: `cargo xtask down && cargo xtask up --quorum`".into());
    }
    let mut outcome = classic::run_with_fault(env, dir, "quorum-1-down", Some(NODES[0])).await?;
    for node in &NODES[1..] {
        env.xtask("kill", *node)?;
    }
    let product = env.reset(STOCK).await?;
    let load = oha(
        env,
        &OhaRun::count(
            "quorum-majority-down",
            deduct_url(env, product, "lock"),
            "{}",
            10,
            100,
        ),
        dir,
    );
    // Restarted whatever the run did, before its result is looked at.
    let restarted: Result<Vec<()>, String> = NODES
        .into_iter()
        .map(|node| env.xtask("restart", node))
        .collect();
    let load = load?;
    restarted?;
    outcome.checks.extend(verify(env, product, &load)?);
    outcome.markdown.push_str(&format!(
        "\nWith 3 of 5 nodes down:\n\n{}",
        load_table(std::slice::from_ref(&load))
    ));
    outcome.loads.push(load);
    Ok(outcome)
}

/// With a majority down, every request is refused and nothing is written.
fn verify(env: &Env, product: i64, load: &Load) -> Result<Vec<Check>, String> {
    let written = env.sql_i64(&format!(
        "SELECT count(*) FROM stock_ledger WHERE product_id = {product}"
    ))?;
    let stock = env.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}"))?;
    Ok(vec![
        Check::new(
            "quorum-3-down",
            "majority down: every request refused (503)",
            load.count(503) == load.requests,
            load.statuses_text(),
        ),
        Check::new(
            "quorum-3-down",
            "majority down: nothing written",
            written == 0 && stock == STOCK,
            format!("{written} ledger rows, stock {stock} of 100"),
        ),
    ])
}
