//! PostgreSQL as requests reach it: [`Database`], whose [`Database::read`] and
//! [`Database::write`] (and, for lock holders, `holding` in [`crate::fencing`]) never answer
//! with a lie about what was written, and [`Database::ping`] for readiness. This file holds
//! `Database`, the request budgets and how a request gets its pooled connection; the rest is
//! one concern per file:
//! - `session.rs` — a new session with the service's timeouts, and why one could not be had;
//! - `outage.rs` — the instance's view of the database's health: outage or overload, the probe;
//! - `pool.rs` — the bb8 pool, and `InUse`, which keeps a session whose work was cut out of it;
//! - `migrations.rs` — the embedded migrations, run at start-up under an advisory lock.

mod migrations;
mod outage;
mod pool;
mod session;

pub use migrations::{run_migrations, MIGRATIONS};
pub use outage::PROBE_INTERVAL;
pub use pool::{pool, Connection, Pool, CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT, POOL_MAX_LIFETIME};
pub use session::{IDLE_IN_TRANSACTION, LOCK_TIMEOUT, NEW_SESSION_TIMEOUT, STATEMENT_TIMEOUT};

use crate::error::AppError;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::AsyncPgConnection;
use outage::{Health, HealthSink};
use pool::{manager, pool_builder, InUse};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a request may wait for the database before its work starts, and how long a read
/// may take in all. Past it the request gets a 503 (`database_unavailable` or `overloaded`);
/// nothing was written.
pub const QUERY_BUDGET: Duration = Duration::from_secs(2);
/// How long a write that has started may run before its answer is `outcome_unknown`: above
/// [`STATEMENT_TIMEOUT`], so only a slow COMMIT (an fsync stall, a slow synchronous standby)
/// or a database that stops answering altogether reaches it.
pub const WRITE_OUTCOME_WAIT: Duration = Duration::from_secs(6);

