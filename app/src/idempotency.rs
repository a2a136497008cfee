//! `Idempotency-Key`, as the IETF httpapi draft describes it: the first response to a key is
//! stored in the same transaction as the write it describes and replayed for repeats of the
//! same request, which change nothing; the key sent with a different request is refused with
//! 422 (and nothing is written); a repeat while the first is still being handled gets 409.
//!
//! "The same request" is the operation and its parsed, defaulted input (the route's ids, the
//! query with its defaults, the JSON body as values), so `{}` and no body, `?strategy=lock` and
//! no query, `{"quantity": 1}` and `{"quantity": 1.0}` are one request. A key answers for [`KEY_TTL`]: past it the record
//! is ignored on lookup and may be replaced, and the instances prune expired records every
//! [`PRUNE_INTERVAL`] whether or not the tick job runs.
//!
//! A repeat of an answered request is looked up first, so it needs no lock (and no Redis).
//! Otherwise "in flight" is a distributed lock on the key, taken without waiting, that lives as
//! long as the work it guards: a batched deduction carries it until its batch is answered, and a
//! request cancelled by its client keeps it for [`WRITE_OUTCOME_WAIT`] (a write it had sent may
//! still commit). The primary key on `key` backs it up: two requests with one key that both got
//! past the lock (its TTL ran out) both try to insert it; the second blocks until the first
//! commits, then fails with a unique violation and rolls its whole transaction back.

