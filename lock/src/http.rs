//! A lock failure as an HTTP answer, the same for every web framework: status, `Retry-After`
//! and a JSON body with a stable `error` code. Node addresses are logged, never sent.

use crate::LockError;
use serde_json::{json, Value};

/// What a [`LockError`] answers over HTTP.
pub(crate) struct ErrorAnswer {
    pub status: u16,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl ErrorAnswer {
    /// `Busy` → `423 Locked` with `Retry-After` and `{"error":"lock_busy","resource":…}`;
    /// `Unavailable` → `503` with `Retry-After: 1`; `InvalidResource` → `400`; `Lost` → `409`;
    /// configuration mistakes → `500`.
    pub(crate) fn of(error: &LockError) -> ErrorAnswer {
        let code = error.code();
        let (status, retry_after, body) = match error {
            LockError::Busy {
                resource,
                retry_after,
                ..
            } => {
                let seconds = retry_after.map_or(1, |wait| wait.as_secs_f64().ceil() as u64);
                let body = json!({
                    "error": code,
                    "resource": resource,
                    "message": "the resource is locked by another request; retry later",
                });
                (423, Some(seconds.clamp(1, 60)), body)
            }
            // Nodes that do not answer are retried on the next attempt; a second is about what
            // a restart or failover takes to be noticed.
            LockError::Unavailable { .. } => (
                503,
                Some(1),
                json!({"error": code, "message": "the lock service is unavailable; retry later"}),
            ),
            LockError::InvalidResource { resource, .. } | LockError::Lost { resource } => {
                let status = if matches!(error, LockError::Lost { .. }) {
                    409
                } else {
                    400
                };
                let body =
                    json!({"error": code, "resource": resource, "message": error.to_string()});
                (status, None, body)
            }
            LockError::InvalidOptions(_) | LockError::Config(_) => (
                500,
                None,
                json!({"error": code, "message": "lock misconfigured; see the server log"}),
            ),
        };
        ErrorAnswer {
            status,
            retry_after,
            body,
        }
    }

    /// A handler asked for the [`crate::Locker`] from request data that has none.
    pub(crate) fn not_configured(where_: &str) -> ErrorAnswer {
        ErrorAnswer {
            status: 500,
            retry_after: None,
            body: json!({
                "error": "lock_not_configured",
                "message": format!("no fencelock::Locker registered as {where_}"),
            }),
        }
    }
}
