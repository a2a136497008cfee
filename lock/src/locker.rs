//! [`Locker`]: acquisition and the one retry loop. The node-level rounds it runs live in
//! `rounds.rs`; this module decides what to ask and what to do with the answers.

use crate::background;
use crate::error::{NodeError, NodeErrors};
use crate::guard::{Guard, Handover, Hold};
use crate::local::{LocalQueues, LocalTicket};
use crate::node::{Node, OwnedCall, Retry, ScriptCall};
use crate::notify::{Listener, Subscription};
use crate::options::{LockOptions, LockerConfig};
use crate::quorum::majority;
use crate::quorum::TakeResult;
use crate::resource::{validate_resource, ResourceKeys};
use crate::rounds::{release_call, undo_call, Cluster, Grant, Terms, Verdict};
use crate::{observe, scripts, LockError};
use futures_util::future::select_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
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
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Signs this locker's release messages, so waiters elsewhere can tell processes apart.
    pub(crate) id: Arc<str>,
    pub(crate) cluster: Cluster,
    pub(crate) config: LockerConfig,
    pub(crate) local: LocalQueues<Handover>,
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

/// The outcome of one acquisition round.
enum Attempt {
    Acquired(Grant),
    Busy {
        retry_after: Option<Duration>,
        /// Quorum mode: we won some nodes but not a majority (a split vote with other
        /// contenders), and gave them back.
        split: bool,
    },
    Unavailable(Vec<NodeError>),
}

