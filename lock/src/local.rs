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

use crate::sync::{oneshot, AtomicU64, Mutex, Shared};
use crate::{observe, LockOptions};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The queues of one locker, by resource. Generic over what is handed over (`G`: a `Guard` in
/// the crate; a plain token in the interleaving checker), so it knows nothing of locks.
#[derive(Debug)]
pub(crate) struct LocalQueues<G> {
    by_resource: Queues<G>,
    next_id: AtomicU64,
}

type Queues<G> = Shared<Mutex<HashMap<Arc<str>, LocalQueue<G>>>>;

impl<G> Default for LocalQueues<G> {
    fn default() -> Self {
        LocalQueues {
            by_resource: Shared::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
struct LocalQueue<G> {
    waiters: VecDeque<LocalWaiter<G>>,
    streak: u32,
    /// Another process released this lock since our last turn ended.
    contended: bool,
    /// Our waiters stay out of the race until then: another process's turn.
    yield_until: Option<Instant>,
}

impl<G> Default for LocalQueue<G> {
    fn default() -> Self {
        LocalQueue {
            waiters: VecDeque::new(),
            streak: 0,
            contended: false,
            yield_until: None,
        }
    }
}

/// A waiter of this process, as seen by a releasing holder.
#[derive(Debug)]
pub(crate) struct LocalWaiter<G> {
    id: u64,
    pub options: LockOptions,
    pub grant: oneshot::Sender<G>,
}

/// A waiter's side of its place in the local queue. Dropping it leaves the queue; a guard that
/// was handed over but never taken is dropped with it, which releases the lock.
///
/// Invariant: the queue never holds a waiter whose ticket is gone. The ticket leaves the queue
/// and closes its receiver under the queue's lock, and a holder puts a waiter back (after a
/// failed handoff) only under that lock and only if its receiver is still open.
#[derive(Debug)]
pub(crate) struct LocalTicket<G> {
    id: u64,
    resource: Arc<str>,
    queues: Queues<G>,
    /// `None` only while being dropped.
    granted: Option<oneshot::Receiver<G>>,
    /// What a holder handing over to this waiter needs to know (the TTL to give it).
    options: LockOptions,
}

impl<G> LocalQueues<G> {
    pub(crate) fn enqueue(&self, resource: &Arc<str>, options: LockOptions) -> LocalTicket<G> {
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
            queues: Shared::clone(&self.by_resource),
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
    pub(crate) fn next_for_handoff(
        &self,
        resource: &str,
        max_streak: u32,
    ) -> Option<LocalWaiter<G>> {
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
    fn put_back(&self, resource: &str, waiter: LocalWaiter<G>) {
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

    /// A handoff to `waiter` failed (the lock was not ours, or the nodes could not tell): the
    /// waiter goes back to the front of the queue, and the streak is over — whoever next holds
    /// the lock starts a new one (were it kept, the queue's entry would outlive its waiters).
    pub(crate) fn handoff_failed(&self, resource: &str, waiter: LocalWaiter<G>) {
        self.put_back(resource, waiter);
        self.end_streak(resource, Duration::ZERO);
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

impl<G> LocalTicket<G> {
    /// Resolves with the guard a releasing holder handed over; never resolves without a ticket.
    /// A holder that took this waiter out of the queue and then gave up half-way (its future
    /// dropped, the handoff abandoned) drops the sender: the waiter then takes its place back at
    /// the front of the queue and waits on.
    pub(crate) async fn granted(ticket: &mut Option<LocalTicket<G>>) -> G {
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

    fn with_queue<T>(&self, f: impl FnOnce(&mut LocalQueue<G>) -> T) -> Option<T> {
        let mut queues = self.queues.lock().expect("local queue lock");
        queues.get_mut(&self.resource).map(f)
    }

    /// A guard handed over already, if any.
    pub(crate) fn try_take(&mut self) -> Option<G> {
        self.granted.as_mut()?.try_recv().ok()
    }
}

impl<G> Drop for LocalTicket<G> {
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

#[cfg(all(test, fencelock_loom))]
mod model;

#[cfg(all(test, not(fencelock_loom)))]
mod interleavings {
    //! Every interleaving of a releasing holder and two waiters of one process over the real
    //! queue: the holder takes the next waiter and hands it the lock (`send`), or fails and puts
    //! it back (`put_back`), or is dropped half-way (its runtime shut down, its future
    //! cancelled); each waiter queues, looks for the lock, and may leave at any point. All the
    //! shared state sits behind one mutex and the channels, so each step below is atomic, and
    //! exploring every order of the steps explores every interleaving. Checked: no lost lock
    //! (a lock sent to a waiter that stays reaches it), no double hand-over, no waiter left
    //! behind (a waiter still waiting is in the queue, once), the queue never holds a waiter
    //! that left, the streak stays bounded, and nothing is left once everyone is gone.

    use super::*;
    use futures_util::FutureExt;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum HolderEnd {
        HandsOver,
        PutsBack,
        Abandons,
    }

    /// When a waiter leaves: after its first look, after its second, or never.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Leaves {
        AfterFirstLook,
        AfterSecondLook,
        Never,
    }

    const RESOURCE: &str = "r";

    struct Holder {
        end: HolderEnd,
        max_streak: u32,
        step: usize,
        taken: Option<LocalWaiter<u32>>,
        handed_to: Option<u64>,
        returned: bool,
    }

    struct Waiter {
        leaves: Leaves,
        step: usize,
        ticket: Option<LocalTicket<u32>>,
        id: Option<u64>,
        received: Vec<u32>,
        left: bool,
    }

    impl Holder {
        const STEPS: usize = 2;

        fn step(&mut self, queues: &LocalQueues<u32>) {
            match self.step {
                0 => self.taken = queues.next_for_handoff(RESOURCE, self.max_streak),
                _ => match (self.taken.take(), self.end) {
                    (None, _) => queues.end_streak(RESOURCE, Duration::ZERO),
                    (Some(waiter), HolderEnd::HandsOver) => {
                        let id = waiter.id;
                        match waiter.grant.send(7) {
                            Ok(()) => self.handed_to = Some(id),
                            Err(_) => {
                                self.returned = true;
                                queues.end_streak(RESOURCE, Duration::ZERO);
                            }
                        }
                    }
                    (Some(waiter), HolderEnd::PutsBack) => queues.handoff_failed(RESOURCE, waiter),
                    (Some(waiter), HolderEnd::Abandons) => {
                        drop(waiter);
                        queues.end_streak(RESOURCE, Duration::ZERO);
                    }
                },
            }
            self.step += 1;
        }
    }

    impl Waiter {
        const STEPS: usize = 3;

        fn look(&mut self) {
            if let Some(got) = LocalTicket::granted(&mut self.ticket).now_or_never() {
                self.received.push(got);
            }
        }

        fn step(&mut self, queues: &LocalQueues<u32>) {
            match self.step {
                0 => {
                    let ticket = queues.enqueue(&Arc::from(RESOURCE), LockOptions::new());
                    self.id = Some(ticket.id);
                    self.ticket = Some(ticket);
                }
                look => {
                    if !self.left && self.received.is_empty() {
                        self.look();
                        let leave = match self.leaves {
                            Leaves::AfterFirstLook => look == 1,
                            Leaves::AfterSecondLook => look == 2,
                            Leaves::Never => false,
                        };
                        if leave && self.received.is_empty() {
                            self.ticket = None;
                            self.left = true;
                        }
                    }
                }
            }
            self.step += 1;
        }

        fn waiting(&self) -> bool {
            !self.left && self.received.is_empty()
        }
    }

    fn queued_ids(queues: &LocalQueues<u32>) -> Vec<u64> {
        let map = queues.by_resource.lock().unwrap();
        map.get(RESOURCE)
            .map(|queue| queue.waiters.iter().map(|w| w.id).collect())
            .unwrap_or_default()
    }

    fn check_each_step(queues: &LocalQueues<u32>, max_streak: u32, case: &str) {
        let map = queues.by_resource.lock().unwrap();
        if let Some(queue) = map.get(RESOURCE) {
            assert!(queue.streak <= max_streak, "streak over its bound: {case}");
            for waiter in &queue.waiters {
                assert!(
                    !waiter.grant.is_closed(),
                    "a waiter that left is queued: {case}"
                );
            }
        }
    }

    /// Every order of `counts[i]` steps of actor `i`.
    fn schedules(counts: &[usize]) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        let mut left = counts.to_vec();
        let mut current = Vec::new();
        fn go(left: &mut [usize], current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if left.iter().all(|&n| n == 0) {
                out.push(current.clone());
                return;
            }
            for actor in 0..left.len() {
                if left[actor] > 0 {
                    left[actor] -= 1;
                    current.push(actor);
                    go(left, current, out);
                    current.pop();
                    left[actor] += 1;
                }
            }
        }
        go(&mut left, &mut current, &mut out);
        out
    }

    #[test]
    fn every_interleaving_of_a_holder_and_two_waiters() {
        let orders = schedules(&[Holder::STEPS, Waiter::STEPS, Waiter::STEPS]);
        let ends = [
            HolderEnd::HandsOver,
            HolderEnd::PutsBack,
            HolderEnd::Abandons,
        ];
        let leaves = [
            Leaves::AfterFirstLook,
            Leaves::AfterSecondLook,
            Leaves::Never,
        ];
        let mut runs = 0u64;
        for order in &orders {
            for end in ends {
                for max_streak in 0..=2 {
                    for first_leaves in leaves {
                        for second_leaves in leaves {
                            runs += 1;
                            run(order, end, max_streak, [first_leaves, second_leaves]);
                        }
                    }
                }
            }
        }
        eprintln!("{runs} interleavings checked");
    }

    fn run(order: &[usize], end: HolderEnd, max_streak: u32, leaves: [Leaves; 2]) {
        let case = format!("{order:?} {end:?} streak {max_streak} {leaves:?}");
        let queues = LocalQueues::<u32>::default();
        let mut holder = Holder {
            end,
            max_streak,
            step: 0,
            taken: None,
            handed_to: None,
            returned: false,
        };
        let mut waiters = leaves.map(|leaves| Waiter {
            leaves,
            step: 0,
            ticket: None,
            id: None,
            received: Vec::new(),
            left: false,
        });
        for &actor in order {
            match actor {
                0 => holder.step(&queues),
                n => waiters[n - 1].step(&queues),
            }
            check_each_step(&queues, max_streak, &case);
        }
        // Everyone looks once more: what was sent arrives, an abandoned hand-over is noticed.
        for waiter in &mut waiters {
            if waiter.waiting() {
                waiter.look();
            }
        }
        let queued = queued_ids(&queues);
        for waiter in &waiters {
            assert!(waiter.received.len() <= 1, "handed over twice: {case}");
            if waiter.waiting() {
                let places = queued.iter().filter(|&&id| Some(id) == waiter.id).count();
                assert_eq!(places, 1, "a waiter left behind (or queued twice): {case}");
            }
        }
        if let Some(to) = holder.handed_to {
            let recipient = waiters.iter().find(|w| w.id == Some(to)).unwrap();
            assert!(
                recipient.left || recipient.received == [7],
                "a lock sent to a waiter that stayed did not reach it: {case}"
            );
        }
        let delivered: usize = waiters.iter().map(|w| w.received.len()).sum();
        assert!(delivered <= 1, "one lock, two holders: {case}");
        assert!(
            !(holder.returned && delivered > 0),
            "the lock came back and was delivered too: {case}"
        );
        // The lock's next holder ends the streak when it releases for real: the waiter that
        // received it, or — if it left before taking it — the handed-over guard, dropped with
        // its channel, which releases (`Drop for Guard`).
        if holder.handed_to.is_some() {
            queues.end_streak(RESOURCE, Duration::ZERO);
        }
        // Everyone leaves: nothing may be left of the resource.
        for waiter in &mut waiters {
            waiter.ticket = None;
        }
        assert!(
            queues.by_resource.lock().unwrap().is_empty(),
            "an entry is left once everyone is gone: {case}"
        );
    }
}
