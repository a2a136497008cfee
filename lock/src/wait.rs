//! The wait loop: one waiter's way from "I want this lock" to a [`Guard`] or an error, in
//! small named steps. It owns the backoff and jitter (the one retry loop of the crate), the
//! subscription to release messages, this process's queue of waiters for the resource, and a
//! fair waiter's place in the Redis queue.
//!
//! ```text
//! join_queued_waiters? ─▶ ask_redis ─▶ taken ─────────────────────────────▶ Guard
//!                            │  ├─ unavailable ─▶ handed_over? else ───────▶ Unavailable
//!                            │  └─ busy ─▶ past the deadline: handed_over? ▶ Busy
//!                            │            ├─ first time: start_listening ─┐
//!                            │            ├─ split vote: pause_after_split┤
//!                            │            └─ wait_for_turn ───────────────┤ (handed over ▶ Guard)
//!                            └────────────────────────────────────────────┘
//! ```

use crate::fair::{self, FairPlace, FairWaiter};
use crate::guard::{Guard, Handover, LockerState};
use crate::local::LocalTicket;
use crate::notify::{Listener, Subscription};
use crate::options::LockOptions;
use crate::protocol::{new_token, Round};
use crate::quorum::majority;
use crate::resource::ResourceKeys;
use crate::{observe, LockError};
use futures_util::future::select_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Waits for `resource` under `options` (checked already) until the wait budget is spent.
pub(crate) async fn wait_for_lock(
    locker: &Arc<LockerState>,
    resource: &str,
    options: &LockOptions,
) -> Result<Guard, LockError> {
    Waiter::new(locker, resource, options).run().await
}

/// One waiter's state across its rounds.
struct Waiter<'a> {
    locker: &'a Arc<LockerState>,
    options: &'a LockOptions,
    resource: Arc<str>,
    keys: Arc<ResourceKeys>,
    started: Instant,
    deadline: Instant,
    /// Whether a releasing holder of this process may hand the lock to this waiter.
    local_handoff: bool,
    /// Fair mode: the id of this waiter's place in the Redis queue, kept across rounds.
    fair_id: String,
    // Dropped in this order (declaration order): the fair place, the local ticket, the
    // subscriptions.
    fair_place: FairPlace,
    /// This waiter's place in the process's queue for the resource.
    ticket: Option<LocalTicket<Handover>>,
    /// Subscriptions to the resource's release channel, one per node; empty until the first
    /// busy round.
    listeners: Vec<Listener>,
    /// How many quiet waits (no release heard) so far: the backoff's exponent.
    quiet_waits: u32,
}

/// What to do after a wait.
enum AfterWait {
    /// A holder of this process handed the lock over.
    HandedOver(Guard),
    /// Ask Redis for the lock.
    AskRedis,
    /// Do not ask (a release this waiter is not the first to answer): wait again.
    WaitAgain,
}

