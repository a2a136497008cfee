//! What `#[distributed_lock]` expands to. Not a public API: names here may change at any time.

pub use crate::{FromLockError, Guard, LockError, LockOptions, Locker, MultiGuard};
pub use tracing::Instrument;

#[cfg(feature = "actix")]
pub use crate::actix::{lock_error_response, AppLocker};
#[cfg(feature = "axum")]
pub use crate::axum::{
    lock_error_response as axum_lock_error_response, AxumLocker, Either as AxumEither,
};
#[cfg(feature = "actix")]
pub use actix_web::Either;

use std::time::Duration;

/// The attribute's options: what it was given (plain arguments keep the generated code short),
/// and `LockOptions::new()`'s defaults for the rest (one source of truth for them: the
/// runtime's; the macro passes only what the user wrote).
pub fn options(
    ttl_ms: Option<u64>,
    wait_ms: Option<u64>,
    auto_extend: bool,
    fair: bool,
    min_hold_ms: Option<u64>,
) -> LockOptions {
    let mut options = LockOptions::new().auto_extend(auto_extend).fair(fair);
    if let Some(ttl_ms) = ttl_ms {
        options = options.ttl(Duration::from_millis(ttl_ms));
    }
    if let Some(wait_ms) = wait_ms {
        options = options.wait(Duration::from_millis(wait_ms));
    }
    if let Some(min_hold_ms) = min_hold_ms {
        options = options.min_hold(Duration::from_millis(min_hold_ms));
    }
    options
}

pub async fn acquire_many(
    locker: &Locker,
    resources: &[String],
    options: &LockOptions,
) -> Result<MultiGuard, LockError> {
    locker.acquire_many(resources, options).await
}

/// Like [`release`], for every lock of a list.
pub async fn release_many(guard: MultiGuard) {
    let resources: Vec<String> = guard
        .guards()
        .iter()
        .map(|guard| guard.resource().to_string())
        .collect();
    match guard.release().await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                ?resources,
                "a lock expired or was taken over before the body finished"
            )
        }
        Err(error) => {
            tracing::warn!(?resources, %error, "lock release failed; they expire by their TTL")
        }
    }
}

/// Like [`run_until_lost`]: stops when any of the locks is lost.
pub async fn run_until_lost_many<F: std::future::Future>(
    guard: &MultiGuard,
    body: F,
) -> Result<F::Output, LockError> {
    tokio::select! {
        biased;
        output = body => Ok(output),
        () = guard.lost() => {
            // `lost()` resolved, so one is lost; the first resource names it otherwise.
            let resource = guard
                .lost_resource()
                .unwrap_or_else(|| guard.guards()[0].resource())
                .to_string();
            tracing::warn!(%resource, "lock lost while held: the body was stopped");
            Err(LockError::Lost { resource })
        }
    }
}

/// Like [`hold_span`], with every resource and fence.
pub fn hold_span_many(guard: &MultiGuard) -> tracing::Span {
    let held: Vec<(&str, u64)> = guard
        .guards()
        .iter()
        .map(|guard| (guard.resource(), guard.fence()))
        .collect();
    tracing::info_span!("fencelock.hold", resources = ?held)
}

pub async fn acquire(
    locker: &Locker,
    resource: &str,
    options: &LockOptions,
) -> Result<Guard, LockError> {
    locker.acquire(resource, options).await
}

/// Releases after the body; a lock found lost is logged (the body's result stands: fence your
/// writes so a lost lock cannot corrupt them).
pub async fn release(guard: Guard) {
    let resource = guard.resource().to_string();
    match guard.release().await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(%resource, "lock expired or was taken over before the body finished")
        }
        Err(error) => {
            // Unavailable: too few nodes answered to tell whether the lock was still ours
            // during the body (the release is resent to them in the background, and what it
            // cannot reach expires by its TTL).
            tracing::warn!(
                %resource,
                %error,
                "lock release unanswered: whether the lock was ours to the end is unknown; \
                 resent in the background, the rest expires by its TTL"
            )
        }
    }
}

/// Runs the body until it completes, or until the lock is lost (`cancel_on_lost`): then the
/// body is dropped and `LockError::Lost` returned.
pub async fn run_until_lost<F: std::future::Future>(
    guard: &Guard,
    body: F,
) -> Result<F::Output, LockError> {
    tokio::select! {
        biased;
        output = body => Ok(output),
        () = guard.lost() => {
            tracing::warn!(resource = guard.resource(), "lock lost while held: the body was stopped");
            Err(LockError::Lost { resource: guard.resource().to_string() })
        }
    }
}

/// The span the body runs in: every log line inside carries the resource and fence.
pub fn hold_span(guard: &Guard) -> tracing::Span {
    tracing::info_span!(
        "fencelock.hold",
        resource = guard.resource(),
        fence = guard.fence()
    )
}
