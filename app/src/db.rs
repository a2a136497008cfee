//! PostgreSQL: the connection pool and the embedded migrations.

use crate::error::AppError;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::AsyncPgConnection;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The connection pool every handler draws from.
pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// `migrations/` at the workspace root, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Arbitrary, fixed key of the advisory lock that serialises migrations across instances.
const MIGRATION_LOCK_KEY: i64 = 0x646c_6f63_6b5f_6d67; // ASCII "dlock_mg" (the crate's first name)

/// How long taking a connection may wait (for a free one, or for a new one to be made).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request may wait for the database in all (a lock holder: no longer than its lock
/// is valid either). Past it the request gets `503 database_unavailable`.
pub const QUERY_BUDGET: Duration = Duration::from_secs(2);
/// During an outage, how often the background probe asks the database whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// PostgreSQL's `lock_timeout` for pooled sessions: below [`QUERY_BUDGET`], so a statement
/// stuck behind a row lock fails with the database's own error first.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(1500);
/// PostgreSQL's `idle_in_transaction_session_timeout` for pooled sessions.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// The pool, and what this instance knows about the database being down.
///
/// A failed connection attempt (a refused connection: at once) notes an outage. A request that
/// gets no answer in [`QUERY_BUDGET`] only makes the database suspect: the probe runs at once and
/// notes the outage if `SELECT 1` gets no answer either (a slow query, or one waiting on a row
/// lock, is not an outage). Sessions wait at most [`LOCK_TIMEOUT`] for a row lock and may sit
/// idle in a transaction at most [`IDLE_IN_TRANSACTION`] (a paused instance's transaction does
/// not block the rows it touched for longer). While one is noted every request gets
/// `503 database_unavailable` at once, without touching the pool, and a background task probes
/// every [`PROBE_INTERVAL`] until the database answers. Requests never probe: lock holders touch
/// the database inside their hold, and a holder waiting out a connect timeout would keep every
/// waiter queued behind it.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    database_url: String,
    max_size: u32,
    outage: Arc<Outage>,
}

/// Shared with the pool's error sink, which hears of every failed connection attempt.
#[derive(Debug, Default)]
struct Outage {
    down: AtomicBool,
    probing: AtomicBool,
    /// Wakes requests waiting for a connection when an attempt to make one failed (bb8 would
    /// keep them waiting until their timeout).
    noticed: Notify,
}

impl bb8::ErrorSink<diesel_async::pooled_connection::PoolError> for OutageSink {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        if !self.0.down.swap(true, Ordering::Relaxed) {
            tracing::error!(%error, "database connection failed: answering 503 until it is back");
        }
        self.0.noticed.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(OutageSink(self.0.clone()))
    }
}

