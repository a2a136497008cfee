//! Operator calls on a resource: [`Locker::inspect`] (is it locked, until when, which fence)
//! and [`Locker::force_unlock`]. Neither takes part in locking; they read or override it.

use crate::locker::Locker;
use crate::node::ScriptCall;
use crate::quorum::majority;
use crate::resource::{validate_resource, ResourceKeys};
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
    /// The last fence issued for the resource (the highest any node reports), if a fence
    /// counter lives: it outlives the last lock by a minute. The next holder gets a greater one.
    pub last_fence: Option<u64>,
}

impl Locker {
    /// Looks at `resource` without touching it: locked or not, the time left, the last fence.
    /// A snapshot: by the time it returns, the lock may have changed hands.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when fewer than a majority of nodes answered within the node
    /// timeout; [`LockError::InvalidResource`] for a name that cannot be a lock.
    pub async fn inspect(&self, resource: &str) -> Result<LockState, LockError> {
        validate_resource(resource)?;
        let inner = &self.inner;
        let keys = ResourceKeys::new(&inner.config.prefix, resource);
        let call = ScriptCall {
            script: &scripts::INSPECT,
            repeatable: true,
            keys: &[&keys.lock, &keys.fence],
            args: &[],
        };
        let replies = inner.cluster.ask_all::<(i64, u64)>(&call).await;
        let nodes = replies.len();
        let needed = majority(nodes);
        let (answers, errors): (Vec<_>, Vec<_>) = replies.into_iter().partition(Result::is_ok);
        if answers.len() < needed {
            return Err(inner.unavailable(
                resource,
                errors.into_iter().filter_map(Result::err).collect(),
            ));
        }
        let answers: Vec<(i64, u64)> = answers.into_iter().filter_map(Result::ok).collect();
        Ok(lock_state(&answers, needed))
    }

    /// **For operators only**: deletes the lock on `resource` whoever holds it, and wakes its
    /// waiters. Use it to clear a lock whose holder is known to be dead when waiting out its TTL
    /// is not acceptable — never as part of normal locking.
    ///
    /// The evicted holder is not told: its guard finds out at its next extension (or when its
    /// validity runs out), and until then it may still write. What keeps that safe is fencing:
    /// the fence counter is kept, so the next holder's fence is greater and fenced storage
    /// rejects the evicted holder's late writes. Returns whether a lock was there (in quorum
    /// mode: on at least one node).
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when fewer than a majority of nodes answered: the lock may
    /// still stand on the others (run it again).
    pub async fn force_unlock(&self, resource: &str) -> Result<bool, LockError> {
        validate_resource(resource)?;
        let inner = &self.inner;
        let keys = ResourceKeys::new(&inner.config.prefix, resource);
        let call = ScriptCall {
            script: &scripts::FORCE_UNLOCK,
            repeatable: true,
            keys: &[&keys.lock],
            args: &[&keys.channel, &inner.id],
        };
        let replies = inner.cluster.ask_all::<i64>(&call).await;
        let needed = majority(replies.len());
        let removed = replies.iter().any(|reply| matches!(reply, Ok(1)));
        let errors: Vec<_> = replies.into_iter().filter_map(Result::err).collect();
        let answered = inner.cluster.len() - errors.len();
        if answered < needed {
            return Err(inner.unavailable(resource, errors));
        }
        tracing::warn!(resource, removed, "lock force-unlocked by an operator call");
        Ok(removed)
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
