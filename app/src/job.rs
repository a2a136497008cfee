//! The scheduled stock report: every instance tries each tick, exactly one runs it.

use crate::error::AppError;
use crate::schema::{job_runs, products};
use crate::state::{db_fence, AppState};
use diesel::dsl::{count_star, sql};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fencelock::{distributed_lock, LockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The job's name in `job_runs`.
pub const STOCK_REPORT: &str = "stock-report";

/// Runs the job at every tick of `interval` (ticks are aligned to wall-clock time, so all
/// instances agree on tick numbers) until the task is dropped.
pub async fn run_scheduler(state: AppState, interval: Duration) {
    let interval_ms = interval.as_millis().max(1) as u64;
    loop {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_millis() as u64)
            .unwrap_or(0);
        let tick = now_ms / interval_ms + 1;
        tokio::time::sleep(Duration::from_millis(tick * interval_ms - now_ms)).await;
        match stock_report(&state, tick as i64).await {
            Ok(()) => {}
            Err(AppError::Lock(LockError::Busy { .. })) => {
                tracing::debug!(tick, "stock report ran elsewhere this tick");
            }
            Err(error) => tracing::warn!(tick, %error, "stock report failed"),
        }
    }
}

/// One run. No waiting (the winner of the tick runs it), and the lock is kept for at least
/// `min_hold` so an instance whose timer fires late, after a fast winner released, still finds
/// it taken. The resource carries the tick, so a slow run never blocks the next tick.
#[distributed_lock(
    resource = "job:stock-report:{tick}",
    locker = state.locker,
    wait_ms = 0,
    ttl_ms = 30000,
    min_hold_ms = 30000,
    guard = lock
)]
pub async fn stock_report(state: &AppState, tick: i64) -> Result<(), AppError> {
    let (count, total_stock) = state
        .db
        .holding(lock, async |conn| {
            record_report(conn, state, tick, db_fence(lock)).await
        })
        .await?;
    tracing::info!(tick, products = count, total_stock, "stock report");
    Ok(())
}

/// Counts the products and their stock, and records the run with the holder's fence.
async fn record_report(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    tick: i64,
    fence: i64,
) -> Result<(i64, i64), AppError> {
    // SUM(bigint) is numeric in PostgreSQL; the report wants a plain number.
    let (count, total_stock): (i64, i64) = products::table
        .select((
            count_star(),
            sql::<BigInt>("COALESCE(SUM(stock), 0)::BIGINT"),
        ))
        .first(conn)
        .await?;
    diesel::insert_into(job_runs::table)
        .values((
            job_runs::job.eq(STOCK_REPORT),
            job_runs::tick.eq(tick),
            job_runs::instance.eq(&state.instance),
            job_runs::fence.eq(fence),
            job_runs::products.eq(count),
            job_runs::total_stock.eq(total_stock),
        ))
        .execute(conn)
        .await?;
    Ok((count, total_stock))
}
