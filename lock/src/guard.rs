//! [`Guard`]: a held lock. Release it with [`Guard::release`], or drop it: the release then
//! runs in a task on the background runtime (never blocking in `Drop`), so a panic or a
//! cancelled future frees the lock at once instead of after the TTL.

use crate::background;
use crate::locker::{HandoffFailed, Inner};
use crate::options::LockOptions;
use crate::resource::ResourceKeys;
use crate::{observe, LockError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What an acquisition round (or a handoff) produced.
#[derive(Debug)]
pub(crate) struct Grant {
    pub token: String,
    pub fence: u64,
    /// When the winning round returned: from here on the lock is certainly held. (Validity is
    /// reckoned from the round's *start*, the conservative end for expiry.)
    pub acquired_at: Instant,
    pub valid_until: Instant,
}

/// The state of one hold, owned by its guard until release.
#[derive(Debug)]
pub(crate) struct Hold {
    pub resource: Arc<str>,
    pub keys: Arc<ResourceKeys>,
    pub token: String,
    pub fence: u64,
    pub acquired_at: Instant,
    pub valid_until: Instant,
    pub options: LockOptions,
    /// Cancelled when the lock is known lost (extension refused or failed).
    pub lost: CancellationToken,
    /// Cancelled to stop the auto-extend watchdog.
    pub stop_watchdog: CancellationToken,
}

/// A held distributed lock.
///
/// Guards are `Send`; keep them across `.await`s freely. Fence your writes with
/// [`Guard::fence`]: it is strictly greater than any fence issued before for this resource.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct Guard {
    hold: Option<Hold>,
    inner: Arc<Inner>,
}

impl Guard {
    /// Wraps a fresh grant, starting the auto-extend watchdog if asked.
    pub(crate) fn start(
        inner: Arc<Inner>,
        resource: Arc<str>,
        keys: Arc<ResourceKeys>,
        grant: Grant,
        options: LockOptions,
    ) -> Guard {
        let hold = Hold {
            resource,
            keys,
            token: grant.token,
            fence: grant.fence,
            acquired_at: grant.acquired_at,
            valid_until: grant.valid_until,
            options,
            lost: CancellationToken::new(),
            stop_watchdog: CancellationToken::new(),
        };
        tracing::debug!(resource = %hold.resource, fence = hold.fence, "lock acquired");
        if hold.options.auto_extend {
            spawn_watchdog(&inner, &hold);
        }
        Guard {
            hold: Some(hold),
            inner,
        }
    }

    fn hold(&self) -> &Hold {
        self.hold
            .as_ref()
            .expect("a live guard always has its hold")
    }

    /// The fencing token: strictly greater than every fence issued before for this resource,
    /// across holders, expiry and (within the documented limits) Redis restarts. Pass it to the
    /// storage you protect and reject writes that carry a smaller one.
    pub fn fence(&self) -> u64 {
        self.hold().fence
    }

    /// The locked resource.
    pub fn resource(&self) -> &str {
        &self.hold().resource
    }

    /// When the acquisition (or handoff) returned: the lock is certainly held from this instant,
    /// so `[acquired_at, release]` never overlaps another holder's interval.
    pub fn acquired_at(&self) -> Instant {
        self.hold().acquired_at
    }

    /// Whether the lock is known to be lost: an extension was refused or failed, or (without
    /// auto-extend) its validity has run out.
    pub fn is_lost(&self) -> bool {
        let hold = self.hold();
        hold.lost.is_cancelled()
            || (!hold.options.auto_extend && Instant::now() >= hold.valid_until)
    }

    /// Resolves when the lock is lost (see [`Guard::is_lost`]). Race your work against it with
    /// `tokio::select!` to abort work whose lock is gone.
    pub async fn lost(&self) {
        let hold = self.hold();
        if hold.options.auto_extend {
            hold.lost.cancelled().await;
        } else {
            tokio::select! {
                () = hold.lost.cancelled() => {}
                () = tokio::time::sleep_until(hold.valid_until) => {}
            }
        }
    }

    /// A token cancelled when auto-extension finds the lock lost; hand it to work that should stop.
    pub fn lost_token(&self) -> CancellationToken {
        self.hold().lost.clone()
    }

    /// Releases the lock (or hands it to a waiter of this process) and reports whether it was
    /// still ours: `Ok(false)` means it had expired or been taken over, so the work done under it
    /// may have overlapped another holder's.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when Redis could not be told; the lock then expires by its TTL.
    pub async fn release(mut self) -> Result<bool, LockError> {
        let hold = self.hold.take().expect("a live guard always has its hold");
        finish(Arc::clone(&self.inner), hold).await
    }

