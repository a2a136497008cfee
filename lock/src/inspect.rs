//! Operator calls on a resource: [`Locker::inspect`] (is it locked, until when, which fence)
//! and [`Locker::force_unlock`]. Neither takes part in locking; they read or override it.

use crate::error::NodeError;
use crate::locker::Locker;
use crate::node::{Call, Retry};
use crate::quorum::{self, majority, VoteResult};
use crate::resource::validate_resource;
use crate::{scripts, LockError};
use std::time::Duration;

/// What [`Locker::inspect`] saw of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockState {
    /// Whether the resource is locked (in quorum mode: on a majority of the nodes). A lock
    /// released early under `min_hold` counts as locked until its minimum hold is over.
    pub locked: bool,
    /// How long the lock lives on unless extended or released: on a majority of the nodes, in
    /// quorum mode. `None` when it is free, or when its key has no expiry (set by hand).
    pub remaining: Option<Duration>,
    /// The last fence issued or reserved for the resource (the highest any node reports; a
    /// holder's process reserves a few fences beyond its own to pass the lock on locally), if a
    /// fence counter lives: it outlives the last lock by a minute. The current holder's fence is
    /// at most this; every later holder's is greater.
    pub last_fence: Option<u64>,
}

/// One node's view of a resource (see `scripts::INSPECT`).
struct NodeView {
    pttl: i64,
    last_fence: u64,
    /// SHA-1 of the lock's value; empty when free.
    holder: String,
}

impl Locker {
    /// Looks at `resource` without touching it: locked or not, the time left, the last fence.
    /// A snapshot: by the time it returns, the lock may have changed hands.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when the nodes that answered within the node timeout cannot
    /// tell (fewer than a majority answered, or the silent ones could still make a majority
    /// hold it); [`LockError::InvalidResource`] for a name that cannot be a lock.
    pub async fn inspect(&self, resource: &str) -> Result<LockState, LockError> {
        let views = self.views(resource).await?;
        let nodes = views.len();
        let needed = majority(nodes);
        let (answered, silent): (Vec<_>, Vec<_>) = views.into_iter().partition(Result::is_ok);
        let answered: Vec<(i64, u64)> = answered
            .into_iter()
            .flatten()
            .map(|view| (view.pttl, view.last_fence))
            .collect();
        let held = answered.iter().filter(|(pttl, _)| *pttl != -2).count();
        let free = answered.len() - held;
        if quorum::vote_result(held, free, nodes) == VoteResult::Pending {
            // Free on the nodes that answered, but the silent ones could make it held.
            let errors = silent.into_iter().filter_map(Result::err).collect();
            return Err(self.protocol().unavailable(resource, errors));
        }
        Ok(lock_state(&answered, needed))
    }

    /// **For operators only**: deletes the lock on `resource` whoever holds it, and wakes its
    /// waiters. Use it to clear a lock whose holder is known to be dead when waiting out its TTL
    /// is not acceptable — never as part of normal locking.
    ///
    /// It evicts the holder it finds (it looks first, then deletes only that holder's lock on
    /// each node), so a lock taken in between, or by a waiter it woke, is never deleted — with
    /// one exception: a process passes a lock on to its own waiters under the same owner token
    /// (see the crate docs), so the whole streak is evicted, including holders it passed the
    /// lock to after the inspection; they notice at their next round trip. The
    /// evicted holder is not told: its guard finds out at its next extension (or when its
    /// validity runs out), and until then it may still write. What keeps that safe is fencing:
    /// the fence counter is kept, so the next holder's fence is greater and fenced storage
    /// rejects the evicted holder's late writes. Returns whether a lock was deleted (in quorum
    /// mode: on at least one node).
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when fewer than a majority of nodes answered: the lock may
    /// still stand on the others (run it again).
    pub async fn force_unlock(&self, resource: &str) -> Result<bool, LockError> {
        let views = self.views(resource).await?;
        let protocol = self.protocol();
        let keys = protocol.keys(resource);
        let unlock_on = |node: usize, holder: String| {
            let keys = &keys;
            async move {
                let call = Call::new(
                    &scripts::FORCE_UNLOCK,
                    Retry::NoMeansUnknown,
                    &[&keys.lock],
                    &[&holder, &keys.channel, protocol.id()],
                );
                protocol.cluster().ask_one::<i64>(node, &call).await
            }
        };
        // A node is known clear of the holder when it answered the inspection with no holder,
        // or answered the unlock; the others (silent in either phase) may still hold it.
        let mut errors = Vec::new();
        let mut held = Vec::new();
        let mut clear = 0;
        for (node, view) in views.into_iter().enumerate() {
            match view {
                Ok(view) if !view.holder.is_empty() => held.push((node, view.holder)),
                Ok(_) => clear += 1,
                Err(err) => errors.push(err),
            }
        }
        let replies = futures_util::future::join_all(
            held.into_iter()
                .map(|(node, holder)| unlock_on(node, holder)),
        )
        .await;
        let removed = replies.iter().any(|reply| matches!(reply, Ok(1)));
        for reply in replies {
            match reply {
                Ok(_) => clear += 1,
                Err(err) => errors.push(err),
            }
        }
        if !quorum::is_majority(clear, protocol.node_count()) {
            errors.sort_by_key(|err| err.node);
            return Err(protocol.unavailable(resource, errors));
        }
        tracing::warn!(resource, removed, "lock force-unlocked by an operator call");
        Ok(removed)
    }