#[derive(Debug)]
struct OutageSink(Arc<Outage>);

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("down", &self.inner.outage.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Database {
    /// A lazily connecting pool of `size` (a database that is down at start-up shows in
    /// `/health/ready`).
    pub fn new(database_url: &str, size: u32) -> Database {
        let outage = Arc::new(Outage::default());
        let pool = pool_builder(size)
            .error_sink(Box::new(OutageSink(outage.clone())))
            .build_unchecked(manager(database_url));
        Database {
            inner: Arc::new(Inner {
                pool,
                database_url: database_url.to_string(),
                max_size: size,
                outage,
            }),
        }
    }

    /// A pooled connection; [`AppError::DatabaseUnreachable`] at once during a noted outage or
    /// when a new connection is refused.
    async fn connection(&self) -> Result<Connection<'_>, AppError> {
        let outage = &self.inner.outage;
        let noticed = outage.noticed.notified();
        if outage.down.load(Ordering::Relaxed) {
            return Err(AppError::DatabaseUnreachable(
                "the database is known to be down".into(),
            ));
        }
        tokio::select! {
            got = self.inner.pool.get() => got.map_err(|err| match err {
                // Every connection is busy: the database answers, this instance is just loaded.
                bb8::RunError::TimedOut
                    if self.inner.pool.state().connections >= self.inner.max_size =>
                {
                    AppError::Database("no free database connection in time".into())
                }
                other => AppError::from(other),
            }),
            () = noticed => Err(AppError::DatabaseUnreachable(
                "a connection to the database failed".into(),
            )),
        }
    }

    /// Runs `work` on a pooled connection, taking the connection included, until `deadline` at
    /// the latest: past it, or when the database cannot be reached, an outage is noted (or
    /// suspected) and the answer is [`AppError::DatabaseUnreachable`]. The only way requests
    /// reach the database, so none is ever unbounded.
    pub async fn within<T>(
        &self,
        deadline: Instant,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.run(deadline, work, || None).await
    }

    /// [`Database::within`] the request budget from now.
    pub async fn bounded<T>(
        &self,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.within(Instant::now() + QUERY_BUDGET, work).await
    }

    /// [`Database::within`] what a lock holder may spend: the request budget, and no longer
    /// than its lock is valid (for several locks, the first to run out). Running out of time
    /// with a lock gone is the lock's loss (`409 lock_lost`), not a database outage: most
    /// likely this process stood still (paused, starved) rather than the database.
    pub async fn holding<T>(
        &self,
        lock: &impl Held,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let deadline = (Instant::now() + QUERY_BUDGET).min(lock.valid_until());
        self.run(deadline, work, || {
            lock.lost_resource()
                .map(|resource| AppError::Lock(fencelock::LockError::Lost { resource }))
        })
        .await
    }

    /// Runs `work` until `deadline`; on timeout `explain` may name the cause, else it is an
    /// outage.
    async fn run<T>(
        &self,
        deadline: Instant,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, AppError>,
        explain: impl FnOnce() -> Option<AppError>,
    ) -> Result<T, AppError> {
        let work = async {
            let mut conn = self.connection().await?;
            work(&mut conn).await
        };
        let outcome = match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                if let Some(cause) = explain() {
                    return Err(cause);
                }
                self.probe(false);
                return Err(AppError::DatabaseUnreachable(
                    "no answer from the database in time".into(),
                ));
            }
        };
        if let Err(AppError::DatabaseUnreachable(_)) = &outcome {
            self.probe(true);
        }
        outcome
    }

    /// Whether the database answers `SELECT 1` within `timeout`, asked even during an outage
    /// (an answer ends it).
    pub async fn ping(&self, timeout: Duration) -> bool {
        let answered = tokio::time::timeout(timeout, async {
            let mut conn = self.inner.pool.get().await.ok()?;
            diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut conn)
                .await
                .ok()
        })
        .await
        .is_ok_and(|answer| answer.is_some());
        if answered && self.inner.outage.down.swap(false, Ordering::Relaxed) {
            tracing::info!("database reachable again");
        }
        answered
    }

    /// Whether a new session (not one from the pool, which may have a dropped request's
    /// statement still queued on it) connects and answers `SELECT 1` in [`CONNECT_TIMEOUT`].
    /// An answer ends a noted outage.
    async fn answers_on_a_new_connection(&self) -> bool {
        let answered = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut conn = AsyncPgConnection::establish(&self.inner.database_url)
                .await
                .ok()?;
            conn.batch_execute("SELECT 1").await.ok()
        })
        .await
        .is_ok_and(|answer| answer.is_some());
        if answered && self.inner.outage.down.swap(false, Ordering::Relaxed) {
            tracing::info!("database reachable again");
        }
        answered
    }

    /// Starts the probe (one at a time): with `down` the outage is noted now and the probe
    /// ends it; without, the database is only suspect: the probe asks at once and notes the
    /// outage if it gets no answer.
    fn probe(&self, down: bool) {
        let outage = &self.inner.outage;
        if down && !outage.down.swap(true, Ordering::Relaxed) {
            tracing::error!("database unreachable: answering 503 until it is back");
        }
        if outage.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            // Cleared however the task ends (its runtime may stop under it), so the next
            // request that finds the database down starts another.
            struct Probing(Arc<Outage>);
            impl Drop for Probing {
                fn drop(&mut self) {
                    self.0.probing.store(false, Ordering::Relaxed);
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            let _probing = Probing(inner.outage.clone());
            drop(inner);
            let mut suspect = !down;
            loop {
                if !suspect {
                    tokio::time::sleep(PROBE_INTERVAL).await;
                }
                // The instance was dropped (tests): nothing left to probe for.
                let Some(inner) = weak.upgrade() else { return };
                let database = Database { inner };
                let outage = &database.inner.outage;
                let answered = database.answers_on_a_new_connection().await;
                if answered || (!suspect && !outage.down.load(Ordering::Relaxed)) {
                    return;
                }
                if suspect && !outage.down.swap(true, Ordering::Relaxed) {
                    tracing::error!("database does not answer: answering 503 until it is back");
                }
                suspect = false;
            }
        });
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
}

impl Held for fencelock::Guard {
    fn valid_until(&self) -> Instant {
        fencelock::Guard::valid_until(self).into_std()
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
}

/// A connection borrowed from the pool.
pub type Connection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A lazily connecting pool (a database that is down at start-up shows in `/health/ready`).
pub fn pool(database_url: &str, size: u32) -> Pool {
    pool_builder(size).build_unchecked(manager(database_url))
}

/// Connections with the session timeouts (see [`Database`]).
fn manager(database_url: &str) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_string();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            let timeouts = format!(
                "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                LOCK_TIMEOUT.as_millis(),
                IDLE_IN_TRANSACTION.as_millis()
            );
            conn.batch_execute(&timeouts)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    AsyncDieselConnectionManager::new_with_config(database_url, config)
}

fn pool_builder(size: u32) -> bb8::Builder<AsyncDieselConnectionManager<AsyncPgConnection>> {
    bb8::Pool::builder()
        .max_size(size)
        // No `SELECT 1` per checkout: it would add a round trip to every request (and to
        // every lock hold). A closed connection is still caught: diesel-async reports it as
        // broken when it is returned, and bb8 drops it.
        .test_on_check_out(false)
        .connection_timeout(CONNECT_TIMEOUT)
        // A refused connection is an answer: no retries until the timeout (see `Database`).
        .retry_connection(false)
}

/// Runs pending migrations. Safe when several instances start at once: they take turns under
/// a PostgreSQL advisory lock, and the later ones find nothing left to do.
///
/// Runs on a blocking thread with diesel's sync harness over `AsyncConnectionWrapper`
/// (diesel-async's own harness panics on actix's single-threaded runtimes).
pub async fn run_migrations(database_url: &str) -> Result<(), String> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl;
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                .map_err(|err| {
                    format!("cannot connect to {}: {err}", fencelock::redact_url(&url))
                })?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|err| format!("migration lock: {err}"))?;
        let outcome = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|err| format!("migrations failed: {err}"));
        let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn);
        let applied = outcome?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        Ok(())
    })
    .await
    .map_err(|err| format!("migration task failed: {err}"))?
}
