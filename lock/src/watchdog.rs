//! The auto-extend watchdog: a task on the background runtime that keeps a held lock alive
//! while its guard lives, and declares it lost when it cannot.

use crate::background;
use crate::error::NodeErrors;
use crate::hold::Hold;
use crate::observe;
use crate::protocol::Protocol;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Extends the lock every `ttl / 3` until stopped (Redisson's renewal, node-redlock's `using`,
/// without the blocking). An extension that fails or times out is retried, each try bounded by
/// the validity left; the lock is declared lost only when an extension is *refused* (the key is
/// gone or someone else's) or the validity runs out with none confirmed.
pub(crate) fn spawn(protocol: &Arc<Protocol>, hold: &Hold) {
    let protocol = Arc::clone(protocol);
    let keys = Arc::clone(&hold.keys);
    let resource = Arc::clone(&hold.resource);
    let token = hold.token.clone();
    let ttl = hold.options.effective_ttl();
    let lease = Arc::clone(&hold.lease);
    let stop = hold.stop_watchdog.clone();
    let period = (ttl / 3).max(Duration::from_millis(1));
    let retry_pause = (ttl / 20).max(Duration::from_millis(1));
    background::runtime().spawn(async move {
        // A guard taken late (handed over to a waiter that was busy elsewhere) may have less
        // validity left than a period: the first extension comes by half of what is left.
        let left = lease.valid_until().saturating_duration_since(Instant::now());
        let mut next = Instant::now() + period.min(left / 2);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let left = lease.valid_until().saturating_duration_since(Instant::now());
            if left.is_zero() {
                observe::lost();
                tracing::warn!(%resource, "lock lost: validity ran out before an extension was confirmed");
                lease.declare_lost();
                return;
            }
            let started = Instant::now();
            let outcome = protocol.extend(&keys, &token, ttl, left).await;
            if stop.is_cancelled() {
                return;
            }
            match outcome {
                Ok(Some(valid_until)) => {
                    observe::extension("ok");
                    if !lease.extend_to(valid_until) {
                        observe::lost();
                        tracing::warn!(%resource, "lock lost: validity ran out before the extension was confirmed");
                        return;
                    }
                    next = started + period;
                }
                Ok(None) => {
                    observe::extension("refused");
                    observe::lost();
                    tracing::warn!(%resource, "lock lost: extension refused (expired or taken over)");
                    lease.declare_lost();
                    return;
                }
                Err(errors) => {
                    observe::extension("failed");
                    tracing::warn!(%resource, errors = %NodeErrors(errors), "extension failed; retrying within the validity left");
                    next = Instant::now() + retry_pause;
                }
            }
        }
    });
}
