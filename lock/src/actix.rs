//! actix-web integration: [`LockError`] as an HTTP response, and the extractor that finds the
//! [`Locker`] in app data for `#[distributed_lock]` handlers.

use crate::http::ErrorAnswer;
use crate::{FromLockError, LockError, Locker};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use std::future::{ready, Ready};
use std::ops::Deref;

/// The answers every framework gets: `Busy` → `423 Locked` with `Retry-After` and
/// `{"error":"lock_busy","resource":…}`; `Unavailable` → `503` `{"error":"lock_unavailable"}`;
/// `InvalidResource` → `400`; `Lost` → `409`; configuration mistakes → `500`.
impl ResponseError for LockError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(ErrorAnswer::of(self).status).expect("a valid status code")
    }

    fn error_response(&self) -> HttpResponse {
        response(ErrorAnswer::of(self))
    }
}

fn response(answer: ErrorAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).expect("a valid status code");
    let mut response = HttpResponse::build(status);
    if let Some(seconds) = answer.retry_after {
        response.insert_header(("Retry-After", seconds.to_string()));
    }
    response.json(answer.body)
}

impl FromLockError for HttpResponse {
    fn from_lock_error(error: LockError) -> Self {
        error.error_response()
    }
}

/// The response for a lock failure (used by `#[distributed_lock]` on `impl Responder` handlers).
pub fn lock_error_response(error: LockError) -> HttpResponse {
    error.error_response()
}

/// Extracts the [`Locker`] registered as app data (`web::Data<Locker>` or a plain `Locker`).
/// `#[distributed_lock]` adds it to handlers that do not say `locker = ...`.
#[derive(Debug, Clone)]
pub struct AppLocker(Locker);

impl Deref for AppLocker {
    type Target = Locker;

    fn deref(&self) -> &Locker {
        &self.0
    }
}

impl FromRequest for AppLocker {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let locker = req
            .app_data::<web::Data<Locker>>()
            .map(|data| data.get_ref().clone())
            .or_else(|| req.app_data::<Locker>().cloned());
        ready(locker.map(AppLocker).ok_or_else(|| {
            tracing::error!(
                path = req.path(),
                "#[distributed_lock] handler called, but no fencelock::Locker is registered: add \
                 `.app_data(web::Data::new(locker))` to the App"
            );
            actix_web::error::InternalError::from_response(
                "no Locker registered",
                response(ErrorAnswer::not_configured("app data")),
            )
            .into()
        }))
    }
}