/// The pool, and what this instance knows about the database.
///
/// **An outage is a database that does not answer.** A refused or timed-out connection notes
/// one; a request that gets no answer in [`QUERY_BUDGET`] makes the database suspect: the probe
/// runs at once and notes the outage if a new session gets no answer either (a slow query, or
/// one waiting on a row lock, is not an outage). While one is noted every request gets
/// `503 database_unavailable` at once, without touching the pool, and a background task probes
/// every [`PROBE_INTERVAL`] until the database answers. Requests never probe: lock holders
/// touch the database inside their hold, and a holder waiting out a connect timeout would keep
/// every waiter queued behind it.
///
/// **Overload is not an outage.** A database that answers — `too many clients` (SQLSTATE class
/// 53), a statement or lock timeout, a read slower than the budget — or a pool whose
/// connections are all busy gives the request `503 overloaded`, and the instance keeps serving
/// from the connections it has: a refusal for load does not wake the requests waiting for a
/// pooled connection (one is given back within moments), only a failure that looks like an
/// outage does.
///
/// **A connection whose work did not finish is not reused.** A request cut at its deadline or
/// dropped by its client may leave a statement running on its session; the session is marked
/// broken (`InUse`) and the pool closes it instead of handing it to the next request.
///
/// **Writes are never cut short.** Once a write's work has its connection it runs until the
/// database answers (bounded by [`STATEMENT_TIMEOUT`] per statement on the server,
/// [`WRITE_OUTCOME_WAIT`] in all here); its answer is the work's. Every write is a transaction
/// whose COMMIT's answer is awaited (an autocommit statement's row arrives before the commit). A write whose connection is lost, or that outlives
/// [`WRITE_OUTCOME_WAIT`], may or may not have committed: `504 outcome_unknown`, never a
/// retryable 503.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    database_url: String,
    max_size: u32,
    health: Arc<Health>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("down", &self.inner.health.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Database {
    /// A lazily connecting pool of `size` (a database that is down at start-up shows in
    /// `/health/ready`).
    pub fn new(database_url: &str, size: u32) -> Database {
        let health = Arc::new(Health::default());
        let pool = pool_builder(size)
            .error_sink(Box::new(HealthSink(health.clone())))
            .build_unchecked(manager(database_url, health.clone()));
        Database {
            inner: Arc::new(Inner {
                pool,
                database_url: database_url.to_string(),
                max_size: size,
                health,
            }),
        }
    }

    /// A pooled connection that is not known to be closed; at once
    /// [`AppError::DatabaseUnreachable`] during a noted outage, [`AppError::Overloaded`] when
    /// every connection is busy and the server refuses more.
    async fn connection(&self) -> Result<Connection<'_>, AppError> {
        let health = &self.inner.health;
        // A session the server ended (a restart, an administrator) is seen closed here and
        // skipped, instead of failing the request that would have drawn it. Each round
        // discards one, so the pool's size bounds the rounds.
        for _ in 0..=self.inner.max_size {
            let noticed = health.noticed.notified();
            if health.down.load(Ordering::Relaxed) {
                return Err(AppError::DatabaseUnreachable(
                    "the database is known to be down".into(),
                ));
            }
            let mut conn = tokio::select! {
                got = self.inner.pool.get() => got.map_err(|err| self.pool_failure(err))?,
                () = noticed => return Err(self.connect_failure()),
            };
            if !PoolableConnection::is_broken(&mut *conn) {
                return Ok(conn);
            }
            // Returned broken: bb8 closes it.
        }
        Err(AppError::DatabaseUnreachable(
            "every pooled connection was found closed".into(),
        ))
    }

    /// Runs a read on a pooled connection, taking the connection included, within
    /// [`QUERY_BUDGET`]. A read whose connection is lost is tried once more on another (within
    /// the same budget). Past the budget: `overloaded` if every connection is busy, else the
    /// database is suspect and the answer is `database_unavailable`.
    pub async fn read<T>(
        &self,
        work: impl AsyncFn(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let deadline = Instant::now() + QUERY_BUDGET;
        // Where the read was when the budget ran out.
        let connected = std::cell::Cell::new(false);
        let lost_one = std::cell::Cell::new(false);
        let attempts = async {
            let mut conn = InUse::new(self.connection().await?);
            connected.set(true);
            match conn.run(&work).await {
                Err(AppError::DatabaseUnreachable(_)) => {
                    lost_one.set(true);
                    drop(conn);
                    self.probe(false);
                    let mut conn = InUse::new(self.connection().await?);
                    conn.run(&work).await
                }
                outcome => outcome,
            }
        };
        match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(outcome) => self.observed(outcome),
            // The database took the read and has not answered it: slow, or gone. With every
            // pooled connection busy, that is load; otherwise overload until the probe, which
            // asks on a new session, says otherwise.
            Err(_) if connected.get() && !lost_one.get() => {
                if !self.pool_is_busy() {
                    self.probe(false);
                }
                Err(AppError::Overloaded(
                    "the database did not answer the read in time".into(),
                ))
            }
            Err(_) if lost_one.get() => Err(AppError::DatabaseUnreachable(
                "the connection was lost and no other answered in time".into(),
            )),
            Err(_) => Err(self.no_answer_in_time()),
        }
    }

    /// Runs a write: its connection must be had within [`QUERY_BUDGET`] (else nothing was
    /// written, and the answer says why), then `work` runs to its answer (see [`Database`]).
    pub async fn write<T>(
        &self,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.write_by(Instant::now() + QUERY_BUDGET, work, || None)
            .await
    }

    /// The write behind [`Database::write`] and [`Database::holding`]: the connection must be
    /// had by `deadline`; not had in time, `explain` may say why (a lock holder's lost lock),
    /// else the database's side is told. Once had, `work` runs to its answer (see [`Database`]).
    pub(crate) async fn write_by<T>(
        &self,
        deadline: Instant,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
        explain: impl FnOnce() -> Option<AppError>,
    ) -> Result<T, AppError> {
        let mut conn = match tokio::time::timeout_at(deadline.into(), self.connection()).await {
            Ok(Ok(conn)) => InUse::new(conn),
            Ok(Err(refused)) => return self.observed(Err(refused)),
            Err(_) => return Err(explain().unwrap_or_else(|| self.no_answer_in_time())),
        };
        match tokio::time::timeout(WRITE_OUTCOME_WAIT, conn.run_once(work)).await {
            Ok(Err(AppError::DatabaseUnreachable(detail))) => {
                self.probe(false);
                Err(AppError::OutcomeUnknown(format!(
                    "the connection to the database was lost during the write ({detail})"
                )))
            }
            Ok(outcome) => outcome,
            Err(_) => {
                self.probe(false);
                Err(AppError::OutcomeUnknown(format!(
                    "the database did not answer the write within {} s",
                    WRITE_OUTCOME_WAIT.as_secs()
                )))
            }
        }
    }

    /// Whether the database answers `SELECT 1` within `timeout`, asked even during an outage
    /// (an answer ends it).
    pub async fn ping(&self, timeout: Duration) -> bool {
        let answered = tokio::time::timeout(timeout, async {
            let conn = self.inner.pool.get().await.ok()?;
            let mut conn = InUse::new(conn);
            if PoolableConnection::is_broken(&mut *conn.conn) {
                return None;
            }
            conn.run(&async |conn: &mut AsyncPgConnection| {
                Ok(diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn).await?)
            })
            .await
            .ok()
        })
        .await
        .is_ok_and(|answer| answer.is_some());
        if answered {
            self.inner.health.note_up();
        }
        answered
    }
}
