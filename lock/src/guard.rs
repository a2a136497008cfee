//! [`Guard`]: a held lock. Release it with [`Guard::release`], or drop it: the release then
//! runs in a task on the background runtime (never blocking in `Drop`), so a panic or a
//! cancelled future frees the lock at once instead of after the TTL. A `release` runs there too
//! (its future only waits for it), so it finishes even if its caller gives up or its caller's
//! runtime stops.

use crate::background;
use crate::hold::{Hold, Lease};
use crate::local::LocalQueues;
use crate::options::LockOptions;
use crate::protocol::{HandoffFailed, Protocol};
use crate::resource::ResourceKeys;
use crate::rounds::Grant;
use crate::{observe, quorum, watchdog, LockError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one locker's guards and waiters share: its way to the nodes, and this process's queues
/// of waiters that a releasing guard hands the lock to.
#[derive(Debug)]
pub(crate) struct LockerState {
    pub(crate) protocol: Arc<Protocol>,
    pub(crate) waiters: LocalQueues<Handover>,
}

/// A held distributed lock.
///
/// Guards are `Send`; keep them across `.await`s freely. Fence your writes with
/// [`Guard::fence`]: it is strictly greater than any fence issued before for this resource.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct Guard {
    hold: Option<Hold>,
    locker: Arc<LockerState>,
}

impl Guard {
    /// Wraps a fresh grant; its holder calls [`Guard::taken`] once it has it in hand.
    pub(crate) fn start(
        locker: Arc<LockerState>,
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
            fence_limit: grant.fence_limit,
            acquired_at: grant.acquired_at,
            lease: Arc::new(Lease::new(grant.valid_until)),
            options,
            stop_watchdog: CancellationToken::new(),
            confirmed: None,
        };
        tracing::debug!(resource = %hold.resource, fence = hold.fence, "lock acquired");
        Guard {
            hold: Some(hold),
            locker,
        }
    }

    /// The guard's holder has it in hand: starts the auto-extend watchdog if asked. A guard
    /// handed to a local waiter is started only once that waiter takes it — a future that is
    /// alive but not polled must not keep a lock alive that nobody uses; untaken within the
    /// hand-over bound, it goes on (see [`Handover`]).
    pub(crate) fn taken(self) -> Guard {
        let hold = self.hold();
        if hold.options.auto_extend && !hold.stop_watchdog.is_cancelled() {
            watchdog::spawn(&self.locker.protocol, hold);
        }
        self
    }

    fn hold(&self) -> &Hold {
        self.hold
            .as_ref()
            .expect("a live guard always has its hold")
    }

    fn hold_mut(&mut self) -> &mut Hold {
        self.hold
            .as_mut()
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

    /// Whether the lock may be lost: an extension was refused (the key is gone or someone
    /// else's), or its validity ran out — the TTL minus the time the acquisition took and a
    /// clock-drift allowance, advanced by every confirmed extension. Conservative: the key in
    /// Redis outlives the validity.
    pub fn is_lost(&self) -> bool {
        self.hold().lease.is_lost()
    }

    /// Until when the lock is certainly held, as far as this guard knows now (extensions
    /// advance it).
    pub fn valid_until(&self) -> Instant {
        self.hold().lease.valid_until()
    }

    /// Resolves when the lock is lost (see [`Guard::is_lost`]), no later than its validity
    /// runs out. Race your work against it with `tokio::select!` to abort work whose lock is
    /// gone (the attribute's `cancel_on_lost` does exactly that).
    pub async fn lost(&self) {
        self.hold().lease.lost().await;
    }

    /// A token cancelled when the watchdog finds the lock lost; hand it to work that should
    /// stop. (It is cancelled by the auto-extend watchdog; without auto-extend, use
    /// [`Guard::lost`], which also watches the validity.)
    pub fn lost_token(&self) -> CancellationToken {
        self.hold().lease.lost_token()
    }

    /// Extends the lock by hand: it lives at least `by` from now (it is never shortened, so an
    /// auto-extending guard keeps its longer TTL). `Ok(true)` when it was still ours and the
    /// validity ([`Guard::valid_until`]) moved on; `Ok(false)` when it had expired or been taken
    /// over, or the guard had already been declared lost — it then counts as lost.
    ///
    /// # Errors
    /// [`LockError::InvalidOptions`] for `by` under 10 ms or over 30 days;
    /// [`LockError::Unavailable`] when too few nodes answered (the lock is unchanged where they
    /// did not; its validity stays as it was).
    pub async fn extend(&self, by: Duration) -> Result<bool, LockError> {
        LockOptions::new().ttl(by).check()?;
        let hold = self.hold();
        if hold.lease.is_lost() {
            // Once lost (declared so, or its validity ran out), a guard stays lost: extending
            // the key, should it still be ours, would not make the work done since safe.
            return Ok(false);
        }
        let protocol = &self.locker.protocol;
        let timeout = protocol.call_timeout(by);
        match protocol.extend(&hold.keys, &hold.token, by, timeout).await {
            Ok(Some(valid_until)) => Ok(hold.lease.extend_to(valid_until)),
            Ok(None) => {
                observe::lost();
                hold.lease.declare_lost();
                Ok(false)
            }
            Err(errors) => Err(protocol.unavailable(&hold.resource, errors)),
        }
    }

    /// Releases the lock (or hands it to a waiter of this process) and reports whether it was
    /// still ours: `Ok(false)` means it had expired or been taken over, so the work done under it
    /// may have overlapped another holder's.
    ///
    /// After an in-process pass-on (see [`crate::LockerConfig::confirm_pass_on`]), `Ok(true)`
    /// means Redis confirmed, after this hold, that the lock was still ours; `Ok(false)` that it
    /// was not (the lock had been lost, and the waiter it was passed to is told it is lost).
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when too few nodes answered to tell — or a connection died
    /// under the release and its retry found nothing to release (the first try may have done
    /// it): whether another holder was granted the lock meanwhile is unknown. A release is
    /// resent to the silent nodes until they answer or the lock has expired by its TTL (after a
    /// pass-on the lock is already with the next holder; only its confirmation went
    /// unanswered).
    ///
    /// Cancel-safe: if this future is dropped before it completes, the release goes on in the
    /// background and finishes as soon as Redis answers.
    pub async fn release(mut self) -> Result<bool, LockError> {
        let hold = self.hold.take().expect("a live guard always has its hold");
        // The whole release runs on the background runtime, timers included: had it run here
        // and been moved there when dropped, a future still tied to this runtime's timers
        // would panic once this runtime shut down, and the release would never land. Dropping
        // the handle leaves the task running.
        let finishing = background::runtime().spawn(finish(Arc::clone(&self.locker), hold));
        match finishing.await {
            Ok(outcome) => outcome,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => unreachable!("the background runtime never cancels a task: {err}"),
            },
        }
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
        background::runtime().spawn(finish(Arc::clone(&self.locker), hold));
    }
}

