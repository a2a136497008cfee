//! Local handoff: waiters of this process queue here, so a releasing holder can pass the lock
//! straight to the next one (usually without a Redis round trip: see `Hold::pass_on`; else one)
//! instead of freeing it.
//!
//! The number of consecutive local handoffs per resource is bounded (`max_local_handoffs`);
//! then the lock is really released and every waiter, local or remote, races for it, so other
//! processes are never starved. The streak only resets on a real release.
//!
//! Taking turns: left alone, that race is a lottery the releasing process wins as often as any
//! other, so with three busy processes one of them can lose many races in a row (that was the
//! hot benchmark's wait tail). So when a streak ends while this process has waiters left *and*
//! it has heard another process release the lock since its previous turn (release messages
//! carry the locker id), its waiters stay out of the race for a short window (`yield_window`):
//! one of the others takes the next turn. Without such evidence nobody else is waiting, and
//! the process goes on at once. If the others are gone after all, the window is all it costs.

use crate::guard::Guard;
use crate::{observe, LockOptions};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct LocalQueues {
    by_resource: Arc<Mutex<HashMap<Arc<str>, LocalQueue>>>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct LocalQueue {
    waiters: VecDeque<LocalWaiter>,
    streak: u32,
    /// Another process released this lock since our last turn ended.
    contended: bool,
    /// Our waiters stay out of the race until then: another process's turn.
    yield_until: Option<Instant>,
}

/// A waiter of this process, as seen by a releasing holder.
#[derive(Debug)]
pub(crate) struct LocalWaiter {
    id: u64,
    pub options: LockOptions,
    pub grant: oneshot::Sender<Guard>,
}

/// A waiter's side of its place in the local queue. Dropping it leaves the queue; a guard that
/// was handed over but never taken is dropped with it, which releases the lock.
///
/// Invariant: the queue never holds a waiter whose ticket is gone. The ticket leaves the queue
/// and closes its receiver under the queue's lock, and a holder puts a waiter back (after a
/// failed handoff) only under that lock and only if its receiver is still open.
#[derive(Debug)]
pub(crate) struct LocalTicket {
    id: u64,
    resource: Arc<str>,
    queues: Arc<Mutex<HashMap<Arc<str>, LocalQueue>>>,
    /// `None` only while being dropped.
    granted: Option<oneshot::Receiver<Guard>>,
    /// What a holder handing over to this waiter needs to know (the TTL to give it).
    options: LockOptions,
}

impl LocalQueues {
    pub(crate) fn enqueue(&self, resource: &Arc<str>, options: LockOptions) -> LocalTicket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (grant, granted) = oneshot::channel();
        self.by_resource
            .lock()
            .expect("local queue lock")
            .entry(Arc::clone(resource))
            .or_default()
            .waiters
            .push_back(LocalWaiter {
                id,
                options: options.clone(),
                grant,
            });
        LocalTicket {
            id,
            resource: Arc::clone(resource),
            queues: Arc::clone(&self.by_resource),
            granted: Some(granted),
            options,
        }
    }

    /// Whether waiters of this process queue for `resource`.
    pub(crate) fn has_waiters(&self, resource: &str) -> bool {
        let queues = self.by_resource.lock().expect("local queue lock");
        queues
            .get(resource)
            .is_some_and(|queue| !queue.waiters.is_empty())
    }

    /// The next waiter to hand the lock to, unless the streak is used up (then the caller must
    /// release for real).
    pub(crate) fn next_for_handoff(&self, resource: &str, max_streak: u32) -> Option<LocalWaiter> {
        let mut queues = self.by_resource.lock().expect("local queue lock");
        let queue = queues.get_mut(resource)?;
        if queue.streak >= max_streak {
            return None;
        }
        let waiter = queue.waiters.pop_front()?;
        queue.streak += 1;
        Some(waiter)
    }

    /// A handoff failed before reaching the waiter: it keeps its place at the front, unless it
    /// gave up meanwhile (then it must not block the waiters behind it).
    pub(crate) fn put_back(&self, resource: &str, waiter: LocalWaiter) {
        let mut queues = self.by_resource.lock().expect("local queue lock");
        if waiter.grant.is_closed() {
            return;
        }
        queues
            .entry(Arc::from(resource))
            .or_default()
            .waiters
            .push_front(waiter);
    }

    /// The streak is over: the lock is about to be really released, or was found not ours. The
    /// next holder starts a new streak. With a `yield_window`, if our waiters are left and
    /// another process wants the lock too, it gets the next turn (see the module docs); this
    /// runs before the release goes out, so our own waiters cannot hear it first.
    pub(crate) fn end_streak(&self, resource: &str, yield_window: Duration) {
        let mut queues = self.by_resource.lock().expect("local queue lock");
        let Some(queue) = queues.get_mut(resource) else {
            return;
        };
        queue.streak = 0;
        if !yield_window.is_zero() {
            if queue.contended && !queue.waiters.is_empty() {
                queue.yield_until = Some(Instant::now() + yield_window);
                observe::yielded();
            }
            queue.contended = false;
        }
        if queue.waiters.is_empty() {
            queues.remove(resource);
        }
    }
}

