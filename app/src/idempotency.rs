//! `Idempotency-Key`: the first response to a key is stored in the same transaction as the
//! write it describes; repeats get that response back and change nothing.
//!
//! The primary key on `(scope, key)` is what makes this safe without any lock: two requests
//! with one key both try to insert it, the second blocks until the first commits, then fails
//! with a unique violation and rolls its whole transaction back.

use crate::db::Pool;
use crate::error::AppError;
use crate::schema::idempotency_keys;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A validated key, scoped to the operation and target it was sent to.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
}

/// A response as stored for a key.
#[derive(Debug, Clone)]
pub struct Stored {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

impl IdempotencyKey {
    /// What the key applies to (operation and target).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The client's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Reads the `Idempotency-Key` header: 1 to 200 visible ASCII characters.
    pub fn from_request(
        req: &HttpRequest,
        scope: String,
    ) -> Result<Option<IdempotencyKey>, AppError> {
        let Some(value) = req.headers().get("idempotency-key") else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| {
                (1..=200).contains(&key.len()) && key.chars().all(|c| c.is_ascii_graphic())
            })
            .ok_or_else(|| {
                AppError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                )
            })?;
        Ok(Some(IdempotencyKey {
            scope,
            key: key.to_string(),
        }))
    }
}

impl Stored {
    /// A success or final refusal, ready to store.
    pub fn new(status: StatusCode, body: &serde_json::Value) -> Stored {
        Stored {
            status: status.as_u16(),
            body: body.to_string(),
        }
    }

    /// The response; `replayed` marks a repeat (`Idempotent-Replayed: true`).
    pub fn response(&self, replayed: bool) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = HttpResponse::build(status);
        if replayed {
            response.insert_header(("Idempotent-Replayed", "true"));
        }
        response
            .content_type("application/json")
            .body(self.body.clone())
    }
}

/// The stored response for `key`, if any.
pub async fn lookup(
    conn: &mut AsyncPgConnection,
    key: &IdempotencyKey,
) -> Result<Option<Stored>, AppError> {
    let row: Option<(i32, String)> = idempotency_keys::table
        .filter(idempotency_keys::scope.eq(&key.scope))
        .filter(idempotency_keys::key.eq(&key.key))
        .select((idempotency_keys::status, idempotency_keys::body))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(|(status, body)| Stored {
        status: status as u16,
        body,
    }))
}

/// The first response to `key` as a replay, if there was one (no key: nothing to replay).
pub async fn replay(
    conn: &mut AsyncPgConnection,
    key: Option<&IdempotencyKey>,
) -> Result<Option<HttpResponse>, AppError> {
    match key {
        Some(key) => Ok(lookup(conn, key).await?.map(|stored| stored.response(true))),
        None => Ok(None),
    }
}

/// Stores `stored` for `key` (inside the caller's transaction). A key that another request
/// committed first is [`AppError::AlreadyApplied`].
pub async fn save(
    conn: &mut AsyncPgConnection,
    key: &IdempotencyKey,
    stored: &Stored,
) -> Result<(), AppError> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::scope.eq(&key.scope),
            idempotency_keys::key.eq(&key.key),
            idempotency_keys::status.eq(i32::from(stored.status)),
            idempotency_keys::body.eq(&stored.body),
        ))
        .execute(conn)
        .await
        .map(drop)
        .map_err(conflict_or_database)
}

/// A unique violation on the key means another request committed it first.
pub fn conflict_or_database(err: DieselError) -> AppError {
    match err {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            AppError::AlreadyApplied
        }
        other => other.into(),
    }
}

/// Turns the outcome of an idempotent write into the response: replays the winner's response
/// when another request with the key got there first, and stores final refusals (404, 409) so
/// that repeats get them too.
///
/// A connection is taken from `pool` only when one of those is needed.
pub async fn respond(
    pool: &Pool,
    key: Option<&IdempotencyKey>,
    outcome: Result<Stored, AppError>,
) -> Result<HttpResponse, AppError> {
    match (outcome, key) {
        (Ok(stored), _) => Ok(stored.response(false)),
        (Err(AppError::AlreadyApplied), Some(key)) => {
            match lookup(&mut *pool.get().await?, key).await? {
                Some(stored) => Ok(stored.response(true)),
                None => Err(AppError::AlreadyApplied),
            }
        }
        (Err(err), Some(key)) if err.is_final() => {
            let stored = Stored::new(actix_web::ResponseError::status_code(&err), &err.body());
            let mut conn = pool.get().await?;
            match save(&mut conn, key, &stored).await {
                Ok(()) => Err(err),
                Err(AppError::AlreadyApplied) => match lookup(&mut conn, key).await? {
                    Some(first) => Ok(first.response(true)),
                    None => Err(err),
                },
                Err(other) => Err(other),
            }
        }
        (Err(err), _) => Err(err),
    }
}
