//! Fencing for writes that have no existing row to compare-and-set on (a seat not yet
//! reserved, the next queue position): the holder claims its lock's resource in `lock_fences`
//! inside the write's transaction.

use crate::error::AppError;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Records `fence` as the latest for `resource`, or refuses with [`AppError::FencedOut`] when a
/// larger fence has written already (this holder's lock was taken over). Call it first in the
/// transaction: its row lock makes a concurrent holder wait until this one commits, so the
/// reads that follow the claim see every write of earlier holders. The same holder may claim
/// again (equal fences pass).
pub async fn claim(
    conn: &mut AsyncPgConnection,
    resource: &str,
    fence: i64,
) -> Result<(), AppError> {
    let claimed = diesel::sql_query(
        "INSERT INTO lock_fences (resource, fence) VALUES ($1, $2) \
         ON CONFLICT (resource) DO UPDATE SET fence = EXCLUDED.fence \
         WHERE lock_fences.fence <= EXCLUDED.fence",
    )
    .bind::<Text, _>(resource)
    .bind::<BigInt, _>(fence)
    .execute(conn)
    .await?;
    if claimed == 1 {
        Ok(())
    } else {
        Err(AppError::FencedOut { fence })
    }
}
