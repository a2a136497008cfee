//! [`Locker`]: the public face. It checks what it is asked, traces and counts it, and leaves the
//! waiting to `wait.rs`, the talking to the nodes to `protocol.rs`.

use crate::guard::{Guard, LockerState};
use crate::local::LocalQueues;
use crate::options::{LockOptions, LockerConfig};
use crate::protocol::Protocol;
use crate::quorum::majority;
use crate::resource::validate_resource;
use crate::wait::wait_for_lock;
use crate::{fair, observe, LockError};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Takes distributed locks. Cheap to clone; share one per process (across tasks and actix
/// workers) so that waiters of one resource share a pub/sub subscription and can hand the lock
/// to each other.
///
/// ```no_run
/// # async fn run() -> Result<(), fencelock::LockError> {
/// use fencelock::{Locker, LockerConfig, LockOptions};
/// let locker = Locker::new(LockerConfig::new(["redis://127.0.0.1:6379/"]))?;
/// let guard = locker.acquire("product:42", &LockOptions::new()).await?;
/// println!("holding with fence {}", guard.fence());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Locker {
    pub(crate) state: Arc<LockerState>,
}

/// Whether a locker talks to one Redis or runs Redlock over several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One Redis node.
    Single,
    /// A majority of `nodes` independent Redis nodes must agree.
    Quorum {
        /// How many nodes are configured.
        nodes: usize,
    },
}

/// What [`Locker::health`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Configured nodes.
    pub nodes: usize,
    /// Nodes that answered PING.
    pub up: usize,
    /// Whether enough nodes are up to take locks.
    pub quorum: bool,
}

impl Locker {
    /// A locker over the configured nodes. Connections are made lazily, so a Redis that is down
    /// now is reported by the first call that needs it, not here.
    ///
    /// Can be built outside a Tokio runtime (calls need one). Share it freely between runtimes:
    /// when the runtime that made some of its connections stops, the locker makes new ones,
    /// and releases of dropped guards run on a background thread of their own.
    pub fn new(config: LockerConfig) -> Result<Locker, LockError> {
        config.check()?;
        Ok(Locker {
            state: Arc::new(LockerState {
                protocol: Arc::new(Protocol::new(config)?),
                waiters: LocalQueues::default(),
            }),
        })
    }

    /// Single-node or quorum mode, from the number of URLs.
    pub fn mode(&self) -> Mode {
        match self.protocol().node_count() {
            1 => Mode::Single,
            nodes => Mode::Quorum { nodes },
        }
    }

    /// The configuration this locker was built from.
    pub fn config(&self) -> &LockerConfig {
        self.protocol().config()
    }

    /// PINGs every node (bounded by the node timeout) and reports how many answered.
    pub async fn health(&self) -> Health {
        let up = self.protocol().cluster().ping_all().await;
        let nodes = self.protocol().node_count();
        Health {
            nodes,
            up,
            quorum: up >= majority(nodes),
        }
    }

    /// Acquires `resource`, waiting up to `options.wait` while someone else holds it.
    ///
    /// Waiting is event-driven: a release is announced over pub/sub (or the lock is handed over
    /// directly by a holder in this process) and the next waiter takes it at once; a jittered
    /// timer, never later than the holder's TTL, covers expiry and lost messages.
    ///
    /// A future that is alive but not polled (parked in a `select!` whose other branch runs
    /// long) holds its place in this process's queue for the resource, and, in fair mode, its
    /// place in the fair queue until its `fair_waiter_lease` runs out. The other waiters of the
    /// process still ask Redis when their timers fire, so it cannot keep them from a free lock.
    /// A lock handed to it meanwhile is not renewed (its auto-extend starts only when the future
    /// takes it), and if the future does not take it within the hand-over bound (two call
    /// timeouts and 50 ms: 1.05 s by default), it goes on to the next waiter or back to Redis;
    /// the future, polled again, queues anew. Dropping the future gives up its place at once.
    ///
    /// # Errors
    /// [`LockError::Busy`] when the wait budget is spent, [`LockError::Unavailable`] at once when
    /// Redis (or a majority of nodes) cannot be reached, [`LockError::InvalidResource`] and
    /// [`LockError::InvalidOptions`] for bad input.
    pub async fn acquire(&self, resource: &str, options: &LockOptions) -> Result<Guard, LockError> {
        validate_resource(resource)?;
        options.check()?;
        if options.fair {
            fair::check(self.protocol().node_count())?;
        }
        let span =
            tracing::debug_span!("fencelock.acquire", resource, fence = tracing::field::Empty);
        let outcome = wait_for_lock(&self.state, resource, options)
            .instrument(span.clone())
            .await;
        match &outcome {
            Ok(guard) => {
                span.record("fence", guard.fence());
            }
            Err(LockError::Busy { waited, .. }) => {
                observe::busy();
                tracing::debug!(parent: &span, ?waited, "lock busy");
            }
            Err(LockError::Unavailable { errors, .. }) => {
                observe::unavailable();
                tracing::warn!(parent: &span, %errors, "lock unavailable");
            }
            Err(_) => {}
        }
        outcome
    }

    /// One attempt, no waiting: `acquire` with a zero wait budget.
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Guard, LockError> {
        self.acquire(resource, &options.clone().wait(Duration::ZERO))
            .await
    }

    pub(crate) fn protocol(&self) -> &Protocol {
        &self.state.protocol
    }
}
