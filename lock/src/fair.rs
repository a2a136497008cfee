//! Fair mode in one place: FIFO holds among the fair callers of a resource, kept by a queue in
//! Redis (`scripts::FAIR_ACQUIRE`). A fair waiter joins the queue with its first acquisition
//! round and keeps its place across rounds by renewing a lease on it; only the head may take
//! the lock. What differs from an ordinary lock, and nothing else, is here:
//!
//! - it needs single-node mode ([`check`]): per-node queues cannot agree on one order;
//! - its round is `FAIR_ACQUIRE` under the waiter's id, and what it gives back differs
//!   ([`FairWaiter::give_back_if_lost`] keeps the waiter's place);
//! - a waiter that gives up or is dropped leaves the queue ([`FairPlace`]);
//! - it never sleeps past a third of its lease ([`cap_retry_delay`]), so each round renews it;
//! - it is never passed on in-process (a local waiter would jump the queue), so it reserves
//!   one fence per acquisition ([`FENCES_PER_ACQUISITION`]).

use crate::background;
use crate::node::{Call, Node, Retry};
use crate::resource::{FairKeys, ResourceKeys};
use crate::rounds::undo_call;
use crate::{scripts, LockError};
use std::sync::Arc;
use std::time::Duration;

/// A fair lock takes only its own fence: it is never passed on in-process.
pub(crate) const FENCES_PER_ACQUISITION: u64 = 1;

/// Fair locks need single-node mode.
pub(crate) fn check(nodes: usize) -> Result<(), LockError> {
    if nodes > 1 {
        return Err(LockError::InvalidOptions(
            "fair locks need single-node mode: per-node queues cannot agree on one order",
        ));
    }
    Ok(())
}

/// A fair waiter sleeps at most a third of its lease, so its place is renewed in time.
pub(crate) fn cap_retry_delay(delay: Duration, lease: Duration) -> Duration {
    delay.min(lease / 3)
}

/// One fair waiter of one resource: the id of its place in the queue, kept across rounds
/// (each round takes the lock under a token of its own, so a late undo of one round cannot
/// touch another).
pub(crate) struct FairWaiter<'a> {
    keys: &'a ResourceKeys,
    queue: FairKeys,
    id: &'a str,
    lease_ms: String,
}

impl<'a> FairWaiter<'a> {
    pub(crate) fn new(keys: &'a ResourceKeys, id: &'a str, lease: Duration) -> FairWaiter<'a> {
        FairWaiter {
            keys,
            queue: keys.fair(),
            id,
            lease_ms: lease.as_millis().to_string(),
        }
    }

    /// The round: take the lock for `token` if this waiter heads the queue, else join or stay
    /// in it (renewing its lease).
    pub(crate) fn take_call(&self, token: &str, ttl_ms: &str) -> Call {
        let keys = self.keys;
        Call::new(
            &scripts::FAIR_ACQUIRE,
            Retry::Never,
            &[
                &keys.lock,
                &keys.fence,
                &self.queue.queue,
                &self.queue.leases,
                &self.queue.tickets,
            ],
            &[self.id, ttl_ms, &self.lease_ms, token],
        )
    }

    /// A round whose outcome is unknown: give the lock back and leave the queue (the waiter
    /// rejoins with its next round).
    pub(crate) fn undo(&self, token: &str) -> Vec<Call> {
        vec![undo_call(self.keys, token), self.leave_call()]
    }

    /// A round won too late (fair mode is single-node, so that is the only way to win and
    /// lose): give the lock back and keep the place at the head of the queue.
    pub(crate) fn give_back_if_lost(&self, token: &str) -> Vec<Call> {
        vec![Call::new(
            &scripts::FAIR_GIVE_BACK,
            Retry::NoMeansUnknown,
            &[
                &self.keys.lock,
                &self.queue.queue,
                &self.queue.leases,
                &self.queue.tickets,
            ],
            &[token, self.id, &self.lease_ms],
        )]
    }

    fn leave_call(&self) -> Call {
        Call::new(
            &scripts::FAIR_LEAVE,
            Retry::NoMeansUnknown,
            &[&self.queue.queue, &self.queue.leases],
            &[self.id, &self.keys.channel],
        )
    }
}

/// A fair waiter's place in the Redis queue: left when the waiter gives up or is dropped (also
/// mid-round: it is armed before the round is sent), kept when it took the lock (the acquire
/// script already removed it from the queue).
#[derive(Default)]
pub(crate) struct FairPlace {
    /// The node the queue lives on (fair mode is single-node), the leave call and its timeout.
    queued: Option<(Arc<Node>, Call, Duration)>,
}

impl FairPlace {
    /// About to send a round for `waiter`: leave the queue if this place is dropped from now on.
    pub(crate) fn queued(&mut self, node: &Arc<Node>, waiter: &FairWaiter, timeout: Duration) {
        if self.queued.is_none() {
            self.queued = Some((Arc::clone(node), waiter.leave_call(), timeout));
        }
    }

    /// The lock was taken: the acquire script already removed us from the queue.
    pub(crate) fn taken(&mut self) {
        self.queued = None;
    }
}

impl Drop for FairPlace {
    fn drop(&mut self) {
        if let Some((node, leave, timeout)) = self.queued.take() {
            background::runtime().spawn(async move {
                let _ = node.run::<i64>(&leave, timeout).await;
            });
        }
    }
}
