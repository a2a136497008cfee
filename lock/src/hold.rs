//! The data of one hold, apart from the guard's I/O: its [`Lease`] (until when the lock can be
//! relied on, and whether it is lost) and the [`Hold`] (token, fence, the fences reserved for
//! pass-on), with the rule for passing the lock on in-process without a round trip.

use crate::options::LockOptions;
use crate::resource::ResourceKeys;
use crate::rounds::Grant;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the lock can be relied on, shared by the guard and its watchdog.
#[derive(Debug)]
pub(crate) struct Lease {
    /// Until when the lock is certainly ours: set by the acquisition, advanced by extensions.
    valid_until: Mutex<Instant>,
    /// Cancelled when the lock is known lost (an extension was refused, or validity ran out
    /// with no extension confirmed).
    lost: CancellationToken,
}

impl Lease {
    pub(crate) fn new(valid_until: Instant) -> Lease {
        Lease {
            valid_until: Mutex::new(valid_until),
            lost: CancellationToken::new(),
        }
    }

    pub(crate) fn valid_until(&self) -> Instant {
        *self.valid_until.lock().expect("lease lock")
    }

    /// Advances the validity to `until` (an extension was confirmed), unless the lease is lost
    /// already: once lost, a lease stays lost (work done while it was lost was not safe, and
    /// an extension confirmed later does not make it so). Whether it was advanced.
    pub(crate) fn extend_to(&self, until: Instant) -> bool {
        let mut valid_until = self.valid_until.lock().expect("lease lock");
        if self.lost.is_cancelled() || Instant::now() >= *valid_until {
            self.lost.cancel();
            return false;
        }
        *valid_until = (*valid_until).max(until);
        true
    }

    pub(crate) fn is_lost(&self) -> bool {
        if self.lost.is_cancelled() {
            return true;
        }
        if Instant::now() >= self.valid_until() {
            // Make it final: `lost_token()` holders hear it, and no extension revives it.
            self.lost.cancel();
            return true;
        }
        false
    }

    /// Declares the lock lost, for good (an extension or confirmation was refused, or the
    /// validity ran out).
    pub(crate) fn declare_lost(&self) {
        self.lost.cancel();
    }

    /// Cancelled when the lock is declared lost.
    pub(crate) fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Resolves when the lock is lost: the token is cancelled or the validity runs out,
    /// whichever comes first (re-reading the validity, which extensions advance).
    pub(crate) async fn lost(&self) {
        loop {
            let until = self.valid_until();
            tokio::select! {
                () = self.lost.cancelled() => return,
                () = tokio::time::sleep_until(until) => {
                    if Instant::now() >= self.valid_until() {
                        return;
                    }
                }
            }
        }
    }
}

/// The state of one hold, owned by its guard until release.
#[derive(Debug)]
pub(crate) struct Hold {
    pub resource: Arc<str>,
    pub keys: Arc<ResourceKeys>,
    pub token: String,
    pub fence: u64,
    /// The last fence reserved for this process with the lock (see `Hold::pass_on`).
    pub fence_limit: u64,
    pub acquired_at: Instant,
    pub lease: Arc<Lease>,
    pub options: LockOptions,
    /// Cancelled to stop the auto-extend watchdog.
    pub stop_watchdog: CancellationToken,
    /// A lock passed on without a round trip is confirmed by its releaser afterwards; this
    /// hold's own release waits for that first (so the confirmation cannot mistake our own
    /// release for a loss).
    pub confirmed: Option<oneshot::Receiver<()>>,
}

impl Hold {
    /// The lock for the next local waiter without asking Redis, if that is safe: the lock
    /// stays under this process's token in Redis (it never becomes free), the waiter gets the
    /// next fence of the block reserved at acquisition (greater than this holder's; every later
    /// acquisition anywhere issues above the block), and the validity this hold has left,
    /// which must be close to what the waiter asks for: at least 90% of its TTL (so the lock
    /// was confirmed by Redis within about a tenth of a TTL), at most 110% (a waiter asking for
    /// 5 s does not inherit a 60 s lock that would outlive a crash by a minute). Otherwise (no
    /// fence left in the block, the time off, or a waiter with `min_hold`, whose minimum Redis
    /// must keep exactly) the handoff goes through Redis, which sets the waiter's TTL.
    ///
    /// The releaser confirms the token in Redis right after (`confirm_passed_on`): a lock
    /// deleted behind this process's back (`force_unlock`, a Redis restart that lost it) makes
    /// the releaser's `release()` answer `Ok(false)` and the recipient's guard lost within one
    /// round trip. Until then the recipient works under a lock Redis may have lost, as any
    /// holder does between round trips; fencing is what protects the data then.
    pub(crate) fn pass_on(&self, options: &LockOptions) -> Option<Grant> {
        let now = Instant::now();
        let left = self.lease.valid_until().saturating_duration_since(now);
        let wanted = options.effective_ttl();
        let slack = wanted / PASS_ON_VALIDITY_DIVISOR;
        let close_to_wanted = left >= wanted - slack && left <= wanted + slack;
        let usable = self.fence < self.fence_limit
            && close_to_wanted
            && options.min_hold.is_zero()
            && !self.lease.is_lost();
        usable.then(|| Grant {
            token: self.token.clone(),
            fence: self.fence + 1,
            fence_limit: self.fence_limit,
            acquired_at: now,
            valid_until: self.lease.valid_until(),
        })
    }
}

/// A lock is passed on without a round trip only while the validity left is within a tenth of
/// the waiter's TTL (90% to 110% of it): a waiter never gets much less, or much more, than it
/// asked for.
const PASS_ON_VALIDITY_DIVISOR: u32 = 10;
