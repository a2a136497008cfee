//! Invariants, checked from the database after each run: the stock against its ledger, the
//! lock holds in order, the balance ledger's sum.

use crate::env::Env;
use crate::verdict::Check;
use std::sync::atomic::{AtomicI64, Ordering};

/// Waits until no deduction has been written for half a second: requests that oha abandoned at
/// its deadline may still be finishing on the server. A ledger that has not grown since the last
/// settled look is settled at once (verifying 100 products costs one wait, not 100).
pub fn settle(env: &Env) -> Result<(), String> {
    static SETTLED_AT: AtomicI64 = AtomicI64::new(-1);
    let mut last = env.sql_i64("SELECT count(*) FROM stock_ledger")?;
    if last == SETTLED_AT.load(Ordering::Relaxed) {
        return Ok(());
    }
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let count = env.sql_i64("SELECT count(*) FROM stock_ledger")?;
        if count == last {
            SETTLED_AT.store(count, Ordering::Relaxed);
            return Ok(());
        }
        last = count;
    }
    Err("the ledger kept growing for 20 s after the run".into())
}

/// One lock hold as the ledger recorded it (µs since the epoch, database clock).
#[derive(Debug, Clone)]
pub struct Hold {
    pub instance: String,
    pub fence: i64,
    pub start_us: i64,
    pub end_us: i64,
}

/// The holds of a product under the `lock` strategy, in write order. One hold may have served
/// several requests queued behind it (one batch): its ledger rows share its fence, and the hold
/// runs from the earliest start they record to the last write.
pub fn holds(env: &Env, product_id: i64) -> Result<Vec<Hold>, String> {
    let rows = env.sql(&format!(
        "SELECT min(instance), fence, \
                min((extract(epoch FROM created_at) * 1000000)::bigint - hold_us), \
                max((extract(epoch FROM created_at) * 1000000)::bigint) \
         FROM stock_ledger WHERE product_id = {product_id} AND strategy = 'lock' \
         GROUP BY fence ORDER BY min(id)"
    ))?;
    rows.into_iter()
        .map(|row| {
            let number = |i: usize| {
                row.get(i)
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or("bad ledger row")
            };
            Ok(Hold {
                instance: row.first().cloned().unwrap_or_default(),
                fence: number(1)?,
                start_us: number(2)?,
                end_us: number(3)?,
            })
        })
        .collect::<Result<_, &str>>()
        .map_err(String::from)
}

/// The stock invariant: `stock == initial − Σ ledger`, and stock never negative.
pub fn stock_checks(
    env: &Env,
    scenario: &str,
    product_id: i64,
    initial: i64,
    expect_intact: bool,
) -> Result<Vec<Check>, String> {
    settle(env)?;
    // One statement, one snapshot: stock and ledger are read at the same instant.
    let rows = env.sql(&format!(
        "SELECT stock, (SELECT COALESCE(SUM(quantity), 0) FROM stock_ledger WHERE product_id = {product_id}) \
         FROM products WHERE id = {product_id}"
    ))?;
    let number = |i: usize| {
        rows.first()
            .and_then(|row| row.get(i))
            .and_then(|value| value.parse::<i64>().ok())
            .ok_or("no product row")
    };
    let (stock, sold) = (number(0)?, number(1)?);
    let intact = stock == initial - sold;
    let detail = format!(
        "initial {initial}, ledger {sold}, stock {stock} (expected {})",
        initial - sold
    );
    let oversold = sold > initial || stock < 0;
    let oversell_detail = format!("sold {sold} of {initial}, stock {stock}");
    Ok(if expect_intact {
        vec![
            Check::new(scenario, "no oversell", !oversold, oversell_detail),
            Check::new(
                scenario,
                "no lost update (stock = initial − Σ ledger)",
                intact,
                detail,
            ),
        ]
    } else {
        vec![
            Check::expected_broken(scenario, "no oversell", !oversold, oversell_detail),
            Check::expected_broken(
                scenario,
                "no lost update (stock = initial − Σ ledger)",
                intact,
                detail,
            ),
        ]
    })
}

/// Fences strictly increase in write order, and no two holds overlap in time.
pub fn hold_checks(scenario: &str, holds: &[Hold]) -> Vec<Check> {
    let decreasing = holds
        .windows(2)
        .filter(|pair| pair[1].fence <= pair[0].fence)
        .count();
    let mut by_start: Vec<&Hold> = holds.iter().collect();
    by_start.sort_by_key(|hold| hold.start_us);
    let overlaps = by_start
        .windows(2)
        .filter(|pair| pair[1].start_us < pair[0].end_us)
        .count();
    vec![
        Check::new(
            scenario,
            "fences strictly increasing",
            decreasing == 0,
            format!("{} holds, {decreasing} out of order", holds.len()),
        ),
        Check::new(
            scenario,
            "no overlapping holds",
            overlaps == 0,
            format!("{} holds, {overlaps} overlapping", holds.len()),
        ),
    ]
}

/// SQL that adds up `balance_ledger` rows into the balance they must equal: Σ charge +
/// Σ transfer_in − Σ use − Σ transfer_out (the table's CHECK allows only these kinds).
pub const LEDGER_SUM: &str = "COALESCE(SUM(CASE kind \
     WHEN 'charge' THEN amount WHEN 'transfer_in' THEN amount \
     WHEN 'use' THEN -amount WHEN 'transfer_out' THEN -amount END), 0)";