    /// Every node's view of `resource` (an error for a node that did not answer), or
    /// `Unavailable` when fewer than a majority answered.
    async fn views(&self, resource: &str) -> Result<Vec<Result<NodeView, NodeError>>, LockError> {
        validate_resource(resource)?;
        let protocol = self.protocol();
        let keys = protocol.keys(resource);
        let call = Call::new(
            &scripts::INSPECT,
            Retry::Safely,
            &[&keys.lock, &keys.fence],
            &[],
        );
        let replies = protocol
            .cluster()
            .ask_all::<(i64, u64, String)>(&call)
            .await;
        let answered = replies.iter().filter(|reply| reply.is_ok()).count();
        if answered < majority(replies.len()) {
            let errors = replies.into_iter().filter_map(Result::err).collect();
            return Err(protocol.unavailable(resource, errors));
        }
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply.map(|(pttl, last_fence, holder)| NodeView {
                    pttl,
                    last_fence,
                    holder,
                })
            })
            .collect())
    }
}

/// Combines the nodes' `(PTTL, last fence)` answers: locked when at least `needed` nodes hold the
/// key; the time left is the `needed`-th longest, when fewer than a majority will still hold it.
fn lock_state(answers: &[(i64, u64)], needed: usize) -> LockState {
    let mut held: Vec<i64> = answers
        .iter()
        .map(|&(pttl, _)| pttl)
        .filter(|&pttl| pttl != -2)
        .collect();
    let locked = held.len() >= needed;
    // -1 (no expiry) sorts as the longest.
    held.sort_unstable_by_key(|&pttl| std::cmp::Reverse(if pttl == -1 { i64::MAX } else { pttl }));
    let remaining = match held.get(needed - 1) {
        Some(&pttl) if locked && pttl >= 0 => Some(Duration::from_millis(pttl as u64)),
        _ => None,
    };
    let last_fence = answers
        .iter()
        .map(|&(_, fence)| fence)
        .max()
        .filter(|&fence| fence > 0);
    LockState {
        locked,
        remaining,
        last_fence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_counts_as_locked_and_reports_the_majoritys_time_left() {
        let state = lock_state(&[(900, 5), (-2, 7), (300, 6)], 2);
        assert_eq!(
            state,
            LockState {
                locked: true,
                remaining: Some(Duration::from_millis(300)),
                last_fence: Some(7),
            }
        );
        let minority = lock_state(&[(900, 5), (-2, 0), (-2, 0)], 2);
        assert!(!minority.locked && minority.remaining.is_none());
        let free = lock_state(&[(-2, 0)], 1);
        assert_eq!(free.last_fence, None);
        let no_expiry = lock_state(&[(-1, 3)], 1);
        assert!(no_expiry.locked && no_expiry.remaining.is_none());
    }
}
