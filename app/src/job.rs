//! The scheduled stock report: every instance tries each tick, exactly one runs it.

use crate::error::AppError;
use crate::fencing::db_fence;
use crate::schema::{job_runs, products};
use crate::state::AppState;
use diesel::dsl::{count_star, sql};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fencelock::{LockError, LockOptions};
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
        match stock_report(&state, tick as i64, interval / 2).await {
            Ok(Run::Ran) => {}
            Ok(Run::RanElsewhere) | Err(AppError::Lock(LockError::Busy { .. })) => {
                tracing::debug!(tick, "stock report ran elsewhere this tick");
            }
            Err(error) => tracing::warn!(tick, %error, "stock report failed"),
        }
    }
}

/// What became of a tick's run on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// This instance ran it.
    Ran,
    /// Another instance had recorded it.
    RanElsewhere,
}

/// One tick's run: every instance waits up to `wait` for the tick's lock, and the holder runs
/// the report unless a run of the tick is recorded already. A holder whose run fails gives the
/// lock back, and the next instance still waiting runs the tick. The record is what makes the
/// run once per tick, not the length of the hold: `job_runs` is unique on `(job, tick)`, so
/// two holders (a lock that expired under a slow run) cannot both record. The resource
/// carries the tick, so a slow run never blocks the next tick.
pub async fn stock_report(state: &AppState, tick: i64, wait: Duration) -> Result<Run, AppError> {
    let resource = format!("job:stock-report:{tick}");
    let options = LockOptions::new().ttl(Duration::from_secs(30)).wait(wait);
    let lock = state.locker.acquire(&resource, &options).await?;
    let ran = state
        .db
        .holding(&lock, async |conn| {
            let recorded: i64 = job_runs::table
                .filter(job_runs::job.eq(STOCK_REPORT))
                .filter(job_runs::tick.eq(tick))
                .count()
                .get_result(conn)
                .await?;
            if recorded > 0 {
                return Ok(None);
            }
            // A transaction so that the COMMIT's answer is awaited before the run counts.
            conn.transaction::<_, AppError, _>(async |conn| {
                record_report(conn, state, tick, db_fence(&lock)).await
            })
            .await
        })
        .await;
    // Given back at once (a failed run included), so a waiting instance can take the tick.
    let _ = lock.release().await;
    match ran? {
        Some((count, total_stock)) => {
            tracing::info!(tick, products = count, total_stock, "stock report");
            Ok(Run::Ran)
        }
        None => Ok(Run::RanElsewhere),
    }
}

/// Counts the products and their stock, and records the run with the holder's fence; `None`
/// if the tick was recorded meanwhile.
async fn record_report(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    tick: i64,
    fence: i64,
) -> Result<Option<(i64, i64)>, AppError> {
    // SUM(bigint) is numeric in PostgreSQL; the report wants a plain number.
    let (count, total_stock): (i64, i64) = products::table
        .select((
            count_star(),
            sql::<BigInt>("COALESCE(SUM(stock), 0)::BIGINT"),
        ))
        .first(conn)
        .await?;
    let recorded = diesel::insert_into(job_runs::table)
        .values((
            job_runs::job.eq(STOCK_REPORT),
            job_runs::tick.eq(tick),
            job_runs::instance.eq(&state.instance),
            job_runs::fence.eq(fence),
            job_runs::products.eq(count),
            job_runs::total_stock.eq(total_stock),
        ))
        .execute(conn)
        .await;
    match recorded {
        Ok(_) => Ok(Some((count, total_stock))),
        // Another holder recorded the tick between this one's check and its insert.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(None),
        Err(other) => Err(other.into()),
    }
}
