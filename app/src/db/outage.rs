//! Outage detection: what this instance knows of the database's health, and how it tells an
//! outage (a database that does not answer) from overload (one that answers "too many", or
//! slowly). A noted outage answers every request at once; only the background probe asks the
//! database, on a new session, until it answers. The rules are on [`Database`].

use super::session::{establish, ConnectFailure, NEW_SESSION_TIMEOUT};
use super::Database;
use crate::error::AppError;
use diesel_async::SimpleAsyncConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// During an outage, how often the background probe asks the database whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Shared with the pool's connection set-up and error sink, which hear of every failed
/// connection attempt.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub(super) down: AtomicBool,
    pub(super) probing: AtomicBool,
    /// Whether the last failed connection attempt was refused by a loaded server (rather
    /// than not answered).
    pub(super) last_refusal_was_load: AtomicBool,
    /// Wakes requests waiting for a connection when an attempt to make one failed (bb8 would
    /// keep them waiting until their timeout).
    pub(super) noticed: Notify,
}

impl Health {
    /// Notes the outage (once: the log line marks its start).
    pub(super) fn note_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(why, "database unreachable: answering 503 until it is back");
        }
    }

    /// Ends a noted outage.
    pub(super) fn note_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("database reachable again");
        }
    }
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

/// bb8's error sink: hears of every failed connection attempt, and wakes the requests waiting
/// for a connection unless the attempt was refused for load.
#[derive(Debug)]
pub(super) struct HealthSink(pub(super) Arc<Health>);

impl Database {
    /// Why a connection attempt failed, as `establish` classified it.
    pub(super) fn connect_failure(&self) -> AppError {
        let health = &self.inner.health;
        if !health.down.load(Ordering::Relaxed)
            && health.last_refusal_was_load.load(Ordering::Relaxed)
        {
            AppError::Overloaded("the database refuses new connections (too many clients)".into())
        } else {
            AppError::DatabaseUnreachable("a connection to the database failed".into())
        }
    }

    pub(super) fn pool_failure(
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
    pub(super) fn pool_is_busy(&self) -> bool {
        let state = self.inner.pool.state();
        state.connections >= self.inner.max_size && state.idle_connections == 0
    }

    /// A request that got no answer in time: the instance's own pool being full is overload;
    /// otherwise the database is suspect (the probe decides whether it is down).
    pub(super) fn no_answer_in_time(&self) -> AppError {
        if self.pool_is_busy() {
            return AppError::Overloaded(
                "every database connection of this instance stayed busy".into(),
            );
        }
        self.probe(false);
        AppError::DatabaseUnreachable("no answer from the database in time".into())
    }

    /// Passes `outcome` on; a database found unreachable starts the probe.
    pub(super) fn observed<T>(&self, outcome: Result<T, AppError>) -> Result<T, AppError> {
        if let Err(AppError::DatabaseUnreachable(_)) = &outcome {
            let down = self.inner.health.down.load(Ordering::Relaxed);
            self.probe(down);
        }
        outcome
    }

    /// Whether a new session (not one from the pool) gets an answer within
    /// [`NEW_SESSION_TIMEOUT`] (what the pool's attempts are given): `SELECT 1` answered, or a
    /// refusal for load (an overloaded server is up). An answer ends a noted outage.
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
    pub(super) fn probe(&self, down: bool) {
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