use crate::db::WRITE_OUTCOME_WAIT;
use crate::error::AppError;
use crate::schema::idempotency_keys;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fencelock::{Guard, LockError, LockOptions};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a key stays "in flight" if its holder dies without releasing it (extended while the
/// request runs).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(10);
/// How long a stored answer answers for its key.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How often each instance deletes expired records.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// [`KEY_TTL`] as a PostgreSQL interval, for the queries (a unit test keeps the two equal).
const KEY_TTL_SQL: &str = "interval '86400 seconds'";

/// A validated key with the fingerprint of the request that carried it, and (once taken) its
/// in-flight marker, shared by everything that still works for the request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: String,
    operation: &'static str,
    fingerprint: String,
    in_flight: Option<Arc<Guard>>,
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
    /// The client's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Reads the `Idempotency-Key` header (1 to 200 visible ASCII characters) and fingerprints
    /// the request: `operation` (which names the handler in the stored record) and `input`, the
    /// request as the handler parsed it — ids, query and body with their defaults.
    pub fn from_request(
        req: &HttpRequest,
        operation: &'static str,
        input: &serde_json::Value,
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
        // `serde_json::Value` keeps object keys sorted: one input, one text.
        let mut request = Sha256::new();
        request.update(operation);
        request.update(b"\n");
        request.update(input.to_string());
        Ok(Some(IdempotencyKey {
            key: key.to_string(),
            operation,
            fingerprint: hex(&request.finalize()),
            in_flight: None,
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
/// without running it (and without waiting for any lock, Redis included), the key reused for a
/// different request is 422, a repeat while the first is in flight is 409. `operation` gets the
/// key to store its response with ([`save`]) in the transaction of its write; a clone of the
/// key keeps it in flight.
pub async fn run(
    state: &AppState,
    key: Option<IdempotencyKey>,
    operation: impl AsyncFnOnce(Option<&IdempotencyKey>) -> Result<Stored, AppError>,
) -> Result<HttpResponse, AppError> {
    let Some(mut key) = key else {
        return operation(None).await.map(|stored| stored.response(false));
    };
    if let Some(first) = state.db.read(async |conn| lookup(conn, &key).await).await? {
        return Ok(first.response(true));
    }
    let options = LockOptions::new().ttl(IN_FLIGHT_TTL).auto_extend(true);
    let marker = state
        .locker
        .try_acquire(&key.in_flight_resource(), &options)
        .await
        .map_err(|err| match err {
            LockError::Busy { .. } => AppError::KeyInFlight,
            other => AppError::Lock(other),
        })?;
    let mut lingering = Lingering(Some(Arc::new(marker)));
    key.in_flight = lingering.0.clone();
    // The first request may have committed between the lookup and the marker.
    let response = match state.db.read(async |conn| lookup(conn, &key).await).await {
        Ok(Some(first)) => Ok(first.response(true)),
        Ok(None) => {
            let outcome = operation(Some(&key)).await;
            respond(state, &key, outcome).await
        }
        Err(refused) => Err(refused),
    };
    // Done: the marker goes when the last clone does (a batch may still hold one), at once.
    lingering.0 = None;
    response
}

/// The request's share of its in-flight marker. Dropped before the request finished (its
/// client hung up), it keeps the marker for [`WRITE_OUTCOME_WAIT`]: a write the request had
/// sent may still commit, and a repeat meanwhile must be told the first is in flight.
struct Lingering(Option<Arc<Guard>>);

impl Drop for Lingering {
    fn drop(&mut self) {
        if let Some(marker) = self.0.take() {
            tokio::spawn(async move {
                tokio::time::sleep(WRITE_OUTCOME_WAIT).await;
                drop(marker);
            });
        }
    }
}

/// The stored response for `key`, if any; [`AppError::KeyReused`] if it was stored for a
/// different request.
async fn lookup(
    conn: &mut AsyncPgConnection,
    key: &IdempotencyKey,
) -> Result<Option<Stored>, AppError> {
    let row: Option<(i32, String, String, String)> = idempotency_keys::table
        .find(&key.key)
        .filter(live())
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

/// Records younger than [`KEY_TTL`].
fn live() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql(&format!("created_at > now() - {KEY_TTL_SQL}"))
}

/// Which of `keys` have a live record (inside the caller's transaction).
pub async fn answered(
    conn: &mut AsyncPgConnection,
    keys: &[&str],
) -> Result<std::collections::HashSet<String>, AppError> {
    if keys.is_empty() {
        return Ok(Default::default());
    }
    Ok(idempotency_keys::table
        .filter(idempotency_keys::key.eq_any(keys))
        .filter(live())
        .select(idempotency_keys::key)
        .load::<String>(conn)
        .await?
        .into_iter()
        .collect())
}

/// How many expired records one statement of [`prune`] deletes: a short statement, well
/// inside `statement_timeout`, however large the backlog.
pub const PRUNE_BATCH: i64 = 5_000;

/// Deletes up to [`PRUNE_BATCH`] expired records, oldest first, through the index on
/// `created_at` (each instance, every [`PRUNE_INTERVAL`], until a batch comes back short;
/// deleting twice is harmless). Returns how many went.
pub async fn prune(conn: &mut AsyncPgConnection) -> Result<usize, AppError> {
    conn.transaction::<_, AppError, _>(async |conn| {
        Ok(diesel::sql_query(format!(
            "DELETE FROM idempotency_keys WHERE key IN ( \
                 SELECT key FROM idempotency_keys \
                 WHERE created_at <= now() - {KEY_TTL_SQL} \
                 ORDER BY created_at LIMIT {PRUNE_BATCH})"
        ))
        .execute(conn)
        .await?)
    })
    .await
}

/// Stores `stored` for `key` (inside the caller's transaction), replacing an expired record.
/// A key with a live record (another request committed first) is [`AppError::AlreadyApplied`].
pub async fn save(
    conn: &mut AsyncPgConnection,
    key: &IdempotencyKey,
    stored: &Stored,
) -> Result<(), AppError> {
    let inserted = diesel::sql_query(format!(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key) DO UPDATE SET scope = EXCLUDED.scope, \
             fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, \
             body = EXCLUDED.body, created_at = now() \
         WHERE idempotency_keys.created_at <= now() - {KEY_TTL_SQL}"
    ))
    .bind::<Text, _>(key.operation)
    .bind::<Text, _>(&key.key)
    .bind::<Text, _>(&key.fingerprint)
    .bind::<Integer, _>(i32::from(stored.status))
    .bind::<Text, _>(&stored.body)
    .execute(conn)
    .await?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(AppError::AlreadyApplied)
    }
}

/// Turns the outcome of the operation into the response: replays the winner's response when
/// another request with the key committed first, and stores final refusals (404, 409) so that
/// repeats get them too (when storing one fails, the refusal is still the answer: nothing was
/// written either way). A connection is taken only when one of those is needed.
async fn respond(
    state: &AppState,
    key: &IdempotencyKey,
    outcome: Result<Stored, AppError>,
) -> Result<HttpResponse, AppError> {
    match outcome {
        Ok(stored) => Ok(stored.response(false)),
        Err(AppError::AlreadyApplied) => {
            match state.db.read(async |conn| lookup(conn, key).await).await? {
                Some(first) => Ok(first.response(true)),
                // Its record is not visible yet: the first request is still committing.
                None => Err(AppError::KeyInFlight),
            }
        }
        Err(err) if err.is_final() => {
            let stored = Stored::new(actix_web::ResponseError::status_code(&err), &err.body());
            let first = state
                .db
                .write(async |conn| match save(conn, key, &stored).await {
                    Ok(()) => Ok(None),
                    Err(AppError::AlreadyApplied) => lookup(conn, key).await,
                    Err(other) => Err(other),
                })
                .await;
            match first {
                Ok(Some(first)) => Ok(first.response(true)),
                Ok(None) => Err(err),
                Err(failed) => {
                    tracing::warn!(error = %failed, "a final refusal was not stored for its key");
                    Err(err)
                }
            }
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sql_interval_is_the_key_ttl() {
        assert_eq!(
            super::KEY_TTL_SQL,
            format!("interval '{} seconds'", super::KEY_TTL.as_secs())
        );
    }
}
