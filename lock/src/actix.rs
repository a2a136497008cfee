//! actix-web integration: [`LockError`] as an HTTP response, and the extractor that finds the
//! [`Locker`] in app data for `#[distributed_lock]` handlers.

use crate::{FromLockError, LockError, Locker};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use std::future::{ready, Ready};
use std::ops::Deref;

/// `Busy` → `423 Locked` with `Retry-After` and `{"error":"lock_busy","resource":…}`;
/// `Unavailable` → `503` `{"error":"lock_unavailable"}`; `InvalidResource` → `400`;
/// `Lost` → `409`; configuration mistakes → `500`. Node addresses are logged, never sent.
impl ResponseError for LockError {
    fn status_code(&self) -> StatusCode {
        match self {
            LockError::Busy { .. } => StatusCode::LOCKED,
            LockError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            LockError::InvalidResource { .. } => StatusCode::BAD_REQUEST,
            LockError::Lost { .. } => StatusCode::CONFLICT,
            LockError::InvalidOptions(_) | LockError::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let body = match self {
            LockError::Busy {
                resource,
                retry_after,
                ..
            } => {
                let seconds = retry_after.map_or(1, |wait| wait.as_secs_f64().ceil() as u64);
                response.insert_header(("Retry-After", seconds.clamp(1, 60).to_string()));
                serde_json::json!({
                    "error": self.code(),
                    "resource": resource,
                    "message": "the resource is locked by another request; retry later",
                })
            }
            LockError::Unavailable { .. } => {
                // Nodes that do not answer are retried on the next attempt; a second is about
                // what a restart or failover takes to be noticed.
                response.insert_header(("Retry-After", "1"));
                serde_json::json!({
                "error": self.code(),
                "message": "the lock service is unavailable; retry later",
                })
            }
            LockError::InvalidResource { resource, .. } | LockError::Lost { resource } => {
                serde_json::json!({ "error": self.code(), "resource": resource, "message": self.to_string() })
            }
            LockError::InvalidOptions(_) | LockError::Config(_) => {
                serde_json::json!({ "error": self.code(), "message": "lock misconfigured; see the server log" })
            }
        };
        response.json(body)
    }
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
                HttpResponse::InternalServerError().json(serde_json::json!({
                    "error": "lock_not_configured",
                    "message": "no fencelock::Locker registered as app data",
                })),
            )
            .into()
        }))
    }
}
