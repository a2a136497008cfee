//! PostgreSQL: the connection pool, what this instance knows of the database's health, and
//! the two ways a request reaches it — [`Database::read`] and [`Database::write`] (with
//! [`Database::holding`] for lock holders) — whose answers never lie about what was written.

use crate::error::AppError;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection,
};
use diesel_async::SimpleAsyncConnection;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
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

/// How long taking a connection may wait for a free one (bb8's `connection_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new session may take to connect, log in and take its settings — the pool's
/// attempts and the probe's alike. Past it the database is suspect (the probe decides), not
/// down: a loaded server can take a second or two to start a backend.
pub const NEW_SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request may wait for the database before its work starts, and how long a read
/// may take in all. Past it the request gets a 503 (`database_unavailable` or `overloaded`);
/// nothing was written.
pub const QUERY_BUDGET: Duration = Duration::from_secs(2);
/// PostgreSQL's `statement_timeout` for pooled sessions: a statement that the database cannot
/// finish in time fails with the database's own error and its transaction is rolled back, so
/// the answer (`503 overloaded`) is true. (PostgreSQL does not time COMMIT itself.)
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a write that has started may run before its answer is `outcome_unknown`: above
/// [`STATEMENT_TIMEOUT`], so only a slow COMMIT (an fsync stall, a slow synchronous standby)
/// or a database that stops answering altogether reaches it.
pub const WRITE_OUTCOME_WAIT: Duration = Duration::from_secs(6);
/// During an outage, how often the background probe asks the database whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// PostgreSQL's `lock_timeout` for pooled sessions: below [`QUERY_BUDGET`], so a statement
/// stuck behind a row lock fails with the database's own error first.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(1500);
/// PostgreSQL's `idle_in_transaction_session_timeout` for pooled sessions.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);
/// A pooled connection idle this long is closed (the pool shrinks back after a burst).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled connection is replaced after this long (server-side memory, rebalanced standbys).
pub const POOL_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

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

/// Shared with the pool's connection set-up and error sink, which hear of every failed
/// connection attempt.
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
    probing: AtomicBool,
    /// Whether the last failed connection attempt was refused by a loaded server (rather
    /// than not answered).
    last_refusal_was_load: AtomicBool,
    /// Wakes requests waiting for a connection when an attempt to make one failed (bb8 would
    /// keep them waiting until their timeout).
    noticed: Notify,
}

impl Health {
    /// Notes the outage (once: the log line marks its start).
    fn note_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(why, "database unreachable: answering 503 until it is back");
        }
    }

    /// Ends a noted outage.
    fn note_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("database reachable again");
        }
    }
}

/// Why a new session could not be had.
#[derive(Debug)]
enum ConnectFailure {
    /// The server answered with a refusal for load (SQLSTATE class 53: `too many clients`).
    Overloaded(String),
    /// No answer, a refused socket, or a server that is starting or stopping.
    Unreachable(String),
}

/// A new session with the pooled sessions' timeouts. Connects with tokio-postgres itself so
/// the refusal's SQLSTATE is seen (diesel's connection error keeps only its text, which the
/// server may localise).
async fn establish(url: &str) -> Result<AsyncPgConnection, ConnectFailure> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|err| {
            let load = err.code().is_some_and(|code| code.code().starts_with("53"));
            let detail = format!("cannot connect to the database: {err}");
            if load {
                ConnectFailure::Overloaded(detail)
            } else {
                ConnectFailure::Unreachable(detail)
            }
        })?;
    let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|err| ConnectFailure::Unreachable(err.to_string()))?;
    let timeouts = format!(
        "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
         SET statement_timeout = {}",
        LOCK_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION.as_millis(),
        STATEMENT_TIMEOUT.as_millis(),
    );
    conn.batch_execute(&timeouts)
        .await
        .map_err(|err| ConnectFailure::Unreachable(err.to_string()))?;
    Ok(conn)
}

impl bb8::ErrorSink<diesel_async::pooled_connection::PoolError> for HealthSink {
    fn sink(&self, _error: diesel_async::pooled_connection::PoolError) {
        // `establish` has classified the failure already (and noted an outage if it is one).
        // A refusal for load leaves the waiters waiting: a pooled connection comes back soon.
        if !self.0.last_refusal_was_load.load(Ordering::Relaxed) {
            self.0.noticed.notify_waiters();
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(HealthSink(self.0.clone()))
    }
}

#[derive(Debug)]
struct HealthSink(Arc<Health>);

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

    /// Why a connection attempt failed, as `establish` classified it.
    fn connect_failure(&self) -> AppError {
        let health = &self.inner.health;
        if !health.down.load(Ordering::Relaxed)
            && health.last_refusal_was_load.load(Ordering::Relaxed)
        {
            AppError::Overloaded("the database refuses new connections (too many clients)".into())
        } else {
            AppError::DatabaseUnreachable("a connection to the database failed".into())
        }
    }