/// Why a handoff to a local waiter did not happen.
pub(crate) enum HandoffFailed {
    NotOurs,
    Unavailable(LockError),
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
        let id: Arc<str> = Arc::from(new_token());
        let quorum = config.node_count() > 1;
        let nodes = config
            .clients()
            .map_err(LockError::Config)?
            .into_iter()
            .enumerate()
            .map(|(index, client)| {
                Node::new(
                    index,
                    client,
                    config.pool_size,
                    config.node_timeout,
                    &id,
                    quorum,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(LockError::Config)?;
        Ok(Locker {
            inner: Arc::new(Inner {
                id,
                cluster: Cluster::new(nodes, config.node_timeout),
                config,
                local: LocalQueues::default(),
            }),
        })
    }

    /// Single-node or quorum mode, from the number of URLs.
    pub fn mode(&self) -> Mode {
        match self.inner.cluster.len() {
            1 => Mode::Single,
            nodes => Mode::Quorum { nodes },
        }
    }

    /// The configuration this locker was built from.
    pub fn config(&self) -> &LockerConfig {
        &self.inner.config
    }

    /// PINGs every node (bounded by the node timeout) and reports how many answered.
    pub async fn health(&self) -> Health {
        let up = self.inner.cluster.ping_all().await;
        let nodes = self.inner.cluster.len();
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
        if options.fair && self.inner.cluster.len() > 1 {
            return Err(LockError::InvalidOptions(
                "fair locks need single-node mode: per-node queues cannot agree on one order",
            ));
        }
        let span =
            tracing::debug_span!("fencelock.acquire", resource, fence = tracing::field::Empty);
        let outcome = Arc::clone(&self.inner)
            .wait_for_lock(resource, options)
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
}

impl Inner {
    async fn wait_for_lock(
        self: Arc<Self>,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Guard, LockError> {
        let started = Instant::now();
        let deadline = started + options.wait;
        let keys = Arc::new(ResourceKeys::new(&self.config.prefix, resource));
        let resource: Arc<str> = Arc::from(resource);
        // Fair mode: the waiter's place in the queue, kept across attempts. (Each attempt takes
        // the lock under a token of its own, so a late undo of one attempt cannot touch another.)
        let waiter_id = new_token();
        let mut listeners: Vec<Listener> = Vec::new();
        let mut local: Option<LocalTicket<Handover>> = None;
        let mut fair_place = FairPlace::default();
        let mut attempt = 0u32;
        let local_handoff = !options.fair && self.config.max_local_handoffs > 0;
        let mut attempt_now = true;
        if local_handoff && !options.wait.is_zero() && self.local.has_waiters(&resource) {
            // Waiters of this process are already queued: join them rather than barge past
            // (a holder that releases and comes straight back would otherwise win every race,
            // starving its own queue and every other process).
            listeners = self.listen(&keys).await;
            local = Some(self.local.enqueue(&resource, options.clone()));
            attempt_now = false;
        }
        loop {
            if options.fair && attempt_now {
                // Before the attempt: a fair waiter dropped mid-attempt must still leave the queue.
                fair_place.queued(&self, &keys, &waiter_id);
            }
            let outcome = if attempt_now {
                self.attempt(&keys, &waiter_id, options).await
            } else {
                Attempt::Busy {
                    retry_after: None,
                    split: false,
                }
            };
            attempt_now = true;
            let (retry_after, split) = match outcome {
                Attempt::Acquired(grant) => {
                    fair_place.taken();
                    observe::acquired("redis", started.elapsed());
                    return Ok(Guard::start(
                        Arc::clone(&self),
                        resource,
                        keys,
                        grant,
                        options.clone(),
                    )
                    .taken());
                }
                Attempt::Unavailable(errors) => {
                    // A holder of this process may have handed us the lock meanwhile: that
                    // needed no Redis, and is not lost to an outage the attempt ran into.
                    if let Some(guard) = handed_over(&mut local, started) {
                        return Ok(guard);
                    }
                    return Err(self.unavailable(&resource, errors));
                }
                Attempt::Busy { retry_after, split } => (retry_after, split),
            };
            let now = Instant::now();
            if now >= deadline {
                // A holder may have handed us the lock while we were out asking Redis.
                if let Some(guard) = handed_over(&mut local, started) {
                    return Ok(guard);
                }
                return Err(LockError::Busy {
                    resource: resource.to_string(),
                    waited: started.elapsed(),
                    retry_after,
                });
            }
            if listeners.is_empty() {
                // Subscribe (and queue for local handoff) *before* the next attempt, so that a
                // release between that attempt and the wait below cannot go unheard.
                listeners = self.listen(&keys).await;
                if local_handoff {
                    local = Some(self.local.enqueue(&resource, options.clone()));
                }
                continue;
            }
            if split {
                // Nobody holds the lock now: contenders that split the vote retry after a short
                // random pause (Redlock's advice), so one of them soon wins a majority.
                let pause = Duration::from_micros(rand::rng().random_range(0..=3000));
                tokio::time::sleep(pause.min(deadline - now)).await;
                continue;
            }
            let delay = self
                .retry_delay(attempt, retry_after, options)
                .min(deadline - now);
            attempt = attempt.saturating_add(1);
            let timer = tokio::time::sleep(delay);
            tokio::pin!(timer);
            let mut timer_fired = false;
            loop {
                tokio::select! {
                    biased;
                    handover = LocalTicket::granted(&mut local) => {
                        match handover.take() {
                            Some(guard) if !guard.is_lost() => {
                                observe::acquired("handoff", started.elapsed());
                                return Ok(guard.taken());
                            }
                            // Handed over while this future was not polled: taken back after
                            // the hand-over bound (`None`), or its validity ran out meanwhile
                            // (not a lock any more; dropping it releases what is left of it).
                            // Queue again and ask Redis.
                            untaken => drop(untaken),
                        }
                        local = Some(self.local.enqueue(&resource, options.clone()));
                        timer_fired = true;
                        break;
                    }
                    (heard, ..) = select_all(listeners.iter_mut().map(|l| Box::pin(l.released()))) => {
                        if let (true, Some(ticket)) = (heard.from_elsewhere, &local) {
                            ticket.heard_from_elsewhere();
                        }
                        // Of this process's waiters only the first answers a release message;
                        // the rest wait for a handoff (or their timer). One contender per process
                        // instead of a herd, which in quorum mode also avoids split votes.
                        if !local.as_ref().is_none_or(LocalTicket::is_first) {
                            continue;
                        }
                    }
                    () = &mut timer => timer_fired = true,
                }
                // This process just had its turn and others wait: let one of them go first.
                match local.as_ref().and_then(LocalTicket::yielding_until) {
                    Some(until) if Instant::now() < deadline => {
                        timer.as_mut().reset(until.min(deadline));
                    }
                    _ => break,
                }
            }
            // Only the first local waiter answers release messages; the others are served by
            // handoff (or become first), and ask Redis only when their own backed-off timer
            // fires. A thousand waiters in one process then cost one contender per release,
            // not a thousand — and a first waiter whose future is alive but not polled (parked
            // in a `select!`) cannot keep the others from a lock that is free.
            attempt_now = timer_fired || local.as_ref().is_none_or(LocalTicket::is_first);
        }
    }

    /// Subscribes to the resource's release channel on every node, and waits (up to the node
    /// timeout) until a majority confirmed. That is enough not to miss a release: it is
    /// announced on every node it frees, a majority at least, which shares a node with ours. A
    /// hung node, which would never confirm, costs nothing.
    async fn listen(&self, keys: &ResourceKeys) -> Vec<Listener> {
        let (listeners, subscriptions): (Vec<Listener>, Vec<_>) = self
            .cluster
            .nodes()
            .iter()
            .map(|node| node.notifier.listen(&keys.channel))
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
        let _ = tokio::time::timeout(self.config.node_timeout, majority_confirmed).await;
        listeners
    }

    /// The single place that decides how long a waiter sleeps when it hears nothing: exponential
    /// from `retry_min_delay` to `retry_max_delay` with jitter (so waiters of several processes
    /// spread out), never past the holder's remaining TTL, and in fair mode never past a third of
    /// the waiter lease (each attempt renews the lease).
    fn retry_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        options: &LockOptions,
    ) -> Duration {
        let config = &self.config;
        let ceiling = config
            .retry_min_delay
            .saturating_mul(1 << attempt.min(16))
            .min(config.retry_max_delay);
        let mut delay = rand::rng().random_range(ceiling / 2..=ceiling);
        if let Some(expires_in) = retry_after {
            delay = delay.min(expires_in + Duration::from_millis(1));
        }
        if options.fair {
            delay = delay.min(config.fair_waiter_lease / 3);
        }
        delay
    }

    /// One acquisition round on every node at once, under a fresh token.
    async fn attempt(
        &self,
        keys: &ResourceKeys,
        waiter_id: &str,
        options: &LockOptions,
    ) -> Attempt {
        observe::attempt();
        let ttl = options.effective_ttl();
        let ttl_ms = ttl.as_millis().to_string();
        let token = new_token();
        let terms = Terms {
            ttl,
            reserve: self.fence_reserve(options),
            stop_on_split: true,
            undo_unsent_until: None,
        };
        let reserve = terms.reserve.to_string();
        let fair_keys = options.fair.then(|| keys.fair());
        let lease_ms: String;
        let call = match &fair_keys {
            Some(fair_keys) => {
                lease_ms = self.config.fair_waiter_lease.as_millis().to_string();
                ScriptCall {
                    script: &scripts::FAIR_ACQUIRE,
                    retry: Retry::Never,
                    keys: &[
                        &keys.lock,
                        &keys.fence,
                        &fair_keys.queue,
                        &fair_keys.leases,
                        &fair_keys.tickets,
                    ],
                    args: &[waiter_id, &ttl_ms, &lease_ms, &token],
                }
            }
            None => ScriptCall {
                script: &scripts::ACQUIRE,
                retry: Retry::Never,
                keys: &[&keys.lock, &keys.fence],
                args: &[&token, &ttl_ms, &reserve],
            },
        };
        // Give the lock back; a fair waiter also leaves the queue.
        let undo = || {
            let mut calls = vec![undo_call(keys, &token)];
            if let Some(fair_keys) = &fair_keys {
                calls.push(OwnedCall {
                    script: &scripts::FAIR_LEAVE,
                    keys: vec![fair_keys.queue.clone(), fair_keys.leases.clone()],
                    args: vec![waiter_id.to_string(), keys.channel.clone()],
                });
            }
            calls
        };
        // A won round that came back too late (fair mode is single-node, so that is the only
        // way to win and lose): a fair waiter gives the lock back and keeps its place.
        let give_back = || match &fair_keys {
            Some(fair_keys) => vec![OwnedCall {
                script: &scripts::FAIR_GIVE_BACK,
                keys: vec![
                    keys.lock.clone(),
                    fair_keys.queue.clone(),
                    fair_keys.leases.clone(),
                    fair_keys.tickets.clone(),
                ],
                args: vec![
                    token.clone(),
                    waiter_id.to_string(),
                    self.config.fair_waiter_lease.as_millis().to_string(),
                ],
            }],
            None => vec![undo_call(keys, &token)],
        };
        let not_taken = match self
            .cluster
            .take(keys, &call, &token, &undo, &give_back, terms)
            .await
        {
            Ok(grant) => return Attempt::Acquired(grant),
            Err(not_taken) => not_taken,
        };
        match not_taken.result {
            TakeResult::Unreachable => Attempt::Unavailable(not_taken.errors),
            TakeResult::Won | TakeResult::Refused | TakeResult::Split => Attempt::Busy {
                retry_after: not_taken.retry_after,
                split: not_taken.split,
            },
        }
    }

    /// Releases `token`'s lock on every node; `keep` > 0 leaves the key to expire then (min_hold).
    /// `Ok(true)` when a majority confirmed the lock was ours, `Ok(false)` when the refusals
    /// alone rule that out, `Err` when too few answered to tell. Nodes that did not answer get
    /// the release from the background until they do, for at most `expires_within` (by then
    /// the key has expired anyway).
    pub(crate) async fn release_on_nodes(
        &self,
        keys: &ResourceKeys,
        token: &str,
        keep: Duration,
        timeout: Duration,
        expires_within: Duration,
    ) -> Result<bool, Vec<NodeError>> {
        let keep_ms = keep.as_millis().to_string();
        let call = ScriptCall {
            script: &scripts::RELEASE,
            retry: Retry::NoMeansUnknown,
            keys: &[&keys.lock],
            args: &[token, &keep_ms, &keys.channel, &self.id],
        };
        let resend = || release_call(keys, token, &keep_ms, Some(&self.id));
        let resend_until = Instant::now() + expires_within;
        match self
            .cluster
            .confirm(&call, timeout, Some((&resend, resend_until)))
            .await
        {
            Verdict::Confirmed => Ok(true),
            Verdict::Refused => Ok(false),
            Verdict::Undecided(errors) => Err(errors),
        }
    }

    /// Resets the TTL of `token`'s lock, waiting at most `timeout` per node. `Ok(Some(valid
    /// until))` on a majority, `Ok(None)` when the lock is no longer ours, `Err` when too few
    /// nodes answered.
    pub(crate) async fn extend_on_nodes(
        &self,
        keys: &ResourceKeys,
        token: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Option<Instant>, Vec<NodeError>> {
        let ttl_ms = ttl.as_millis().to_string();
        let call = ScriptCall {
            script: &scripts::EXTEND,
            retry: Retry::Safely,
            keys: &[&keys.lock, &keys.fence],
            args: &[token, &ttl_ms],
        };
        let started = Instant::now();
        let timeout = timeout.min(self.cluster.call_timeout(ttl));
        match self.cluster.confirm(&call, timeout, None).await {
            // The key now lives until at least `started + ttl` (the script ran after `started`).
            Verdict::Confirmed => Ok(Some(started + ttl - crate::quorum::drift(ttl))),
            Verdict::Refused => Ok(None),
            Verdict::Undecided(errors) => Err(errors),
        }
    }

    /// Whether `token` still owns the lock on a majority: `Ok(true)`, `Ok(false)` when the
    /// refusals alone say it does not, `Err` when too few answered to tell.
    pub(crate) async fn confirm_on_nodes(
        &self,
        keys: &ResourceKeys,
        token: &str,
        timeout: Duration,
    ) -> Result<bool, Vec<NodeError>> {
        let call = ScriptCall {
            script: &scripts::CONFIRM,
            retry: Retry::Safely,
            keys: &[&keys.lock],
            args: &[token],
        };
        match self.cluster.confirm(&call, timeout, None).await {
            Verdict::Confirmed => Ok(true),
            Verdict::Refused => Ok(false),
            Verdict::Undecided(errors) => Err(errors),
        }
    }

    /// Passes `hold`'s lock to a waiter of this process with `options`: new token, full TTL,
    /// fresh fence, one round trip, and the lock is never free in between.
    pub(crate) async fn handoff(
        &self,
        hold: &Hold,
        options: &LockOptions,
    ) -> Result<Grant, HandoffFailed> {
        let ttl = options.effective_ttl();
        let ttl_ms = ttl.as_millis().to_string();
        let token = new_token();
        // The old lock lives at most its TTL past now (or what is left of a longer extension).
        let old_lock_left = hold
            .lease
            .valid_until()
            .saturating_duration_since(Instant::now())
            .max(hold.options.effective_ttl());
        let terms = Terms {
            ttl,
            reserve: self.fence_reserve(options),
            stop_on_split: false,
            undo_unsent_until: Some(
                Instant::now()
                    + old_lock_left
                    + crate::quorum::drift(old_lock_left)
                    + self.config.node_timeout,
            ),
        };
        let reserve = terms.reserve.to_string();
        let call = ScriptCall {
            script: &scripts::HANDOFF,
            retry: Retry::Never,
            keys: &[&hold.keys.lock, &hold.keys.fence],
            args: &[&hold.token, &token, &ttl_ms, &reserve],
        };
        // A handoff that did not go through (or whose outcome is unknown) frees the lock under
        // both tokens, so nothing lingers, and announces it like a release: the waiters (ours,
        // put back first in line, and other processes') ask Redis at once rather than at their
        // timers.
        let undo = || {
            [&token, &hold.token]
                .map(|token| release_call(&hold.keys, token, "0", Some(&self.id)))
                .to_vec()
        };
        match self
            .cluster
            .take(&hold.keys, &call, &token, &undo, &undo, terms)
            .await
        {
            Ok(grant) => Ok(grant),
            // "Not ours" only when the refusals alone say so; a split or silent handoff may
            // have found the lock ours on a majority (it was undone: the lock is free now).
            Err(not_taken) => match not_taken.result {
                TakeResult::Refused => Err(HandoffFailed::NotOurs),
                TakeResult::Won | TakeResult::Split | TakeResult::Unreachable => Err(
                    HandoffFailed::Unavailable(self.unavailable(&hold.resource, not_taken.errors)),
                ),
            },
        }
    }

    /// Fair mode: leave the queue (a waiter that gave up or was cancelled).
    fn leave_fair_queue(self: &Arc<Self>, keys: &Arc<ResourceKeys>, waiter_id: &str) {
        let inner = Arc::clone(self);
        let keys = Arc::clone(keys);
        let waiter_id = waiter_id.to_string();
        background::runtime().spawn(async move {
            let fair_keys = keys.fair();
            let call = ScriptCall {
                script: &scripts::FAIR_LEAVE,
                retry: Retry::NoMeansUnknown,
                keys: &[&fair_keys.queue, &fair_keys.leases],
                args: &[&waiter_id, &keys.channel],
            };
            let _ = inner.cluster.on_first(&call).await;
        });
    }

    pub(crate) fn unavailable(&self, resource: &str, errors: Vec<NodeError>) -> LockError {
        let nodes = self.cluster.len();
        LockError::Unavailable {
            resource: resource.to_string(),
            nodes,
            reachable: nodes - errors.len(),
            needed: majority(nodes),
            errors: NodeErrors(errors),
        }
    }

    /// How many fences an acquisition takes: its own, plus one for each local handoff the
    /// streak bound allows (passed on without a round trip); just its own where the lock is
    /// never handed on locally (fair mode, local handoff off).
    fn fence_reserve(&self, options: &LockOptions) -> u64 {
        if options.fair {
            1
        } else {
            u64::from(self.config.max_local_handoffs) + 1
        }
    }

    pub(crate) fn max_local_handoffs(&self) -> u32 {
        self.config.max_local_handoffs
    }

    pub(crate) fn confirms_pass_on(&self) -> bool {
        self.config.confirm_pass_on
    }

    pub(crate) fn yield_window(&self) -> Duration {
        self.config.yield_window
    }

    pub(crate) fn node_timeout(&self) -> Duration {
        self.config.node_timeout
    }

    pub(crate) fn release_timeout(&self, ttl: Duration) -> Duration {
        self.cluster.call_timeout(ttl)
    }

    /// How long a waiter has to take a lock handed to it before it goes on (see
    /// `guard::Handover`). A waiter being polled takes it at once, or — out asking Redis at
    /// that moment — once its attempt ends: within two calls (the round, and the give-back of
    /// a lost one), each bounded by the call timeout. A waiter whose future is parked or whose
    /// runtime is blocked must not keep the lock from everyone for the rest of its TTL.
    pub(crate) fn handover_bound(&self, ttl: Duration) -> Duration {
        const MARGIN: Duration = Duration::from_millis(50);
        self.cluster.call_timeout(ttl) * 2 + MARGIN
    }
}

/// The lock a holder of this process handed to `local` while the waiter was out asking Redis,
/// taken (its watchdog started) — unless its validity ran out before anyone took it, or the
/// releaser took it back.
fn handed_over(local: &mut Option<LocalTicket<Handover>>, started: Instant) -> Option<Guard> {
    let guard = local.as_mut().and_then(LocalTicket::try_take)?.take()?;
    if guard.is_lost() {
        return None;
    }
    observe::acquired("handoff", started.elapsed());
    Some(guard.taken())
}

/// A random owner token: 128 bits, so no two holds ever share one.
fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fair waiter's place in the Redis queue; leaves it if the waiter gives up or is dropped.
#[derive(Default)]
struct FairPlace {
    queued: Option<(Arc<Inner>, Arc<ResourceKeys>, String)>,
}

impl FairPlace {
    fn queued(&mut self, inner: &Arc<Inner>, keys: &Arc<ResourceKeys>, waiter_id: &str) {
        if self.queued.is_none() {
            self.queued = Some((Arc::clone(inner), Arc::clone(keys), waiter_id.to_string()));
        }
    }

    /// The acquire script already removed us from the queue.
    fn taken(&mut self) {
        self.queued = None;
    }
}

impl Drop for FairPlace {
    fn drop(&mut self) {
        if let Some((inner, keys, token)) = self.queued.take() {
            inner.leave_fair_queue(&keys, &token);
        }
    }
}
