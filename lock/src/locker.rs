//! [`Locker`]: acquisition, the one retry loop, and the node-level rounds (acquire, release,
//! extend, handoff) that count answers against the majority.

use crate::background;
use crate::error::{NodeError, NodeErrors};
use crate::guard::{Grant, Guard, Hold};
use crate::local::{LocalQueues, LocalTicket};
use crate::node::{Node, ScriptCall};
use crate::notify::Listener;
use crate::options::{LockOptions, LockerConfig};
use crate::quorum::{majority, validity};
use crate::resource::{validate_resource, ResourceKeys};
use crate::{observe, scripts, LockError};
use futures_util::future::{join_all, select_all};
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
/// # async fn run() -> Result<(), dlock::LockError> {
/// use dlock::{Locker, LockerConfig, LockOptions};
/// let locker = Locker::new(LockerConfig::new(["redis://127.0.0.1:6379/"]))?;
/// let guard = locker.acquire("product:42", &LockOptions::new()).await?;
/// println!("holding with fence {}", guard.fence());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Locker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Signs this locker's release messages, so waiters elsewhere can tell processes apart.
    id: Arc<str>,
    nodes: Vec<Node>,
    config: LockerConfig,
    pub(crate) local: LocalQueues,
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

/// When a round started, the TTL it asked for, and its per-node budget.
#[derive(Debug, Clone, Copy)]
struct Round {
    started: Instant,
    ttl: Duration,
    timeout: Duration,
}

/// How a yes/no round over the nodes came out.
enum Verdict {
    Confirmed,
    Refused,
    Unreachable(Vec<NodeError>),
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
        let nodes = config
            .urls
            .iter()
            .enumerate()
            .map(|(index, url)| Node::new(index, url, config.pool_size, config.node_timeout, &id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LockError::Config)?;
        Ok(Locker {
            inner: Arc::new(Inner {
                id,
                nodes,
                config,
                local: LocalQueues::default(),
            }),
        })
    }