impl LocalTicket {
    /// Resolves with the guard a releasing holder handed over; never resolves without a ticket.
    /// A holder that took this waiter out of the queue and then gave up half-way (its future
    /// dropped, the handoff abandoned) drops the sender: the waiter then takes its place back at
    /// the front of the queue and waits on.
    pub(crate) async fn granted(ticket: &mut Option<LocalTicket>) -> Guard {
        let Some(ticket) = ticket else {
            return std::future::pending().await;
        };
        loop {
            let receiver = ticket
                .granted
                .as_mut()
                .expect("a live ticket has its receiver");
            if let Ok(guard) = receiver.await {
                return guard;
            }
            ticket.rejoin_at_front();
        }
    }

    fn rejoin_at_front(&mut self) {
        let (grant, granted) = oneshot::channel();
        let mut queues = self.queues.lock().expect("local queue lock");
        let queue = queues.entry(Arc::clone(&self.resource)).or_default();
        queue.waiters.retain(|waiter| waiter.id != self.id);
        queue.waiters.push_front(LocalWaiter {
            id: self.id,
            options: self.options.clone(),
            grant,
        });
        self.granted = Some(granted);
    }

    /// Whether this waiter is first in the local queue.
    pub(crate) fn is_first(&self) -> bool {
        self.with_queue(|queue| queue.waiters.front().map(|first| first.id))
            .flatten()
            .is_none_or(|first| first == self.id)
    }

    /// Another process released the lock: it contends for it, and has had its turn.
    pub(crate) fn heard_from_elsewhere(&self) {
        self.with_queue(|queue| {
            queue.contended = true;
            queue.yield_until = None;
        });
    }

    /// Until when this process leaves the lock to the others, if it is yielding now.
    pub(crate) fn yielding_until(&self) -> Option<Instant> {
        self.with_queue(|queue| queue.yield_until)
            .flatten()
            .filter(|until| *until > Instant::now())
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut LocalQueue) -> T) -> Option<T> {
        let mut queues = self.queues.lock().expect("local queue lock");
        queues.get_mut(&self.resource).map(f)
    }

    /// A guard handed over already, if any.
    pub(crate) fn try_take(&mut self) -> Option<Guard> {
        self.granted.as_mut()?.try_recv().ok()
    }
}

impl Drop for LocalTicket {
    fn drop(&mut self) {
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        if let Some(queue) = queues.get_mut(&self.resource) {
            queue.waiters.retain(|waiter| waiter.id != self.id);
            if queue.waiters.is_empty() && queue.streak == 0 {
                queues.remove(&self.resource);
            }
        }
        // Closed under the lock: a holder about to put this waiter back sees it gone.
        drop(self.granted.take());
    }
}
