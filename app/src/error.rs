//! The service's error type: every failure has a status and a stable JSON `error` code.

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use fencelock::LockError;
use serde_json::json;

/// `Retry-After` of a `503 database_unavailable`: about how long a database restart or failover
/// takes to be noticed (see `db::Database`).
pub const DATABASE_RETRY_AFTER_SECS: u64 = 1;
/// `Retry-After` of a `503 overloaded`: a loaded database or pool frees up in about this long.
pub const OVERLOADED_RETRY_AFTER_SECS: u64 = 1;

/// What can go wrong in a request. Every answer but one says that nothing was written: bad
/// input is a 4xx, lock trouble keeps its own codes (`lock_busy` 423, `lock_unavailable` 503),
/// the database being down (`database_unavailable`) or loaded (`overloaded`) is a 503 with
/// `Retry-After`. The exception names itself: `504 outcome_unknown` (a write whose answer was
/// lost), without `Retry-After`.
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
    /// Well-formed input that describes nothing the service can do (a transfer to oneself):
    /// 422 with a stable code.
    #[error("{message}")]
    Unprocessable {
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
    /// PostgreSQL refused a query for a reason that is not load (the database answered, the
    /// transaction was rolled back): a defect of the service, `500 database_error`.
    #[error("database error: {0}")]
    Database(String),
    /// PostgreSQL could not be reached in time (no connection, no answer, or a known outage).
    #[error("database unreachable: {0}")]
    DatabaseUnreachable(String),
    /// The database answers but cannot take this request now (too many clients, every pooled
    /// connection busy, a statement or lock timeout); nothing was written.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A write was sent and its answer lost (the connection dropped, or the database stopped
    /// answering): it may or may not have been committed.
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &error {
            // diesel-async reports a closed connection as "unable to send" (no SQLSTATE).
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | Error::BrokenTransactionManager => AppError::DatabaseUnreachable(error.to_string()),
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                AppError::Overloaded(error.to_string())
            }
            // The server ended the session (SQLSTATE 57P01, 57P02, 25P03): the connection is
            // lost, whatever the statement was.
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().starts_with("terminating connection") =>
            {
                AppError::DatabaseUnreachable(error.to_string())
            }
            // The session's own `statement_timeout` and `lock_timeout` (SQLSTATE 57014 and
            // 55P03), which diesel reports without their codes: matched by the server's text
            // (English, PostgreSQL's default; a server set to another language turns these
            // into `database_error`).
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if LOAD_MESSAGES
                    .iter()
                    .any(|message| info.message().contains(message)) =>
            {
                AppError::Overloaded(error.to_string())
            }
            _ => AppError::Database(error.to_string()),
        }
    }
}

/// Every `error` code the service sends, for the published contract (`api.rs`). A test checks
/// that each code an [`AppError`] can carry is here.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorCode {
    InvalidPath,
    InvalidQuery,
    InvalidJson,
    InvalidBody,
    InvalidStock,
    InvalidName,
    InvalidIdempotencyKey,
    SameUser,
    InvalidLockResource,
    ResetDisabled,
    NotFound,
    ProductNotFound,
    UserNotFound,
    MethodNotAllowed,
    OutOfStock,
    InsufficientBalance,
    BalanceOverflow,
    SeatTaken,
    LockLost,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    BodyTooLarge,
    UnsupportedMediaType,
    LockBusy,
    HeadersTooLarge,
    DatabaseError,
    InvalidLockOptions,
    LockConfig,
    LockNotConfigured,
    LockUnavailable,
    DatabaseUnavailable,
    Overloaded,
    OutcomeUnknown,
}

