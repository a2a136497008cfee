//! Metrics through the `metrics` facade (the app installs an exporter), names in one place.
//! Without the `metrics` feature the names stay (for dashboards built from them) and recording
//! compiles to nothing.

use std::time::Duration;

/// Acquisition attempts (one per round of scripts sent to the nodes).
pub const ATTEMPTS: &str = "fencelock_acquire_attempts_total";
/// Successful acquisitions, labelled `via` = `redis` | `handoff`.
pub const ACQUIRED: &str = "fencelock_acquired_total";
/// Acquisitions that gave up because the wait budget was spent.
pub const BUSY: &str = "fencelock_busy_total";
/// Operations that failed because Redis (or a quorum of it) was unreachable.
pub const UNAVAILABLE: &str = "fencelock_unavailable_total";
/// Auto-extensions, labelled `outcome` = `ok` | `refused` | `failed`.
pub const EXTENSIONS: &str = "fencelock_extensions_total";
/// Guards that learned their lock was lost while held.
pub const LOST: &str = "fencelock_lost_total";
/// Releases, labelled `outcome` = `released` | `handoff` | `not_held` | `failed`.
pub const RELEASES: &str = "fencelock_releases_total";
/// Turns this process gave to waiting processes instead of racing them (see `local.rs`).
pub const YIELDS: &str = "fencelock_yields_total";
/// Time from the call to `acquire` to holding the lock, in seconds.
pub const WAIT_SECONDS: &str = "fencelock_wait_seconds";
/// Time from acquisition to release, in seconds.
pub const HOLD_SECONDS: &str = "fencelock_hold_seconds";

/// Registers descriptions with the installed recorder (call once, after installing it).
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(ATTEMPTS, "Lock acquisition attempts sent to Redis");
    describe_counter!(ACQUIRED, "Locks acquired, by way of Redis or local handoff");
    describe_counter!(BUSY, "Acquisitions that gave up after the wait budget");
    describe_counter!(UNAVAILABLE, "Lock operations that found Redis unavailable");
    describe_counter!(EXTENSIONS, "Auto-extensions by outcome");
    describe_counter!(LOST, "Locks lost while held");
    describe_counter!(RELEASES, "Lock releases by outcome");
    describe_counter!(
        YIELDS,
        "Turns given to other processes after a handoff streak"
    );
    describe_histogram!(WAIT_SECONDS, Unit::Seconds, "Time spent waiting for a lock");
    describe_histogram!(HOLD_SECONDS, Unit::Seconds, "Time a lock was held");
}

/// Records only with the `metrics` feature (the functions then allow their unused arguments).
macro_rules! record {
    ($($body:tt)*) => {
        #[cfg(feature = "metrics")]
        {
            $($body)*
        }
    };
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn attempt() {
    record! {
    metrics::counter!(ATTEMPTS).increment(1);
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn acquired(via: &'static str, waited: Duration) {
    record! {
    metrics::counter!(ACQUIRED, "via" => via).increment(1);
    metrics::histogram!(WAIT_SECONDS).record(waited.as_secs_f64());
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn busy() {
    record! {
    metrics::counter!(BUSY).increment(1);
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn unavailable() {
    record! {
    metrics::counter!(UNAVAILABLE).increment(1);
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn extension(outcome: &'static str) {
    record! {
    metrics::counter!(EXTENSIONS, "outcome" => outcome).increment(1);
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn lost() {
    record! {
    metrics::counter!(LOST).increment(1);
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn released(outcome: &'static str, held: Duration) {
    record! {
    metrics::counter!(RELEASES, "outcome" => outcome).increment(1);
    metrics::histogram!(HOLD_SECONDS).record(held.as_secs_f64());
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn yielded() {
    record! {
    metrics::counter!(YIELDS).increment(1);
    }
}
