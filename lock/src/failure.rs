//! How a lock failure becomes a function's return value under `#[distributed_lock]`.

use crate::LockError;

/// Turns a lock failure into a value of a function's return type, so that
/// `#[distributed_lock]` can return early when the lock cannot be had.
///
/// Implemented for `Result<T, E>` where `E: From<LockError>` (the failure becomes `Err`), for
/// `()` (jobs: the failure is logged and the run skipped) and, with the `actix` feature, for
/// `actix_web::HttpResponse` (the [`LockError`] response: 423, 503 or 400). Implement it for
/// your own return types to choose another mapping.
#[diagnostic::on_unimplemented(
    message = "`#[distributed_lock]` cannot return a lock failure as `{Self}`",
    note = "return `Result<_, E>` with `E: From<fencelock::LockError>`, `HttpResponse`, `impl Responder` or `()`, or implement `fencelock::FromLockError` for `{Self}`"
)]
pub trait FromLockError {
    /// The value to return when the lock could not be acquired.
    fn from_lock_error(error: LockError) -> Self;
}

impl<T, E: From<LockError>> FromLockError for Result<T, E> {
    fn from_lock_error(error: LockError) -> Self {
        Err(E::from(error))
    }
}

impl FromLockError for () {
    fn from_lock_error(error: LockError) {
        match &error {
            LockError::Busy { .. } => tracing::debug!(%error, "skipped: lock held elsewhere"),
            _ => tracing::warn!(%error, "skipped: lock not acquired"),
        }
    }
}
