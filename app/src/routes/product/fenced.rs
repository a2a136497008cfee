//! `strategy=lock`'s write: what a lock holder writes for one request or a batch of them —
//! one read, one fenced compare-and-set with a ledger row per sale, and each key's answer, in
//! one transaction. The SQL it runs is here with it.

use super::strategy::{out_of_stock, read_stock};
use crate::error::AppError;
use crate::idempotency::{self, IdempotencyKey, Stored};
use actix_web::http::StatusCode;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;

/// One request's part in [`fenced_deduct`]: its quantity and Idempotency-Key.
#[derive(Debug, Clone, Copy)]
pub struct Requested<'a> {
    /// How many units it deducts.
    pub quantity: i64,
    /// Its key, whose response is stored with the deduction.
    pub key: Option<&'a IdempotencyKey>,
}

/// The write a lock holder makes for one or more requests: read `(stock, fence)` once, go
/// through the requests in order — each that the remaining stock covers takes its quantity off
/// and is answered with the stock left after it; one it cannot cover is `out_of_stock` and
/// writes nothing — then one statement: the final stock with a compare-and-set
/// `WHERE fence = $read AND fence < $ours AND stock = $read_stock` that sets `fence = $ours`,
/// and a ledger row per success. Requests with a key store their response in the same
/// transaction. The answers are exactly those of serving the requests one by one.
///
/// `fence < ours` rejects a holder whose lock expired and was taken over once the newer holder
/// has written. `fence = read` closes the other half: a holder that read *before* a stale
/// holder's late write landed (that request was cancelled with its UPDATE queued on the row)
/// would otherwise write back a stale value. Either way nothing changes and the whole batch is
/// [`AppError::FencedOut`]. The stock is compared too: the strategies without a lock may be used
/// on the same product and do not touch the fence. Public so tests can play a stale holder.
pub async fn fenced_deduct(
    conn: &mut AsyncPgConnection,
    instance: &str,
    product_id: i64,
    requests: &[Requested<'_>],
    fence: i64,
    held_since: tokio::time::Instant,
) -> Result<Vec<Result<Stored, AppError>>, AppError> {
    // Always a transaction, even for one statement: its COMMIT's answer is awaited, so a commit
    // that fails is never answered as a sale (an autocommit statement's row arrives before
    // PostgreSQL has committed it).
    conn.transaction::<_, AppError, _>(async |conn| {
        sell(conn, instance, product_id, requests, fence, held_since).await
    })
    .await
}

/// How many times a lock holder reads the stock: the first read, and at most one re-read (under
/// the row lock) when a write without the lock moved the stock in between. A third is never
/// needed; the bound keeps the loop finite whatever the database does.
const MAX_STOCK_READS: usize = 3;

/// [`fenced_deduct`]'s work, inside the caller's transaction when keys are saved.
async fn sell(
    conn: &mut AsyncPgConnection,
    instance: &str,
    product_id: i64,
    requests: &[Requested<'_>],
    fence: i64,
    held_since: tokio::time::Instant,
) -> Result<Vec<Result<Stored, AppError>>, AppError> {
    // A key already answered (a retry whose first attempt committed after its client hung up)
    // or repeated within the batch is not sold again: `AlreadyApplied` makes the caller replay
    // the stored answer. Only that request; the rest of the batch goes on.
    let keys: Vec<&str> = requests
        .iter()
        .filter_map(|request| request.key.map(IdempotencyKey::key))
        .collect();
    let answered = idempotency::answered(conn, &keys).await?;
    let (mut stock, read_fence) = read_stock(conn, product_id, false).await?;
    if read_fence >= fence {
        // A newer holder has written: this hold is over, whatever the stock says.
        return Err(AppError::FencedOut { fence });
    }
    for _ in 0..MAX_STOCK_READS {
        let plan = Plan::new(product_id, requests, stock, fence, answered.clone());
        if plan.sold.is_empty() {
            return Ok(plan.answers);
        }
        let hold_us = i64::try_from(held_since.elapsed().as_micros()).unwrap_or(i64::MAX);
        let written: Written = diesel::sql_query(SELL_UNDER_FENCE)
            .bind::<BigInt, _>(product_id)
            .bind::<BigInt, _>(plan.remaining)
            .bind::<BigInt, _>(fence)
            .bind::<BigInt, _>(read_fence)
            .bind::<BigInt, _>(stock)
            .bind::<Text, _>(instance)
            .bind::<BigInt, _>(hold_us)
            .bind::<Array<BigInt>, _>(&plan.sold)
            .get_result(conn)
            .await?;
        if written.rows == 1 {
            for (request, answer) in requests.iter().zip(&plan.answers) {
                if let (Some(key), Ok(stored)) = (request.key, answer) {
                    idempotency::save(conn, key, stored).await?;
                }
            }
            tracing::info!(
                product = product_id,
                fence,
                sales = plan.sold.len(),
                remaining = plan.remaining,
                "stock deducted"
            );
            return Ok(plan.answers);
        }
        // Refused. A fence that moved means another holder wrote: this one's read may be
        // stale for a reason no re-read can see, and its lock is no longer the latest. The
        // stock alone moved: a write without the lock, which a re-read in this hold absorbs.
        // The re-read takes the row lock, so no other write lands before this one: one
        // re-read is all a batch ever pays.
        let (now_stock, now_fence) = read_stock(conn, product_id, true).await?;
        if now_fence != read_fence {
            return Err(AppError::FencedOut { fence });
        }
        stock = now_stock;
    }
    Err(AppError::Overloaded(format!(
        "the stock of product {product_id} kept changing under writes without the lock"
    )))
}

/// What serving `requests` one by one from `stock` answers and sells.
struct Plan {
    answers: Vec<Result<Stored, AppError>>,
    /// The quantities sold, in order (a ledger row each).
    sold: Vec<i64>,
    /// The stock left after them.
    remaining: i64,
}

impl Plan {
    fn new(
        product_id: i64,
        requests: &[Requested<'_>],
        stock: i64,
        fence: i64,
        mut answered: std::collections::HashSet<String>,
    ) -> Plan {
        let mut remaining = stock;
        let mut answers = Vec::with_capacity(requests.len());
        let mut sold = Vec::new();
        for request in requests {
            if let Some(key) = request.key {
                if !answered.insert(key.key().to_string()) {
                    answers.push(Err(AppError::AlreadyApplied));
                    continue;
                }
            }
            if remaining < request.quantity {
                answers.push(Err(out_of_stock(product_id, remaining, request.quantity)));
                continue;
            }
            remaining -= request.quantity;
            let body = json!({"id": product_id, "stock": remaining, "fence": fence});
            answers.push(Ok(Stored::new(StatusCode::OK, &body)));
            sold.push(request.quantity);
        }
        Plan {
            answers,
            sold,
            remaining,
        }
    }
}

/// A lock holder's sales in one statement: the final stock with the fenced compare-and-set,
/// and a ledger row per sale, in order (`$8` the quantities). Both or neither.
const SELL_UNDER_FENCE: &str = "\
    WITH updated AS (
        UPDATE products SET stock = $2, fence = $3
        WHERE id = $1 AND fence = $4 AND fence < $3 AND stock = $5
        RETURNING id
    ), ledger AS (
        INSERT INTO stock_ledger (product_id, quantity, strategy, instance, fence, hold_us)
        SELECT updated.id, sale.quantity, 'lock', $6, $3, $7
        FROM updated, unnest($8::bigint[]) WITH ORDINALITY AS sale(quantity, n)
        ORDER BY sale.n
    )
    SELECT count(*) AS rows FROM updated";

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    rows: i64,
}
