//! The connection pool: bb8 over diesel-async, its sessions made by [`establish`] (which tells
//! [`Health`] why one could not be), and [`InUse`], the loan of a pooled connection to one
//! piece of work, which does not let a session whose work was cut go back to the pool.

use super::outage::Health;
use super::session::{establish, ConnectFailure, NEW_SESSION_TIMEOUT};
use crate::error::AppError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection,
};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The connection pool every handler draws from.
pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A connection borrowed from the pool.
pub type Connection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How long taking a connection may wait for a free one (bb8's `connection_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A pooled connection idle this long is closed (the pool shrinks back after a burst).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled connection is replaced after this long (server-side memory, rebalanced standbys).
pub const POOL_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A lazily connecting pool with the service's session timeouts, for tests that play a
/// lock holder by hand.
pub fn pool(database_url: &str, size: u32) -> Pool {
    pool_builder(size).build_unchecked(manager(database_url, Arc::new(Health::default())))
}

/// Connections made by [`establish`], which tells `health` why one could not be.
pub(super) fn manager(
    database_url: &str,
    health: Arc<Health>,
) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |url| {
        let url = url.to_string();
        let health = health.clone();
        Box::pin(async move {
            // tokio-postgres has no connect timeout of its own: an attempt to a silent host
            // would count against the pool's size until the kernel gave up.
            let attempt = match tokio::time::timeout(NEW_SESSION_TIMEOUT, establish(&url)).await {
                Ok(attempt) => attempt,
                Err(_) => {
                    // Slow, not refused: the requests that wait for it make the database
                    // suspect, and the probe decides.
                    health.last_refusal_was_load.store(false, Ordering::Relaxed);
                    return Err(diesel::ConnectionError::BadConnection(format!(
                        "no answer to a new connection within {} s",
                        NEW_SESSION_TIMEOUT.as_secs()
                    )));
                }
            };
            let load = matches!(attempt, Err(ConnectFailure::Overloaded(_)));
            health.last_refusal_was_load.store(load, Ordering::Relaxed);
            attempt.map_err(|failure| {
                let detail = match failure {
                    ConnectFailure::Overloaded(detail) | ConnectFailure::Unreachable(detail) => {
                        detail
                    }
                };
                if load {
                    tracing::warn!(%detail, "the database refused a new connection for load");
                } else {
                    health.note_down(&detail);
                }
                diesel::ConnectionError::BadConnection(detail)
            })
        })
    });
    AsyncDieselConnectionManager::new_with_config(database_url, config)
}

pub(super) fn pool_builder(
    size: u32,
) -> bb8::Builder<AsyncDieselConnectionManager<AsyncPgConnection>> {
    bb8::Pool::builder()
        .max_size(size)
        // No `SELECT 1` per checkout: it would add a round trip to every request (and to
        // every lock hold). A closed connection is still caught: diesel-async reports it as
        // broken when it is returned, and bb8 drops it.
        .test_on_check_out(false)
        .connection_timeout(CONNECT_TIMEOUT)
        .idle_timeout(Some(POOL_IDLE_TIMEOUT))
        .max_lifetime(Some(POOL_MAX_LIFETIME))
        // A refused connection is an answer: no retries until the timeout (see `Database`).
        .retry_connection(false)
}

/// A pooled connection lent to one piece of work. Dropped before the work returned (cut at a
/// deadline, or its request dropped by a client that hung up), it marks its session broken, so
/// that the pool closes it rather than hand the next request a session with a statement still
/// running on it.
pub(super) struct InUse<'a> {
    pub(super) conn: Connection<'a>,
    finished: bool,
}

impl<'a> InUse<'a> {
    pub(super) fn new(conn: Connection<'a>) -> InUse<'a> {
        InUse {
            conn,
            finished: false,
        }
    }

    /// Runs `work` (which may be run again on another connection).
    pub(super) async fn run<T>(
        &mut self,
        work: &impl AsyncFn(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.run_once(async |conn: &mut AsyncPgConnection| work(conn).await)
            .await
    }

    /// Runs `work`, once.
    pub(super) async fn run_once<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.finished = false;
        let outcome = work(&mut self.conn).await;
        self.finished = true;
        self.settled(outcome).await
    }

    /// A database error on a session the server has just closed (a restart, an administrator,
    /// `idle_in_transaction_session_timeout`) is the connection's loss, not a refusal: the
    /// connection's task may need a moment to see the end of the stream.
    /// A connection found lost is marked broken before it goes back, whatever its task has
    /// seen yet: the retry of a read must not be handed the same connection.
    async fn settled<T>(&mut self, outcome: Result<T, AppError>) -> Result<T, AppError> {
        let outcome = match outcome {
            Err(AppError::Database(detail)) => {
                tokio::task::yield_now().await;
                if PoolableConnection::is_broken(&mut *self.conn) {
                    Err(AppError::DatabaseUnreachable(detail))
                } else {
                    Err(AppError::Database(detail))
                }
            }
            outcome => outcome,
        };
        if let Err(AppError::DatabaseUnreachable(_)) = &outcome {
            self.mark_broken();
        }
        outcome
    }

    fn mark_broken(&mut self) {
        <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::transaction_manager_status_mut(&mut self.conn)
            .set_in_error();
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.mark_broken();
        }
    }
}
