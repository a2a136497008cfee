//! `spread`: 100 products, requests spread over them, against one hot product: how the lock
//! scales when contention is spread.

use super::common::Outcome;
use super::common::{deduct_url, STRATEGY_SECONDS};
use crate::env::Env;
use crate::invariants;
use crate::oha::{oha, Load, OhaRun};
use crate::report::load_table;
use crate::svg;
use crate::verdict;
use crate::verdict::Check;
use std::path::Path;
use std::time::Duration;

const NAME: &str = "spread";
const PRODUCTS: usize = 100;
/// Stock that never runs out.
const INITIAL: i64 = 100_000_000;

/// Set-up, run (the hot product, then the spread), checks, outcome.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let products = create_products(env).await?;
    let hot_load = oha(
        env,
        &OhaRun::timed(
            "spread-hot",
            deduct_url(env, products[0], "lock"),
            64,
            Duration::from_secs(STRATEGY_SECONDS),
        ),
        dir,
    )?;
    let spread_load = oha(env, &spread_run(env, &products[1..]), dir)?;
    let checks = verify(env, &products, &hot_load, &spread_load)?;
    let loads = vec![hot_load, spread_load];
    let chart = svg::bars(
        "Lock strategy: one hot product vs 100 products (64 clients)",
        "req/s",
        &[
            ("1 hot product".into(), loads[0].requests_per_sec),
            ("100 products".into(), loads[1].requests_per_sec),
        ],
    );
    Ok(Outcome {
        markdown: format!("{}\n![spread](spread-throughput.svg)\n", load_table(&loads)),
        checks,
        loads,
        charts: vec![("spread-throughput.svg".into(), chart)],
    })
}

/// The hot product first (a reset leaves only it), then 99 more.
async fn create_products(env: &Env) -> Result<Vec<i64>, String> {
    let mut products = vec![env.reset(INITIAL).await?];
    for i in 1..PRODUCTS {
        products.push(env.create_product(&format!("spread {i}"), INITIAL).await?);
    }
    Ok(products)
}

/// A timed run whose every request picks one of `products` (oha's URL regex).
fn spread_run(env: &Env, products: &[i64]) -> OhaRun {
    let alternatives = products
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("|");
    OhaRun::timed(
        "spread-100",
        format!("{}/product/({alternatives})/deduct", env.lb_url),
        64,
        Duration::from_secs(STRATEGY_SECONDS),
    )
    .url_regex()
}

/// The stock invariant and the holds on every product, summed up, and every request a 200.
fn verify(
    env: &Env,
    products: &[i64],
    hot_load: &Load,
    spread_load: &Load,
) -> Result<Vec<Check>, String> {
    let failed = |checks: &[Check]| {
        checks
            .iter()
            .filter(|c| c.outcome == verdict::Outcome::Fail)
            .count()
    };
    let mut broken = 0;
    let mut out_of_order = 0;
    for &product in products {
        broken += failed(&invariants::stock_checks(
            env, NAME, product, INITIAL, true,
        )?);
        out_of_order += failed(&invariants::hold_checks(
            NAME,
            &invariants::holds(env, product)?,
        ));
    }
    Ok(vec![
        Check::new(
            NAME,
            "no lost update on any of 100 products",
            broken == 0,
            format!("{broken} product checks failed"),
        ),
        Check::new(
            NAME,
            "fences and holds in order on every product",
            out_of_order == 0,
            format!("{out_of_order} product checks failed"),
        ),
        Check::new(
            NAME,
            "all requests succeed",
            hot_load.count(200) == hot_load.requests
                && spread_load.count(200) == spread_load.requests,
            format!(
                "hot: {}; spread: {}",
                hot_load.statuses_text(),
                spread_load.statuses_text()
            ),
        ),
    ])
}