/// PostgreSQL's messages for errors that mean "too much at once", not "wrong".
const LOAD_MESSAGES: [&str; 3] = [
    "canceling statement due to statement timeout",
    "canceling statement due to lock timeout",
    "deadlock detected",
];

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
            | AppError::Unprocessable { code, .. }
            | AppError::NotFound { code, .. }
            | AppError::Conflict { code, .. } => code,
            AppError::PayloadTooLarge { .. } => "body_too_large",
            AppError::ResetDisabled => "reset_disabled",
            AppError::Lock(lock) => lock.code(),
            AppError::FencedOut { .. } => "lock_lost",
            AppError::Database(_) => "database_error",
            AppError::DatabaseUnreachable(_) => "database_unavailable",
            AppError::Overloaded(_) => "overloaded",
            AppError::OutcomeUnknown(_) => "outcome_unknown",
            // Only inside the service: the key's first request committed first, or is
            // committing (what a client would be told is that it is in flight).
            AppError::AlreadyApplied => "idempotency_key_in_flight",
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
            AppError::KeyReused | AppError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AppError::ResetDisabled => StatusCode::FORBIDDEN,
            AppError::Lock(lock) => lock.status_code(),
            AppError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::DatabaseUnreachable(_) | AppError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // The lock's own mapping carries Retry-After and the resource.
            AppError::Lock(lock) => lock.error_response(),
            AppError::DatabaseUnreachable(_) => {
                tracing::warn!(detail = %self, "database unreachable");
                HttpResponse::ServiceUnavailable()
                    .insert_header((RETRY_AFTER, DATABASE_RETRY_AFTER_SECS.to_string()))
                    .json(json!({"error": self.code(), "message": "the database is unavailable; nothing was written; retry later"}))
            }
            AppError::Overloaded(_) => {
                tracing::warn!(detail = %self, "overloaded");
                HttpResponse::ServiceUnavailable()
                    .insert_header((RETRY_AFTER, OVERLOADED_RETRY_AFTER_SECS.to_string()))
                    .json(json!({"error": self.code(), "message": "the service is overloaded; nothing was written; retry later"}))
            }
            AppError::Database(detail) => {
                tracing::error!(%detail, "database error");
                HttpResponse::InternalServerError().json(
                    json!({"error": self.code(), "message": "the database refused the request; nothing was written"}),
                )
            }
            AppError::OutcomeUnknown(detail) => {
                tracing::error!(%detail, "write outcome unknown");
                HttpResponse::GatewayTimeout().json(json!({
                    "error": self.code(),
                    "message": "the write may or may not have been applied: repeat it with the same Idempotency-Key to learn its outcome, or read the resource"
                }))
            }
            _ => HttpResponse::build(self.status_code()).json(self.body()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every code an `AppError` can be sent with is in the published `ErrorCode`.
    #[test]
    fn every_code_is_published() {
        let errors = [
            AppError::bad_request("invalid_path", ""),
            AppError::Unprocessable {
                code: "same_user",
                message: String::new(),
            },
            AppError::PayloadTooLarge { limit: 1 },
            AppError::NotFound {
                code: "product_not_found",
                what: "product",
                id: 1,
            },
            AppError::Conflict {
                code: "out_of_stock",
                message: String::new(),
            },
            AppError::ResetDisabled,
            AppError::Lock(LockError::Busy {
                resource: "r".into(),
                waited: Duration::ZERO,
                retry_after: None,
            }),
            AppError::Lock(LockError::Lost {
                resource: "r".into(),
            }),
            AppError::Lock(LockError::Config(String::new())),
            AppError::Lock(LockError::InvalidOptions("")),
            AppError::FencedOut { fence: 1 },
            AppError::AlreadyApplied,
            AppError::KeyReused,
            AppError::KeyInFlight,
            AppError::UnsupportedMediaType,
            AppError::HeadersTooLarge { limit: 1 },
            AppError::Database(String::new()),
            AppError::DatabaseUnreachable(String::new()),
            AppError::Overloaded(String::new()),
            AppError::OutcomeUnknown(String::new()),
        ];
        for error in errors {
            let code = error.code();
            let published: Result<ErrorCode, _> = serde_json::from_value(serde_json::json!(code));
            assert!(published.is_ok(), "{code} is not in ErrorCode");
        }
    }
}