    /// Takes the hold back out (a handoff the waiter did not take), stopping its watchdog.
    pub(crate) fn into_hold(mut self) -> Hold {
        let hold = self.hold.take().expect("a live guard always has its hold");
        hold.stop_watchdog.cancel();
        hold
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        // On the background runtime: it outlives the caller's (a runtime shutting down drops
        // its tasks' guards), and works where there is none at all.
        background::runtime().spawn(finish(Arc::clone(&self.inner), hold));
    }
}

/// Ends a hold: stop the watchdog, then hand the lock to a local waiter if one is queued (and
/// the streak and `min_hold` allow), else release it on the nodes.
async fn finish(inner: Arc<Inner>, mut hold: Hold) -> Result<bool, LockError> {
    hold.stop_watchdog.cancel();
    let held_for = hold.acquired_at.elapsed();
    let keep = hold.options.min_hold.saturating_sub(held_for);
    if keep.is_zero() && !hold.options.fair && !hold.lost.is_cancelled() {
        while let Some(waiter) = inner
            .local
            .next_for_handoff(&hold.resource, inner.max_local_handoffs())
        {
            match inner.handoff(&hold, &waiter.options).await {
                Ok(grant) => {
                    let guard = Guard::start(
                        Arc::clone(&inner),
                        Arc::clone(&hold.resource),
                        Arc::clone(&hold.keys),
                        grant,
                        waiter.options.clone(),
                    );
                    match waiter.grant.send(guard) {
                        Ok(()) => {
                            observe::released("handoff", held_for);
                            return Ok(true);
                        }
                        // The waiter gave up meanwhile: the lock is ours again, under the new token.
                        Err(guard) => hold = guard.into_hold(),
                    }
                }
                Err(HandoffFailed::NotOurs) => {
                    inner.local.put_back(&hold.resource, waiter);
                    inner.local.end_streak(&hold.resource, Duration::ZERO);
                    observe::released("not_held", held_for);
                    return Ok(false);
                }
                Err(HandoffFailed::Unavailable(err)) => {
                    inner.local.put_back(&hold.resource, waiter);
                    observe::released("failed", held_for);
                    return Err(err);
                }
            }
        }
    }
    let timeout = inner.release_timeout(hold.options.effective_ttl());
    inner.local.end_streak(&hold.resource, inner.yield_window());
    let outcome = inner
        .release_on_nodes(&hold.keys, &hold.token, keep, timeout)
        .await;
    match outcome {
        Ok(true) => {
            observe::released("released", held_for);
            tracing::debug!(resource = %hold.resource, fence = hold.fence, ?held_for, "lock released");
            Ok(true)
        }
        Ok(false) => {
            observe::released("not_held", held_for);
            tracing::warn!(resource = %hold.resource, fence = hold.fence, ?held_for, "lock was no longer held at release");
            Ok(false)
        }
        Err(errors) => {
            observe::released("failed", held_for);
            observe::unavailable();
            Err(inner.unavailable(&hold.resource, errors))
        }
    }
}

/// Extends the lock every `ttl / 3` until stopped; on a refusal or failure marks the guard lost
/// and stops (Redisson's renewal and node-redlock's `using`, without the blocking).
fn spawn_watchdog(inner: &Arc<Inner>, hold: &Hold) {
    let inner = Arc::clone(inner);
    let keys = Arc::clone(&hold.keys);
    let resource = Arc::clone(&hold.resource);
    let token = hold.token.clone();
    let ttl = hold.options.effective_ttl();
    let lost = hold.lost.clone();
    let stop = hold.stop_watchdog.clone();
    let period = (ttl / 3).max(Duration::from_millis(1));
    background::runtime().spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            let outcome = inner.extend_on_nodes(&keys, &token, ttl).await;
            if stop.is_cancelled() {
                return;
            }
            match outcome {
                Ok(Some(_)) => observe::extension("ok"),
                Ok(None) => {
                    observe::extension("refused");
                    observe::lost();
                    tracing::warn!(%resource, "lock lost: extension refused (expired or taken over)");
                    lost.cancel();
                    return;
                }
                Err(errors) => {
                    observe::extension("failed");
                    observe::lost();
                    tracing::warn!(%resource, errors = %crate::error::NodeErrors(errors), "lock lost: extension failed");
                    lost.cancel();
                    return;
                }
            }
        }
    });
}
