//! axum integration: [`LockError`] as a response (the same status codes and JSON as with
//! actix-web), and the extractor that finds the [`Locker`] in a request extension for
//! `#[distributed_lock(axum, ...)]` handlers. (Built on `axum-core`, which axum re-exports.)

use crate::http::ErrorAnswer;
use crate::{FromLockError, LockError, Locker};
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use std::ops::Deref;

fn response(answer: ErrorAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).expect("a valid status code");
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body.to_string(),
    )
        .into_response();
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The answers `actix-web` gives too: `Busy` → `423` with `Retry-After`, `Unavailable` → `503`
/// with `Retry-After`, `InvalidResource` → `400`, `Lost` → `409`, configuration → `500`; a
/// JSON body with a stable `error` code.
impl IntoResponse for LockError {
    fn into_response(self) -> Response {
        response(ErrorAnswer::of(&self))
    }
}

impl FromLockError for Response {
    fn from_lock_error(error: LockError) -> Self {
        error.into_response()
    }
}

/// The response for a lock failure (used by `#[distributed_lock]` on `impl IntoResponse`
/// handlers).
pub fn lock_error_response(error: LockError) -> Response {
    error.into_response()
}

/// Extracts the [`Locker`] put in the request extensions (`Router::layer(Extension(locker))`).
/// `#[distributed_lock(axum, ...)]` adds it to handlers that do not say `locker = ...`; with the
/// Locker in your `State`, write `locker = state.locker` instead.
#[derive(Debug, Clone)]
pub struct AxumLocker(Locker);

impl Deref for AxumLocker {
    type Target = Locker;

    fn deref(&self) -> &Locker {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AxumLocker {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Locker>() {
            Some(locker) => Ok(AxumLocker(locker.clone())),
            None => {
                tracing::error!(
                    path = parts.uri.path(),
                    "#[distributed_lock(axum)] handler called, but no fencelock::Locker is in the \
                     request extensions: add `.layer(Extension(locker))` to the Router"
                );
                Err(response(ErrorAnswer::not_configured("a request extension")))
            }
        }
    }
}

/// One of two responses, for `impl IntoResponse` handlers: the lock failure or the body's.
#[derive(Debug)]
pub enum Either<L, R> {
    /// The lock failure's response.
    Left(L),
    /// The handler's own.
    Right(R),
}

impl<L: IntoResponse, R: IntoResponse> IntoResponse for Either<L, R> {
    fn into_response(self) -> Response {
        match self {
            Either::Left(left) => left.into_response(),
            Either::Right(right) => right.into_response(),
        }
    }
}
