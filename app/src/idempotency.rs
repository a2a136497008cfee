//! `Idempotency-Key`, as the IETF httpapi draft describes it: the first response to a key is
//! stored in the same transaction as the write it describes and replayed for repeats of the
//! same request, which change nothing; the key sent with a different request (method, path or
//! body) is refused with 422; a repeat while the first is still being handled gets 409.
//!
//! "In flight" is a distributed lock on the key, taken without waiting for the whole request.
//! The primary key on `key` still backs it up: two requests with one key that both got past the
//! lock (its TTL ran out) both try to insert it; the second blocks until the first commits, then
//! fails with a unique violation and rolls its whole transaction back.

use crate::error::AppError;
use crate::schema::idempotency_keys;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fencelock::{LockError, LockOptions};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long a key stays "in flight" if its holder dies without releasing it (extended while the
/// request runs).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(10);

/// A validated key with the fingerprint of the request that carried it.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: String,
    operation: &'static str,
    fingerprint: String,
}

/// The raw request body, kept by [`crate::input::JsonBody`] for the request's fingerprint.
#[derive(Debug, Clone)]
pub struct RawBody(pub actix_web::web::Bytes);

/// A response as stored for a key.
#[derive(Debug, Clone)]
pub struct Stored {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

impl IdempotencyKey {
    /// The client's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Reads the `Idempotency-Key` header (1 to 200 visible ASCII characters) and fingerprints
    /// the request: method, path with query and body. `operation` names the handler in the
    /// stored record.
    pub fn from_request(
        req: &HttpRequest,
        operation: &'static str,
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
        let mut request = Sha256::new();
        request.update(req.method().as_str());
        request.update(b" ");
        request.update(req.uri().to_string());
        request.update(b"\n");
        match req.extensions().get::<RawBody>() {
            Some(RawBody(body)) => request.update(body),
            // A handler that reads its body some other way would make every body look alike.
            None => debug_assert!(false, "idempotent handlers read their body with JsonBody"),
        }
        Ok(Some(IdempotencyKey {
            key: key.to_string(),
            operation,
            fingerprint: hex(&request.finalize()),
        }))
    }

    /// The lock resource that marks the key in flight (hashed: keys may hold any visible
    /// character, the lock's key space wants no braces).
    fn in_flight_resource(&self) -> String {
        format!("idempotency:{}", hex(&Sha256::digest(&self.key)))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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

/// Runs `operation` at most once per key: a repeat is answered from the stored response
/// without running it (and without waiting for any lock it takes), the key reused for a
/// different request is 422, a repeat while the first is in flight is 409. `operation` gets the
/// key to store its response with ([`save`]) in the transaction of its write.
pub async fn run(
    state: &AppState,
    key: Option<IdempotencyKey>,
    operation: impl AsyncFnOnce(Option<&IdempotencyKey>) -> Result<Stored, AppError>,
) -> Result<HttpResponse, AppError> {
    let Some(key) = key else {
        return operation(None).await.map(|stored| stored.response(false));
    };
    let options = LockOptions::new().ttl(IN_FLIGHT_TTL).auto_extend(true);
    let in_flight = state
        .locker
        .try_acquire(&key.in_flight_resource(), &options)
        .await
        .map_err(|err| match err {
            LockError::Busy { .. } => AppError::KeyInFlight,
            other => AppError::Lock(other),
        })?;
    let response = async {
        let stored = state
            .db
            .bounded(async |conn| lookup(conn, &key).await)
            .await?;
        if let Some(first) = stored {
            return Ok(first.response(true));
        }
        let outcome = operation(Some(&key)).await;
        respond(state, &key, outcome).await
    }
    .await;
    // A failed release leaves the key marked until its TTL; the stored response is what counts.
    let _ = in_flight.release().await;
    response
}

/// The stored response for `key`, if any; [`AppError::KeyReused`] if it was stored for a
/// different request.
async fn lookup(
    conn: &mut AsyncPgConnection,
    key: &IdempotencyKey,
) -> Result<Option<Stored>, AppError> {
    let row: Option<(i32, String, String, String)> = idempotency_keys::table
        .find(&key.key)
        .select((
            idempotency_keys::status,
            idempotency_keys::body,
            idempotency_keys::fingerprint,
            idempotency_keys::scope,
        ))
        .first(conn)
        .await
        .optional()?;
    match row {
        Some((_, _, fingerprint, scope)) if !same_request(key, &fingerprint, &scope) => {
            Err(AppError::KeyReused)
        }
        Some((status, body, _, _)) => Ok(Some(Stored {
            status: u16::try_from(status).unwrap_or(500),
            body,
        })),
        None => Ok(None),
    }
}

/// Whether a stored record answers `key`'s request. Records from before fingerprints were kept
/// (`''`, scope `operation:target`) answer requests of the same operation.
fn same_request(key: &IdempotencyKey, fingerprint: &str, scope: &str) -> bool {
    if fingerprint.is_empty() {
        scope.split(':').next() == Some(key.operation)
    } else {
        fingerprint == key.fingerprint
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
            idempotency_keys::scope.eq(key.operation),
            idempotency_keys::key.eq(&key.key),
            idempotency_keys::fingerprint.eq(&key.fingerprint),
            idempotency_keys::status.eq(i32::from(stored.status)),
            idempotency_keys::body.eq(&stored.body),
        ))
        .execute(conn)
        .await
        .map(drop)
        .map_err(|err| match err {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::AlreadyApplied
            }
            other => other.into(),
        })
}

/// Turns the outcome of the operation into the response: replays the winner's response when
/// another request with the key committed first, and stores final refusals (404, 409) so that
/// repeats get them too. A connection is taken only when one of those is needed.
async fn respond(
    state: &AppState,
    key: &IdempotencyKey,
    outcome: Result<Stored, AppError>,
) -> Result<HttpResponse, AppError> {
    match outcome {
        Ok(stored) => Ok(stored.response(false)),
        Err(AppError::AlreadyApplied) => {
            let first = state
                .db
                .bounded(async |conn| lookup(conn, key).await)
                .await?;
            match first {
                Some(first) => Ok(first.response(true)),
                None => Err(AppError::AlreadyApplied),
            }
        }
        Err(err) if err.is_final() => {
            let stored = Stored::new(actix_web::ResponseError::status_code(&err), &err.body());
            let first = state
                .db
                .bounded(async |conn| match save(conn, key, &stored).await {
                    Ok(()) => Ok(None),
                    Err(AppError::AlreadyApplied) => lookup(conn, key).await,
                    Err(other) => Err(other),
                })
                .await?;
            match first {
                Some(first) => Ok(first.response(true)),
                None => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}
