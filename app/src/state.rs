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