/// A lock on its way to a local waiter. Whoever takes the guard out first has it: the waiter
/// (in `Locker::acquire`), or — if the waiter did not take it within the hand-over bound,
/// because its future is parked or its runtime blocked — the releaser's [`TakeBack`], which
/// drops it, and so passes the lock on to the next local waiter or releases it in Redis. A
/// waiter that finds its hand-over empty queues again. The hand-over is the guard's only
/// owner: dropped untaken (the waiter's future dropped), it drops the guard at once.
#[derive(Debug)]
pub(crate) struct Handover(Arc<Mutex<Option<Guard>>>);

/// The releaser's side of a [`Handover`]: it does not keep the guard alive.
#[derive(Debug)]
pub(crate) struct TakeBack(std::sync::Weak<Mutex<Option<Guard>>>);

impl Handover {
    fn new(guard: Guard) -> Handover {
        Handover(Arc::new(Mutex::new(Some(guard))))
    }

    /// The guard, unless someone took it already.
    pub(crate) fn take(&self) -> Option<Guard> {
        self.0.lock().expect("hand-over lock").take()
    }

    fn take_back(&self) -> TakeBack {
        TakeBack(Arc::downgrade(&self.0))
    }
}

impl TakeBack {
    fn unless_taken_within(self, bound: Duration) {
        background::runtime().spawn(async move {
            tokio::time::sleep(bound).await;
            let Some(handover) = self.0.upgrade() else {
                return;
            };
            let untaken = handover.lock().expect("hand-over lock").take();
            if let Some(untaken) = untaken {
                tracing::debug!(resource = %untaken.hold().resource, ?bound, "a hand-over was not taken in time: it goes on");
                drop(untaken);
            }
        });
    }
}