impl<'a> Waiter<'a> {
    fn new(locker: &'a Arc<LockerState>, resource: &str, options: &'a LockOptions) -> Waiter<'a> {
        let started = Instant::now();
        let config = locker.protocol.config();
        Waiter {
            locker,
            options,
            resource: Arc::from(resource),
            keys: Arc::new(locker.protocol.keys(resource)),
            started,
            deadline: started + options.wait,
            // Fair locks are never passed on in-process: a local waiter would jump the queue.
            local_handoff: !options.fair && config.max_local_handoffs > 0,
            fair_id: new_token(),
            fair_place: FairPlace::default(),
            ticket: None,
            listeners: Vec::new(),
            quiet_waits: 0,
        }
    }

    async fn run(mut self) -> Result<Guard, LockError> {
        let mut ask_now = !self.join_queued_waiters().await;
        loop {
            let round = if ask_now {
                self.ask_redis().await
            } else {
                Round::Busy {
                    retry_after: None,
                    split: false,
                }
            };
            ask_now = true;
            let (retry_after, split) = match round {
                Round::Taken(grant) => {
                    self.fair_place.taken();
                    observe::acquired("redis", self.started.elapsed());
                    let guard = Guard::start(
                        Arc::clone(self.locker),
                        Arc::clone(&self.resource),
                        Arc::clone(&self.keys),
                        grant,
                        self.options.clone(),
                    );
                    return Ok(guard.taken());
                }
                Round::Unavailable(errors) => {
                    // A holder of this process may have handed us the lock meanwhile: that
                    // needed no Redis, and is not lost to an outage the round ran into.
                    if let Some(guard) = self.handed_over() {
                        return Ok(guard);
                    }
                    return Err(self.locker.protocol.unavailable(&self.resource, errors));
                }
                Round::Busy { retry_after, split } => (retry_after, split),
            };
            let now = Instant::now();
            if now >= self.deadline {
                // A holder may have handed us the lock while we were out asking Redis.
                if let Some(guard) = self.handed_over() {
                    return Ok(guard);
                }
                return Err(LockError::Busy {
                    resource: self.resource.to_string(),
                    waited: self.started.elapsed(),
                    retry_after,
                });
            }
            if self.listeners.is_empty() {
                // Subscribe (and queue for local handoff) *before* the next round, so that a
                // release between that round and the wait below cannot go unheard.
                self.start_listening().await;
                continue;
            }
            if split {
                self.pause_after_split(now).await;
                continue;
            }
            match self.wait_for_turn(retry_after, now).await {
                AfterWait::HandedOver(guard) => return Ok(guard),
                AfterWait::AskRedis => {}
                AfterWait::WaitAgain => ask_now = false,
            }
        }
    }

    /// Waiters of this process are already queued for the resource: join them rather than
    /// barge past (a holder that releases and comes straight back would otherwise win every
    /// race, starving its own queue and every other process). Whether it joined them (then it
    /// waits for its turn before asking Redis).
    async fn join_queued_waiters(&mut self) -> bool {
        let queued = self.local_handoff
            && !self.options.wait.is_zero()
            && self.locker.waiters.has_waiters(&self.resource);
        if queued {
            self.start_listening().await;
        }
        queued
    }

    /// One acquisition round. A fair waiter arms its place first: dropped mid-round, it must
    /// still leave the queue.
    async fn ask_redis(&mut self) -> Round {
        let protocol = &self.locker.protocol;
        if !self.options.fair {
            return protocol.take(&self.keys, self.options, None).await;
        }
        let waiter = FairWaiter::new(
            &self.keys,
            &self.fair_id,
            protocol.config().fair_waiter_lease,
        );
        self.fair_place.queued(
            protocol.fair_queue_node(),
            &waiter,
            protocol.config().node_timeout,
        );
        protocol.take(&self.keys, self.options, Some(&waiter)).await
    }

    /// Subscribes to release messages and, with local handoff, queues for a holder of this
    /// process to hand the lock over.
    async fn start_listening(&mut self) {
        self.listeners = self.listen().await;
        if self.local_handoff {
            self.ticket = Some(self.enqueue());
        }
    }

    fn enqueue(&self) -> LocalTicket<Handover> {
        self.locker
            .waiters
            .enqueue(&self.resource, self.options.clone())
    }

    /// Nobody holds the lock now: contenders that split the vote retry after a short random
    /// pause (Redlock's advice), so one of them soon wins a majority.
    async fn pause_after_split(&self, now: Instant) {
        let pause = Duration::from_micros(rand::rng().random_range(0..=3000));
        tokio::time::sleep(pause.min(self.deadline - now)).await;
    }

    /// Waits until a release is heard (answered only by the first local waiter), a holder of
    /// this process hands the lock over, or the backed-off timer fires — letting the process's
    /// other waiters go first after a contended streak.
    async fn wait_for_turn(&mut self, retry_after: Option<Duration>, now: Instant) -> AfterWait {
        let delay = self
            .retry_delay(self.quiet_waits, retry_after)
            .min(self.deadline - now);
        self.quiet_waits = self.quiet_waits.saturating_add(1);
        let timer = tokio::time::sleep(delay);
        tokio::pin!(timer);
        let mut timer_fired = false;
        loop {
            tokio::select! {
                biased;
                handover = LocalTicket::granted(&mut self.ticket) => {
                    match handover.take() {
                        Some(guard) if !guard.is_lost() => {
                            observe::acquired("handoff", self.started.elapsed());
                            return AfterWait::HandedOver(guard.taken());
                        }
                        // Handed over while this future was not polled: taken back after
                        // the hand-over bound (`None`), or its validity ran out meanwhile
                        // (not a lock any more; dropping it releases what is left of it).
                        // Queue again and ask Redis.
                        untaken => drop(untaken),
                    }
                    // (Field by field: the select's futures still borrow the listeners.)
                    self.ticket = Some(
                        self.locker
                            .waiters
                            .enqueue(&self.resource, self.options.clone()),
                    );
                    timer_fired = true;
                    break;
                }
                (heard, ..) = select_all(self.listeners.iter_mut().map(|l| Box::pin(l.released()))) => {
                    if let (true, Some(ticket)) = (heard.from_elsewhere, &self.ticket) {
                        ticket.heard_from_elsewhere();
                    }
                    // Of this process's waiters only the first answers a release message;
                    // the rest wait for a handoff (or their timer). One contender per process
                    // instead of a herd, which in quorum mode also avoids split votes.
                    if !self.ticket.as_ref().is_none_or(LocalTicket::is_first) {
                        continue;
                    }
                }
                () = &mut timer => timer_fired = true,
            }
            // This process just had its turn and others wait: let one of them go first.
            match self.ticket.as_ref().and_then(LocalTicket::yielding_until) {
                Some(until) if Instant::now() < self.deadline => {
                    timer.as_mut().reset(until.min(self.deadline));
                }
                _ => break,
            }
        }
        // Only the first local waiter answers release messages; the others are served by
        // handoff (or become first), and ask Redis only when their own backed-off timer
        // fires. A thousand waiters in one process then cost one contender per release,
        // not a thousand — and a first waiter whose future is alive but not polled (parked
        // in a `select!`) cannot keep the others from a lock that is free.
        if timer_fired || self.ticket.as_ref().is_none_or(LocalTicket::is_first) {
            AfterWait::AskRedis
        } else {
            AfterWait::WaitAgain
        }
    }

    /// The lock a holder of this process handed over while the waiter was out asking Redis,
    /// taken (its watchdog started) — unless its validity ran out before anyone took it, or
    /// the releaser took it back.
    fn handed_over(&mut self) -> Option<Guard> {
        let guard = self
            .ticket
            .as_mut()
            .and_then(LocalTicket::try_take)?
            .take()?;
        if guard.is_lost() {
            return None;
        }
        observe::acquired("handoff", self.started.elapsed());
        Some(guard.taken())
    }

    /// Subscribes to the resource's release channel on every node, and waits (up to the node
    /// timeout) until a majority confirmed. That is enough not to miss a release: it is
    /// announced on every node it frees, a majority at least, which shares a node with ours. A
    /// hung node, which would never confirm, costs nothing.
    async fn listen(&self) -> Vec<Listener> {
        let protocol = &self.locker.protocol;
        let (listeners, subscriptions): (Vec<Listener>, Vec<_>) = protocol
            .cluster()
            .nodes()
            .iter()
            .map(|node| node.notifier.listen(&self.keys.channel))
            .unzip();
        let needed = majority(listeners.len());
        let mut confirmations: FuturesUnordered<_> = subscriptions
            .into_iter()
            .map(Subscription::confirmed)
            .collect();
        let majority_confirmed = async {
            let mut confirmed = 0;
            while let Some(yes) = confirmations.next().await {
                confirmed += usize::from(yes);
                if confirmed >= needed {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(protocol.config().node_timeout, majority_confirmed).await;
        listeners
    }

    /// The single place that decides how long a waiter sleeps when it hears nothing: exponential
    /// from `retry_min_delay` to `retry_max_delay` with jitter (so waiters of several processes
    /// spread out), never past the holder's remaining TTL, and in fair mode never past a third of
    /// the waiter lease (each round renews the lease).
    fn retry_delay(&self, quiet_waits: u32, retry_after: Option<Duration>) -> Duration {
        let config = self.locker.protocol.config();
        let ceiling = config
            .retry_min_delay
            .saturating_mul(1 << quiet_waits.min(16))
            .min(config.retry_max_delay);
        let mut delay = rand::rng().random_range(ceiling / 2..=ceiling);
        if let Some(expires_in) = retry_after {
            delay = delay.min(expires_in + Duration::from_millis(1));
        }
        if self.options.fair {
            delay = fair::cap_retry_delay(delay, config.fair_waiter_lease);
        }
        delay
    }
}
