//! The service's error type: every failure has a status and a stable JSON `error` code.

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use fencelock::LockError;
use serde_json::json;

/// `Retry-After` of a `503 database_unavailable`: about how long a database restart or failover
/// takes to be noticed (see `db::Outage`).
pub const DATABASE_RETRY_AFTER_SECS: u64 = 1;

/// What can go wrong in a request. Bad input is a 4xx that wrote nothing; lock trouble keeps
/// its own codes (`lock_busy` 423, `lock_unavailable` 503); the database being down is a 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// The request is malformed; `code` is stable, `message` explains.
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// The body is larger than the 16 KiB limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A resource that does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Stable code, e.g. `product_not_found`.
        code: &'static str,
        /// What was looked up.
        what: &'static str,
        /// Its id.
        id: i64,
    },
    /// A business rule refused the operation (`out_of_stock`, `insufficient_balance`, …).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// `POST /product/reset` while `ALLOW_RESET` is off.
    #[error("reset is disabled on this instance (ALLOW_RESET is off)")]
    ResetDisabled,
    /// The lock could not be had (or was lost).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A fenced write was rejected: the row changed after this holder read it (a newer holder
    /// wrote, or a stale holder's write landed late). Nothing was changed.
    #[error("the lock (fence {fence}) was lost before the write: the data changed since it was read; nothing was changed")]
    FencedOut {
        /// The fence this request held.
        fence: i64,
    },
    /// Another request with the same `Idempotency-Key` committed first; its response is replayed.
    /// Handled inside the service, never sent as such.
    #[error("a request with this Idempotency-Key completed first")]
    AlreadyApplied,
    /// The `Idempotency-Key` was first sent with a different request (method, path or body).
    #[error("this Idempotency-Key was used for a different request (method, path or body); use a new key")]
    KeyReused,
    /// A request with the same `Idempotency-Key` is still being handled.
    #[error("a request with this Idempotency-Key is still being handled; retry later")]
    KeyInFlight,
    /// A request body that is not `application/json`.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// The request's headers are larger than the limit.
    #[error("request headers larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// PostgreSQL refused a query (the database answered).
    #[error("database error: {0}")]
    Database(String),
    /// PostgreSQL could not be reached in time (no connection, no answer, or a known outage).
    #[error("database unreachable: {0}")]
    DatabaseUnreachable(String),
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match error {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::BrokenTransactionManager => AppError::DatabaseUnreachable(error.to_string()),
            other => AppError::Database(other.to_string()),
        }
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for AppError {
    fn from(error: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        AppError::DatabaseUnreachable(format!("no database connection: {error}"))
    }
}

impl AppError {
    /// A refusal that is the answer to the request (to be replayed for its Idempotency-Key),
    /// as opposed to a transient failure the client should retry.
    pub fn is_final(&self) -> bool {
        matches!(self, AppError::NotFound { .. } | AppError::Conflict { .. })
    }

    /// The JSON body this error is sent with.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": self.code(), "message": self.to_string()})
    }

    /// Shorthand for a 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest { code, .. }
            | AppError::NotFound { code, .. }
            | AppError::Conflict { code, .. } => code,
            AppError::PayloadTooLarge { .. } => "body_too_large",
            AppError::ResetDisabled => "reset_disabled",
            AppError::Lock(lock) => lock.code(),
            AppError::FencedOut { .. } => "lock_lost",
            AppError::Database(_) | AppError::DatabaseUnreachable(_) => "database_unavailable",
            AppError::AlreadyApplied => "idempotency_conflict",
            AppError::KeyReused => "idempotency_key_reused",
            AppError::KeyInFlight => "idempotency_key_in_flight",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::HeadersTooLarge { .. } => "headers_too_large",
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict { .. }
            | AppError::FencedOut { .. }
            | AppError::AlreadyApplied
            | AppError::KeyInFlight => StatusCode::CONFLICT,
            AppError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AppError::ResetDisabled => StatusCode::FORBIDDEN,
            AppError::Lock(lock) => lock.status_code(),
            AppError::Database(_) | AppError::DatabaseUnreachable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // The lock's own mapping carries Retry-After and the resource.
            AppError::Lock(lock) => lock.error_response(),
            AppError::Database(_) | AppError::DatabaseUnreachable(_) => {
                match self {
                    AppError::Database(detail) => tracing::error!(%detail, "database error"),
                    _ => tracing::warn!(detail = %self, "database unreachable"),
                }
                HttpResponse::ServiceUnavailable()
                    .insert_header((RETRY_AFTER, DATABASE_RETRY_AFTER_SECS.to_string()))
                    .json(json!({"error": self.code(), "message": "the database is unavailable; retry later"}))
            }
            _ => HttpResponse::build(self.status_code()).json(self.body()),
        }
    }
}
