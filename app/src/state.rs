//! What every handler shares.

use crate::db::Database;
use fencelock::Locker;

/// Shared by all workers (cheap to clone: everything inside is reference-counted).
#[derive(Debug, Clone)]
pub struct AppState {
    /// PostgreSQL connections, and whether the database is known to be down.
    pub db: Database,
    /// The distributed locks (handlers reach it through `#[distributed_lock]`).
    pub locker: Locker,
    /// This instance's id, written into ledgers and `X-Instance`.
    pub instance: String,
    /// Whether `POST /product/reset` is allowed.
    pub allow_reset: bool,
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
