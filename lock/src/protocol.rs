//! What to ask the nodes, and what their answers mean for a lock: take it, release it, extend
//! it, confirm it, hand it off, and the [`LockError::Unavailable`] an undecided round becomes.
//! Knows nothing of guards, waiters or lockers: it speaks in resource keys, tokens and
//! [`Grant`]s. The rounds themselves (sending, tallying, undoing) are `rounds.rs`'s.
//!
//! The seam for other Redis targets: a [`Protocol`] runs over a [`Cluster`] of nodes; a Redis
//! Cluster or Sentinel target is another way to build those nodes, and nothing above this
//! module changes.

use crate::error::{NodeError, NodeErrors};
use crate::fair::{self, FairWaiter};
use crate::node::{Call, Node, Retry};
use crate::options::{LockOptions, LockerConfig};
use crate::quorum::{self, majority, TakeResult};
use crate::resource::ResourceKeys;
use crate::rounds::{release_call, undo_call, Cluster, GiveBack, Grant, Terms, Verdict};
use crate::{observe, scripts, LockError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One locker's way to its nodes: its id (which signs its release messages, so waiters
/// elsewhere can tell processes apart), its nodes and its configuration.
#[derive(Debug)]
pub(crate) struct Protocol {
    id: Arc<str>,
    cluster: Cluster,
    config: LockerConfig,
}

/// How one acquisition round ended.
pub(crate) enum Round {
    Taken(Grant),
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

impl Protocol {
    /// The nodes of `config` (checked already). Connections are made lazily.
    pub(crate) fn new(config: LockerConfig) -> Result<Protocol, LockError> {
        let id: Arc<str> = Arc::from(new_token());
        let quorum = config.node_count() > 1;
        let nodes = config
            .endpoints()
            .map_err(LockError::Config)?
            .into_iter()
            .enumerate()
            .map(|(index, endpoint)| {
                Node::new(
                    index,
                    endpoint,
                    config.pool_size,
                    config.node_timeout,
                    &id,
                    quorum,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(LockError::Config)?;
        Ok(Protocol {
            id,
            cluster: Cluster::new(nodes, config.node_timeout),
            config,
        })
    }

    pub(crate) fn config(&self) -> &LockerConfig {
        &self.config
    }

    /// The id that signs this locker's release messages.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub(crate) fn node_count(&self) -> usize {
        self.cluster.len()
    }

    /// The keys of `resource` under this locker's prefix.
    pub(crate) fn keys(&self, resource: &str) -> ResourceKeys {
        ResourceKeys::new(&self.config.prefix, resource)
    }

    /// How long one call to a node may take for a lock of `ttl` (see `Cluster::call_timeout`):
    /// the budget of a release, an extension and a confirmation.
    pub(crate) fn call_timeout(&self, ttl: Duration) -> Duration {
        self.cluster.call_timeout(ttl)
    }

    /// How long a waiter has to take a lock handed to it before it goes on (see
    /// `guard::Handover`). A waiter being polled takes it at once, or — out asking Redis at
    /// that moment — once its round ends: within two calls (the round, and the give-back of
    /// a lost one), each bounded by the call timeout. A waiter whose future is parked or whose
    /// runtime is blocked must not keep the lock from everyone for the rest of its TTL.
    pub(crate) fn handover_bound(&self, ttl: Duration) -> Duration {
        const MARGIN: Duration = Duration::from_millis(50);
        self.cluster.call_timeout(ttl) * 2 + MARGIN
    }

    /// Fair mode: the node its queue lives on, which a [`fair::FairPlace`] leaves it on.
    pub(crate) fn fair_queue_node(&self) -> &Arc<Node> {
        &self.cluster.nodes()[0]
    }

    /// One acquisition round on every node at once, under a fresh token; a fair waiter's
    /// round goes through its queue.
    pub(crate) async fn take(
        &self,
        keys: &ResourceKeys,
        options: &LockOptions,
        fair_waiter: Option<&FairWaiter<'_>>,
    ) -> Round {
        observe::attempt();
        let ttl = options.effective_ttl();
        let ttl_ms = ttl.as_millis().to_string();
        let token = new_token();
        let terms = Terms {
            ttl,
            reserve: self.fence_reserve(options),
            stop_on_split: true,
            undo_unsent_until: None,
            replica_ack: self.config.wait_replicas,
        };
        let call = match fair_waiter {
            Some(waiter) => waiter.take_call(&token, &ttl_ms),
            None => Call::new(
                &scripts::ACQUIRE,
                Retry::Never,
                &[&keys.lock, &keys.fence],
                &[&token, &ttl_ms, &terms.reserve.to_string()],
            ),
        }
        .acknowledged_by(terms.replica_ack);
        let unknown = || match fair_waiter {
            Some(waiter) => waiter.undo(&token),
            None => vec![undo_call(keys, &token)],
        };
        let lost = || match fair_waiter {
            Some(waiter) => waiter.give_back_if_lost(&token),
            None => vec![undo_call(keys, &token)],
        };
        let give_back = GiveBack {
            unknown: &unknown,
            lost: &lost,
        };
        let not_taken = match self
            .cluster
            .take(keys, &call, &token, give_back, terms)
            .await
        {
            Ok(grant) => return Round::Taken(grant),
            Err(not_taken) => not_taken,
        };
        match not_taken.result {
            TakeResult::Unreachable => Round::Unavailable(not_taken.errors),
            TakeResult::Won | TakeResult::Refused | TakeResult::Split { .. } => Round::Busy {
                retry_after: not_taken.retry_after,
                split: not_taken.result == (TakeResult::Split { won_some: true }),
            },
        }
    }

    /// Releases `token`'s lock on every node; `keep` > 0 leaves the key to expire then (min_hold).
    /// `Ok(true)` when a majority confirmed the lock was ours, `Ok(false)` when the refusals
    /// alone rule that out, `Err` when too few answered to tell. Nodes that did not answer get
    /// the release from the background until they do, for at most `expires_within` (by then
    /// the key has expired anyway).
    pub(crate) async fn release(
        &self,
        keys: &ResourceKeys,
        token: &str,
        keep: Duration,
        timeout: Duration,
        expires_within: Duration,
    ) -> Result<bool, Vec<NodeError>> {
        let keep_ms = keep.as_millis().to_string();
        let call = release_call(keys, token, &keep_ms, Some(&self.id));
        let resend = || call.clone();
        let resend_until = Instant::now() + expires_within;
        let verdict = self
            .cluster
            .confirm(&call, timeout, Some((&resend, resend_until)))
            .await;
        verdict_to_result(verdict, true, false)
    }

    /// Resets the TTL of `token`'s lock, waiting at most `timeout` per node. `Ok(Some(valid
    /// until))` on a majority, `Ok(None)` when the lock is no longer ours, `Err` when too few
    /// nodes answered.
    pub(crate) async fn extend(
        &self,
        keys: &ResourceKeys,
        token: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Option<Instant>, Vec<NodeError>> {
        let call = Call::new(
            &scripts::EXTEND,
            Retry::Safely,
            &[&keys.lock, &keys.fence],
            &[token, &ttl.as_millis().to_string()],
        )
        .acknowledged_by(self.config.wait_replicas);
        let started = Instant::now();
        let timeout = timeout.min(self.cluster.call_timeout(ttl));
        let verdict = self.cluster.confirm(&call, timeout, None).await;
        // The key now lives until at least `started + ttl` (the script ran after `started`).
        verdict_to_result(verdict, Some(started + ttl - quorum::drift(ttl)), None)
    }

    /// Whether `token` still owns the lock on a majority: `Ok(true)`, `Ok(false)` when the
    /// refusals alone say it does not, `Err` when too few answered to tell.
    pub(crate) async fn confirm(
        &self,
        keys: &ResourceKeys,
        token: &str,
        timeout: Duration,
    ) -> Result<bool, Vec<NodeError>> {
        let call = Call::new(&scripts::CONFIRM, Retry::Safely, &[&keys.lock], &[token]);
        let verdict = self.cluster.confirm(&call, timeout, None).await;
        verdict_to_result(verdict, true, false)
    }

    /// Passes the lock held under `token` to a waiter of this process with `options`: new
    /// token, full TTL, fresh fence, one round trip, and the lock is never free in between.
    /// `old_lock_left`: how long the old lock lives at most from now.
    pub(crate) async fn hand_off(
        &self,
        resource: &str,
        keys: &ResourceKeys,
        token: &str,
        old_lock_left: Duration,
        options: &LockOptions,
    ) -> Result<Grant, HandoffFailed> {
        let ttl = options.effective_ttl();
        let new_token = new_token();
        let terms = Terms {
            ttl,
            reserve: self.fence_reserve(options),
            stop_on_split: false,
            undo_unsent_until: Some(
                Instant::now()
                    + old_lock_left
                    + quorum::drift(old_lock_left)
                    + self.config.node_timeout,
            ),
            replica_ack: self.config.wait_replicas,
        };
        let call = Call::new(
            &scripts::HANDOFF,
            Retry::Never,
            &[&keys.lock, &keys.fence],
            &[
                token,
                &new_token,
                &ttl.as_millis().to_string(),
                &terms.reserve.to_string(),
            ],
        )
        .acknowledged_by(terms.replica_ack);
        // A handoff that did not go through (or whose outcome is unknown) frees the lock under
        // both tokens, so nothing lingers, and announces it like a release: the waiters (ours,
        // put back first in line, and other processes') ask Redis at once rather than at their
        // timers.
        let undo = || {
            [new_token.as_str(), token]
                .map(|token| release_call(keys, token, "0", Some(&self.id)))
                .to_vec()
        };
        let give_back = GiveBack {
            unknown: &undo,
            lost: &undo,
        };
        match self
            .cluster
            .take(keys, &call, &new_token, give_back, terms)
            .await
        {
            Ok(grant) => Ok(grant),
            // "Not ours" only when the refusals alone say so; a split or silent handoff may
            // have found the lock ours on a majority (it was undone: the lock is free now).
            Err(not_taken) => match not_taken.result {
                TakeResult::Refused => Err(HandoffFailed::NotOurs),
                TakeResult::Won | TakeResult::Split { .. } | TakeResult::Unreachable => Err(
                    HandoffFailed::Unavailable(self.unavailable(resource, not_taken.errors)),
                ),
            },
        }
    }

    /// The error for a round on `resource` that too few nodes answered.
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
            fair::FENCES_PER_ACQUISITION
        } else {
            u64::from(self.config.max_local_handoffs) + 1
        }
    }
}

/// A yes/no round's verdict as `Ok(yes)`, `Ok(no)` or the errors of an undecided round.
fn verdict_to_result<T>(verdict: Verdict, yes: T, no: T) -> Result<T, Vec<NodeError>> {
    match verdict {
        Verdict::Confirmed => Ok(yes),
        Verdict::Refused => Ok(no),
        Verdict::Undecided(errors) => Err(errors),
    }
}

/// A random owner token: 128 bits, so no two holds ever share one.
pub(crate) fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