    /// Single-node or quorum mode, from the number of URLs.
    pub fn mode(&self) -> Mode {
        match self.inner.nodes.len() {
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
        let answers = join_all(self.inner.nodes.iter().map(Node::ping)).await;
        let up = answers.into_iter().filter(|ok| *ok).count();
        let nodes = self.inner.nodes.len();
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
    /// # Errors
    /// [`LockError::Busy`] when the wait budget is spent, [`LockError::Unavailable`] at once when
    /// Redis (or a majority of nodes) cannot be reached, [`LockError::InvalidResource`] and
    /// [`LockError::InvalidOptions`] for bad input.
    pub async fn acquire(&self, resource: &str, options: &LockOptions) -> Result<Guard, LockError> {
        validate_resource(resource)?;
        options.check()?;
        if options.fair && self.inner.nodes.len() > 1 {
            return Err(LockError::InvalidOptions(
                "fair locks need single-node mode: per-node queues cannot agree on one order",
            ));
        }
        let span = tracing::debug_span!("dlock.acquire", resource, fence = tracing::field::Empty);
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
        // In fair mode the token is also the waiter's place in the queue.
        let token = new_token();
        let mut listeners: Vec<Listener> = Vec::new();
        let mut local: Option<LocalTicket> = None;
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
            let outcome = if attempt_now {
                self.attempt(&keys, &token, options).await
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
                    ));
                }
                Attempt::Unavailable(errors) => return Err(self.unavailable(&resource, errors)),
                Attempt::Busy { retry_after, split } => (retry_after, split),
            };
            if options.fair {
                fair_place.queued(&self, &keys, &token);
            }
            let now = Instant::now();
            if now >= deadline {
                // A holder may have handed us the lock while we were out asking Redis.
                if let Some(guard) = local.as_mut().and_then(LocalTicket::try_take) {
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
            loop {
                tokio::select! {
                    biased;
                    Some(guard) = LocalTicket::granted(&mut local) => {
                        observe::acquired("handoff", started.elapsed());
                        return Ok(guard);
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
                    () = &mut timer => {}
                }
                // This process just had its turn and others wait: let one of them go first.
                match local.as_ref().and_then(LocalTicket::yielding_until) {
                    Some(until) if Instant::now() < deadline => {
                        timer.as_mut().reset(until.min(deadline));
                    }
                    _ => break,
                }
            }
            // Only the first local waiter asks Redis; the others are served by handoff (or
            // become first). A thousand waiters in one process then cost one poller, not a
            // thousand.
            attempt_now = local.as_ref().is_none_or(LocalTicket::is_first);
        }
    }

    /// Subscribes to the resource's release channel on every node.
    async fn listen(&self, keys: &ResourceKeys) -> Vec<Listener> {
        let confirm = self.config.node_timeout;
        join_all(
            self.nodes
                .iter()
                .map(|node| node.notifier.listen(&keys.channel, confirm)),
        )
        .await
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

    /// Per-node budget for one call: the configured node timeout, and in quorum mode at most a
    /// tenth of the TTL, so that slow nodes cannot use up the validity of the lock.
    fn call_timeout(&self, ttl: Duration) -> Duration {
        if self.nodes.len() == 1 {
            self.config.node_timeout
        } else {
            self.config.node_timeout.min(ttl / 10)
        }
    }

    async fn on_all_nodes(
        &self,
        call: &ScriptCall<'_>,
        timeout: Duration,
    ) -> Vec<Result<i64, NodeError>> {
        join_all(self.nodes.iter().map(|node| node.run::<i64>(call, timeout))).await
    }

    /// One acquisition round on every node at once.
    async fn attempt(&self, keys: &ResourceKeys, token: &str, options: &LockOptions) -> Attempt {
        observe::attempt();
        let ttl = options.effective_ttl();
        let ttl_ms = ttl.as_millis().to_string();
        let timeout = self.call_timeout(ttl);
        let (fair_keys, lease_ms);
        let call = if options.fair {
            fair_keys = keys.fair();
            lease_ms = self.config.fair_waiter_lease.as_millis().to_string();
            ScriptCall {
                script: &scripts::FAIR_ACQUIRE,
                repeatable: false,
                keys: &[
                    &keys.lock,
                    &keys.fence,
                    &fair_keys.queue,
                    &fair_keys.leases,
                    &fair_keys.tickets,
                ],
                args: &[token, &ttl_ms, &lease_ms],
            }
        } else {
            ScriptCall {
                script: &scripts::ACQUIRE,
                repeatable: false,
                keys: &[&keys.lock, &keys.fence],
                args: &[token, &ttl_ms],
            }
        };
        let started = Instant::now();
        let replies = self.on_all_nodes(&call, timeout).await;
        let (issued, busy, errors) = sort_replies(replies);
        let retry_after = busy.iter().filter_map(|(_, expires_in)| *expires_in).min();
        let others: Vec<usize> = busy.iter().map(|(node, _)| *node).collect();
        let round = Round {
            started,
            ttl,
            timeout,
        };
        if let Some(grant) = self.grant(keys, token, &issued, &others, round).await {
            return Attempt::Acquired(grant);
        }
        let split = !issued.is_empty();
        if split {
            // A minority, or too late: give back what we got so no one waits on our leftovers.
            let _ = self.undo_on_nodes(keys, token, timeout).await;
        }
        if errors.len() > self.nodes.len() - majority(self.nodes.len()) {
            return Attempt::Unavailable(errors);
        }
        Attempt::Busy { retry_after, split }
    }

    /// The grant a round earned, if a majority issued a fence, the fence could be settled and
    /// the lock is still valid after all that.
    async fn grant(
        &self,
        keys: &ResourceKeys,
        token: &str,
        issued: &[(usize, u64)],
        others: &[usize],
        round: Round,
    ) -> Option<Grant> {
        if issued.len() < majority(self.nodes.len()) {
            return None;
        }
        let fence = self
            .settle_fence(keys, issued, others, round.timeout)
            .await?;
        let valid_for = validity(round.ttl, round.started.elapsed())?;
        let now = Instant::now();
        Some(Grant {
            token: token.to_string(),
            fence,
            acquired_at: now,
            valid_until: now + valid_for,
        })
    }

    /// Quorum mode: the fence is the highest any node issued, written back to the nodes that
    /// issued less (and best-effort to the other reachable nodes). Once a majority of nodes
    /// store at least this fence, any later majority shares a node with it, and that node issues
    /// more — so fences strictly increase across holders. Returns `None` if fewer than a
    /// majority could be brought up to the fence.
    async fn settle_fence(
        &self,
        keys: &ResourceKeys,
        issued: &[(usize, u64)],
        others: &[usize],
        timeout: Duration,
    ) -> Option<u64> {
        let fence = issued.iter().map(|(_, fence)| *fence).max()?;
        if self.nodes.len() == 1 {
            return Some(fence);
        }
        let already = issued.iter().filter(|(_, f)| *f == fence).count();
        let behind: Vec<usize> = issued
            .iter()
            .filter(|(_, f)| *f < fence)
            .map(|(node, _)| *node)
            .chain(others.iter().copied())
            .collect();
        let fence_arg = fence.to_string();
        let call = ScriptCall {
            script: &scripts::RAISE_FENCE,
            repeatable: true,
            keys: &[&keys.fence],
            args: &[&fence_arg],
        };
        let raised = join_all(
            behind
                .iter()
                .map(|node| self.nodes[*node].run::<i64>(&call, timeout)),
        )
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
        (already + raised >= majority(self.nodes.len())).then_some(fence)
    }

    /// Gives back a partial acquisition without announcing it (see `RELEASE`).
    async fn undo_on_nodes(&self, keys: &ResourceKeys, token: &str, timeout: Duration) {
        let call = ScriptCall {
            script: &scripts::RELEASE,
            repeatable: true,
            keys: &[&keys.lock],
            args: &[token, "0", "", ""],
        };
        let _ = self.on_all_nodes(&call, timeout).await;
    }

    /// Releases `token`'s lock on every node; `keep` > 0 leaves the key to expire then (min_hold).
    /// `Ok(true)` when a majority confirmed the lock was ours.
    pub(crate) async fn release_on_nodes(
        &self,
        keys: &ResourceKeys,
        token: &str,
        keep: Duration,
        timeout: Duration,
    ) -> Result<bool, Vec<NodeError>> {
        let keep_ms = keep.as_millis().to_string();
        let call = ScriptCall {
            script: &scripts::RELEASE,
            repeatable: true,
            keys: &[&keys.lock],
            args: &[token, &keep_ms, &keys.channel, &self.id],
        };
        match self.verdict(self.on_all_nodes(&call, timeout).await) {
            Verdict::Confirmed => Ok(true),
            Verdict::Refused => Ok(false),
            Verdict::Unreachable(errors) => Err(errors),
        }
    }

    /// Resets the TTL of `token`'s lock. `Ok(Some(validity))` on a majority, `Ok(None)` when
    /// the lock is no longer ours, `Err` when too few nodes answered.
    pub(crate) async fn extend_on_nodes(
        &self,
        keys: &ResourceKeys,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>, Vec<NodeError>> {
        let ttl_ms = ttl.as_millis().to_string();
        let call = ScriptCall {
            script: &scripts::EXTEND,
            repeatable: true,
            keys: &[&keys.lock],
            args: &[token, &ttl_ms],
        };
        let started = Instant::now();
        match self.verdict(self.on_all_nodes(&call, self.call_timeout(ttl)).await) {
            Verdict::Confirmed => Ok(validity(ttl, started.elapsed())),
            Verdict::Refused => Ok(None),
            Verdict::Unreachable(errors) => Err(errors),
        }
    }

    /// Counts a yes/no round (release, extend): confirmed by a majority; refused (the lock is
    /// not ours); or undecidable because too many nodes did not answer.
    fn verdict(&self, replies: Vec<Result<i64, NodeError>>) -> Verdict {
        let confirmed = replies
            .iter()
            .filter(|reply| matches!(reply, Ok(1)))
            .count();
        let errors: Vec<NodeError> = replies.into_iter().filter_map(Result::err).collect();
        let quorum = majority(self.nodes.len());
        if confirmed >= quorum {
            Verdict::Confirmed
        } else if errors.len() > self.nodes.len() - quorum {
            Verdict::Unreachable(errors)
        } else {
            Verdict::Refused
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
        let timeout = self.call_timeout(ttl);
        let call = ScriptCall {
            script: &scripts::HANDOFF,
            repeatable: false,
            keys: &[&hold.keys.lock, &hold.keys.fence],
            args: &[&hold.token, &token, &ttl_ms],
        };
        let started = Instant::now();
        let replies = self.on_all_nodes(&call, timeout).await;
        let (issued, refused, errors) = sort_replies(replies);
        let others: Vec<usize> = refused.iter().map(|(node, _)| *node).collect();
        let round = Round {
            started,
            ttl,
            timeout,
        };
        if let Some(grant) = self
            .grant(&hold.keys, &token, &issued, &others, round)
            .await
        {
            return Ok(grant);
        }
        // Some nodes may already carry the new token: clear both tokens so nothing lingers.
        if !issued.is_empty() {
            let _ = self
                .release_on_nodes(&hold.keys, &token, Duration::ZERO, timeout)
                .await;
            let _ = self
                .release_on_nodes(&hold.keys, &hold.token, Duration::ZERO, timeout)
                .await;
        }
        if errors.len() > self.nodes.len() - majority(self.nodes.len()) {
            Err(HandoffFailed::Unavailable(
                self.unavailable(&hold.resource, errors),
            ))
        } else {
            Err(HandoffFailed::NotOurs)
        }
    }

    /// Fair mode: leave the queue (a waiter that gave up or was cancelled).
    fn leave_fair_queue(self: &Arc<Self>, keys: &Arc<ResourceKeys>, token: &str) {
        let inner = Arc::clone(self);
        let keys = Arc::clone(keys);
        let token = token.to_string();
        background::runtime().spawn(async move {
            let fair_keys = keys.fair();
            let call = ScriptCall {
                script: &scripts::FAIR_LEAVE,
                repeatable: true,
                keys: &[&fair_keys.queue, &fair_keys.leases],
                args: &[&token, &keys.channel],
            };
            let _ = inner.nodes[0]
                .run::<i64>(&call, inner.config.node_timeout)
                .await;
        });
    }

    pub(crate) fn unavailable(&self, resource: &str, errors: Vec<NodeError>) -> LockError {
        let nodes = self.nodes.len();
        LockError::Unavailable {
            resource: resource.to_string(),
            nodes,
            reachable: nodes - errors.len(),
            needed: majority(nodes),
            errors: NodeErrors(errors),
        }
    }

    pub(crate) fn max_local_handoffs(&self) -> u32 {
        self.config.max_local_handoffs
    }

    pub(crate) fn yield_window(&self) -> Duration {
        self.config.yield_window
    }

    pub(crate) fn release_timeout(&self, ttl: Duration) -> Duration {
        self.call_timeout(ttl)
    }
}

/// Splits script replies into fences issued (`> 0`), refusals (`≤ 0`, with the holder's
/// remaining TTL when known) and node errors.
#[allow(clippy::type_complexity)]
fn sort_replies(
    replies: Vec<Result<i64, NodeError>>,
) -> (
    Vec<(usize, u64)>,
    Vec<(usize, Option<Duration>)>,
    Vec<NodeError>,
) {
    let mut issued = Vec::new();
    let mut refused = Vec::new();
    let mut errors = Vec::new();
    for (node, reply) in replies.into_iter().enumerate() {
        match reply {
            Ok(fence) if fence > 0 => issued.push((node, fence.unsigned_abs())),
            Ok(minus_ttl) => refused.push((
                node,
                (minus_ttl < 0).then(|| Duration::from_millis(minus_ttl.unsigned_abs())),
            )),
            Err(err) => errors.push(err),
        }
    }
    (issued, refused, errors)
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
    fn queued(&mut self, inner: &Arc<Inner>, keys: &Arc<ResourceKeys>, token: &str) {
        if self.queued.is_none() {
            self.queued = Some((Arc::clone(inner), Arc::clone(keys), token.to_string()));
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