    fn pool_failure(
        &self,
        error: bb8::RunError<diesel_async::pooled_connection::PoolError>,
    ) -> AppError {
        match error {
            bb8::RunError::TimedOut
                if self.pool_is_busy()
                    || self
                        .inner
                        .health
                        .last_refusal_was_load
                        .load(Ordering::Relaxed) =>
            {
                AppError::Overloaded("every database connection of this instance is busy".into())
            }
            // A new session is on its way and slow: load until the probe says otherwise.
            bb8::RunError::TimedOut => {
                self.probe(false);
                AppError::Overloaded("no database connection in time".into())
            }
            bb8::RunError::User(_) => self.connect_failure(),
        }
    }

    /// Whether every connection the pool may have exists and is in use.
    fn pool_is_busy(&self) -> bool {
        let state = self.inner.pool.state();
        state.connections >= self.inner.max_size && state.idle_connections == 0
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

    /// A request that got no answer in time: the instance's own pool being full is overload;
    /// otherwise the database is suspect (the probe decides whether it is down).
    fn no_answer_in_time(&self) -> AppError {
        if self.pool_is_busy() {
            return AppError::Overloaded(
                "every database connection of this instance stayed busy".into(),
            );
        }
        self.probe(false);
        AppError::DatabaseUnreachable("no answer from the database in time".into())
    }

    /// Passes `outcome` on; a database found unreachable starts the probe.
    fn observed<T>(&self, outcome: Result<T, AppError>) -> Result<T, AppError> {
        if let Err(AppError::DatabaseUnreachable(_)) = &outcome {
            let down = self.inner.health.down.load(Ordering::Relaxed);
            self.probe(down);
        }
        outcome
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

    /// Whether a new session (not one from the pool) gets an answer within
    /// [`NEW_SESSION_TIMEOUT`] (what the pool's attempts are given): `SELECT 1` answered, or a refusal for load (an overloaded
    /// server is up). An answer ends a noted outage.
    async fn answers_on_a_new_connection(&self) -> bool {
        let answered = tokio::time::timeout(NEW_SESSION_TIMEOUT, async {
            match establish(&self.inner.database_url).await {
                Ok(mut conn) => conn.batch_execute("SELECT 1").await.is_ok(),
                Err(ConnectFailure::Overloaded(_)) => true,
                Err(ConnectFailure::Unreachable(_)) => false,
            }
        })
        .await
        .unwrap_or(false);
        if answered {
            self.inner.health.note_up();
        }
        answered
    }

    /// Starts the probe (one at a time): with `down` the outage is noted now and the probe
    /// ends it; without, the database is only suspect: the probe asks at once and notes the
    /// outage if it gets no answer.
    fn probe(&self, down: bool) {
        let health = &self.inner.health;
        if down {
            health.note_down("a connection failed");
        }
        if health.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            // Cleared however the task ends (its runtime may stop under it), so the next
            // request that finds the database down starts another.
            struct Probing(Arc<Health>);
            impl Drop for Probing {
                fn drop(&mut self) {
                    self.0.probing.store(false, Ordering::Relaxed);
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            let _probing = Probing(inner.health.clone());
            drop(inner);
            let mut suspect = !down;
            loop {
                if !suspect {
                    tokio::time::sleep(PROBE_INTERVAL).await;
                }
                // The instance was dropped (tests): nothing left to probe for.
                let Some(inner) = weak.upgrade() else { return };
                let database = Database { inner };
                let health = &database.inner.health;
                let answered = database.answers_on_a_new_connection().await;
                if answered || (!suspect && !health.down.load(Ordering::Relaxed)) {
                    return;
                }
                if suspect {
                    health.note_down("no answer on a new session either");
                }
                suspect = false;
            }
        });
    }
}

/// A pooled connection lent to one piece of work. Dropped before the work returned (cut at a
/// deadline, or its request dropped by a client that hung up), it marks its session broken, so
/// that the pool closes it rather than hand the next request a session with a statement still
/// running on it.
struct InUse<'a> {
    conn: Connection<'a>,
    finished: bool,
}

impl<'a> InUse<'a> {
    fn new(conn: Connection<'a>) -> InUse<'a> {
        InUse {
            conn,
            finished: false,
        }
    }

    /// Runs `work` (which may be run again on another connection).
    async fn run<T>(
        &mut self,
        work: &impl AsyncFn(&mut AsyncPgConnection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.run_once(async |conn: &mut AsyncPgConnection| work(conn).await)
            .await
    }

    /// Runs `work`, once.
    async fn run_once<T>(
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

/// A connection borrowed from the pool.
pub type Connection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A lazily connecting pool with the service's session timeouts, for tests that play a
/// lock holder by hand.
pub fn pool(database_url: &str, size: u32) -> Pool {
    pool_builder(size).build_unchecked(manager(database_url, Arc::new(Health::default())))
}

/// Connections made by [`establish`], which tells `health` why one could not be.
fn manager(
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

fn pool_builder(size: u32) -> bb8::Builder<AsyncDieselConnectionManager<AsyncPgConnection>> {
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