/// Ends a hold: stop the watchdog, then hand the lock to a local waiter if one is queued (and
/// the streak and `min_hold` allow), else release it on the nodes.
///
/// A lock passed on without a round trip (`Hold::pass_on`) is confirmed right after (the
/// `CONFIRM` script under the shared token), unless `LockerConfig::confirm_pass_on` is off. It tells the releaser the truth — `Ok(true)` only
/// if the lock was still ours in Redis, so nobody else can have been granted it during our
/// hold — or declares the recipient's lock lost (Redis lost it behind our back: a restart,
/// `FLUSHALL`, eviction, `force_unlock`). The recipient starts at once; only its own release
/// waits for the confirmation.
async fn finish(locker: Arc<LockerState>, mut hold: Hold) -> Result<bool, LockError> {
    if let Some(confirmed) = hold.confirmed.take() {
        let _ = confirmed.await;
    }
    hold.stop_watchdog.cancel();
    let held_for = hold.acquired_at.elapsed();
    let keep = hold.options.min_hold.saturating_sub(held_for);
    let protocol = &locker.protocol;
    let config = protocol.config();
    // Fair locks are never passed on in-process: a local waiter would jump the fair queue.
    if keep.is_zero() && !hold.options.fair && !hold.lease.is_lost() {
        while let Some(waiter) = locker
            .waiters
            .next_for_handoff(&hold.resource, config.max_local_handoffs)
        {
            let without_asking = hold.pass_on(&waiter.options);
            let confirm = without_asking.is_some() && config.confirm_pass_on;
            let passed_on = match without_asking {
                Some(grant) => Ok(grant),
                None => hand_off(protocol, &hold, &waiter.options).await,
            };
            match passed_on {
                Ok(grant) => {
                    let mut guard = Guard::start(
                        Arc::clone(&locker),
                        Arc::clone(&hold.resource),
                        Arc::clone(&hold.keys),
                        grant,
                        waiter.options.clone(),
                    );
                    // The recipient's release waits until `done` is dropped.
                    let confirming = confirm.then(|| {
                        let (done, confirmed) = oneshot::channel::<()>();
                        guard.hold_mut().confirmed = Some(confirmed);
                        (done, Arc::clone(&guard.hold().lease))
                    });
                    let handover = Handover::new(guard);
                    let take_back = handover.take_back();
                    let sent = waiter.grant.send(handover);
                    if sent.is_ok() {
                        take_back.unless_taken_within(
                            protocol.handover_bound(waiter.options.effective_ttl()),
                        );
                    }
                    match (sent, confirming) {
                        (Ok(()), Some((done, recipient))) => {
                            let outcome =
                                confirm_passed_on(protocol, &hold, &recipient, &waiter.options)
                                    .await;
                            drop(done);
                            observe::released("handoff", held_for);
                            return outcome;
                        }
                        (Ok(()), None) => {
                            observe::released("handoff", held_for);
                            return Ok(true);
                        }
                        // The waiter gave up meanwhile: the lock is ours again, under the new token.
                        (Err(handover), _) => {
                            let guard = handover.take().expect("a hand-over never sent is ours");
                            hold = guard.into_hold();
                            hold.confirmed = None;
                        }
                    }
                }
                Err(HandoffFailed::NotOurs) => {
                    locker.waiters.handoff_failed(&hold.resource, waiter);
                    observe::released("not_held", held_for);
                    return Ok(false);
                }
                Err(HandoffFailed::Unavailable(err)) => {
                    locker.waiters.handoff_failed(&hold.resource, waiter);
                    observe::released("failed", held_for);
                    return Err(err);
                }
            }
        }
    }
    let timeout = protocol.call_timeout(hold.options.effective_ttl());
    locker
        .waiters
        .end_streak(&hold.resource, config.yield_window);
    // The key lives at most a TTL past the last extension, which began before the validity
    // it confirmed ends (`extend` may have asked for more than the options' TTL).
    let left = hold
        .lease
        .valid_until()
        .saturating_duration_since(Instant::now());
    let ttl = hold.options.effective_ttl();
    let expires_within = ttl.max(left) + quorum::drift(ttl.max(left)) + config.node_timeout;
    let outcome = protocol
        .release(&hold.keys, &hold.token, keep, timeout, expires_within)
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
            Err(protocol.unavailable(&hold.resource, errors))
        }
    }
}

/// Passes `hold`'s lock on through Redis (see [`Protocol::hand_off`]).
async fn hand_off(
    protocol: &Protocol,
    hold: &Hold,
    options: &LockOptions,
) -> Result<Grant, HandoffFailed> {
    // The old lock lives at most its TTL past now (or what is left of a longer extension).
    let old_lock_left = hold
        .lease
        .valid_until()
        .saturating_duration_since(Instant::now())
        .max(hold.options.effective_ttl());
    protocol
        .hand_off(
            &hold.resource,
            &hold.keys,
            &hold.token,
            old_lock_left,
            options,
        )
        .await
}

/// After a pass-on without a round trip: confirms in Redis that the shared token still owns the
/// lock (see [`finish`]).
async fn confirm_passed_on(
    protocol: &Protocol,
    hold: &Hold,
    recipient: &Lease,
    options: &LockOptions,
) -> Result<bool, LockError> {
    let timeout = protocol.call_timeout(options.effective_ttl());
    match protocol.confirm(&hold.keys, &hold.token, timeout).await {
        Ok(true) => Ok(true),
        Ok(false) => {
            observe::lost();
            tracing::warn!(resource = %hold.resource, fence = hold.fence, "lock was no longer held when passed on: the recipient's lock is lost");
            recipient.declare_lost();
            Ok(false)
        }
        Err(errors) => Err(protocol.unavailable(&hold.resource, errors)),
    }
}
