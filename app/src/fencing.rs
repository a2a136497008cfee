//! Where a held lock meets PostgreSQL. Everything a lock holder's write needs from its lock
//! is here, so that `db` knows nothing of guards and the routes nothing of how a lock becomes a
//! database deadline or a fence:
//! - [`Database::holding`]: a write whose connection must be had while the lock is valid
//!   ([`Held`] is what it asks of one guard or several);
//! - [`db_fence`], [`db_fence_of`]: a guard's fence as the `BIGINT` every fenced write compares;
//! - [`claim`]: the fence of a write that has no existing row to compare-and-set on (a seat not
//!   yet reserved, the next queue position): the holder claims its lock's resource in
//!   `lock_fences` inside the write's transaction.

use crate::db::{Database, QUERY_BUDGET};
use crate::error::AppError;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Instant;

impl Database {
    /// [`Database::write`] for a lock holder: the connection must be had within the budget and
    /// while the lock is valid (for several locks, the first to run out). Not getting one in
    /// time with a lock gone is the lock's loss (`409 lock_lost`), not a database outage: most
    /// likely this process stood still (paused, starved) rather than the database. The work
    /// itself is not cut when the lock runs out: its writes are fenced, so a late one is
    /// refused by the database rather than landing on a newer holder's data, and the answer
    /// tells what happened.
    pub async fn holding<T>(
        &self,
        lock: &impl Held,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let deadline = (Instant::now() + QUERY_BUDGET).min(lock.valid_until());
        self.write_by(deadline, work, || {
            let expired = lock.valid_until() <= Instant::now();
            lock.lost_resource()
                .or_else(|| expired.then(|| lock.resource()))
                .map(|resource| AppError::Lock(fencelock::LockError::Lost { resource }))
        })
        .await
    }
}

/// What a lock holder holds, as [`Database::holding`] needs it: one guard or several (a
/// transfer holds both users' locks). One trait instead of one `holding` per guard type, so
/// the deadline and the `lock_lost` explanation stay in one place.
pub trait Held {
    /// Until when every lock held is certainly valid.
    fn valid_until(&self) -> Instant;
    /// The resource of a lock that may be lost, if any.
    fn lost_resource(&self) -> Option<String>;
    /// The resource to name when the hold ran out (the first, for several).
    fn resource(&self) -> String;
}

impl Held for fencelock::Guard {
    fn valid_until(&self) -> Instant {
        fencelock::Guard::valid_until(self).into_std()
    }

    fn resource(&self) -> String {
        fencelock::Guard::resource(self).to_string()
    }

    fn lost_resource(&self) -> Option<String> {
        self.is_lost().then(|| self.resource().to_string())
    }
}

impl Held for fencelock::MultiGuard {
    fn valid_until(&self) -> Instant {
        fencelock::MultiGuard::valid_until(self).into_std()
    }

    fn lost_resource(&self) -> Option<String> {
        fencelock::MultiGuard::lost_resource(self).map(str::to_string)
    }

    fn resource(&self) -> String {
        self.guards()
            .first()
            .map(|guard| guard.resource().to_string())
            .unwrap_or_default()
    }
}

/// A guard's fence as a PostgreSQL `BIGINT`. Fences track the issuing Redis server's clock in
/// microseconds, far below 2^63, so the conversion cannot fail in practice.
pub fn db_fence(guard: &fencelock::Guard) -> i64 {
    as_db_fence(guard.fence())
}

/// The fence of `resource`'s lock among several held at once, as a `BIGINT`. Each resource
/// has its own fence, and each row must be compared with the fence of the lock that guards it.
///
/// # Panics
/// When `resource` is not among the locks held: the caller names the resources it locked, so
/// that is a bug in the handler, not something a request can cause.
pub fn db_fence_of(lock: &fencelock::MultiGuard, resource: &str) -> i64 {
    as_db_fence(
        lock.fence(resource)
            .unwrap_or_else(|| panic!("{resource} is not among the locks held")),
    )
}

fn as_db_fence(fence: u64) -> i64 {
    i64::try_from(fence).expect("fences stay below 2^53")
}

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
