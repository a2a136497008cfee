//! The shapes the published contract names (`api.rs` assembles the document): the bodies of
//! answers, every error answer's body, the refusals each kind of operation can get, and the
//! `Idempotency-Key` header. Handlers refer to them in their `#[utoipa::path]`; nothing here
//! knows the routes.

use crate::error::ErrorCode;
use std::collections::BTreeMap;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

/// Every error answer's body.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable.
    pub error: ErrorCode,
    /// For people.
    pub message: String,
    /// The lock's resource, on lock errors.
    #[schema(nullable = false)]
    pub resource: Option<String>,
}

/// The JSON of an error answer with `description`.
fn refusal(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(u64::schema()))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    response.build().into()
}

/// The refusals any request can get before its handler runs, or from the database.
fn common(statuses: &[(u16, &str, bool)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, description, retry_after)| {
            (status.to_string(), refusal(description, *retry_after))
        })
        .collect()
}

const BAD_REQUEST: (u16, &str, bool) = (
    400,
    "`invalid_path`, `invalid_query`, `invalid_json`, `invalid_body` or a field's own code: \
     bad input, refused before any lock; nothing written",
    false,
);
const HEADERS_TOO_LARGE: (u16, &str, bool) =
    (431, "`headers_too_large`: over 16 KiB of headers", false);
const DATABASE_ERROR: (u16, &str, bool) = (
    500,
    "`database_error`: the database refused the query (rolled back; a defect)",
    false,
);
const UNAVAILABLE: (u16, &str, bool) = (
    503,
    "`database_unavailable` (PostgreSQL does not answer), `overloaded` (too much at once) or \
     `lock_unavailable` (Redis could not be asked); nothing written",
    true,
);

/// What a read (`GET`) can be refused with besides its own 404.
#[derive(Debug)]
pub struct ReadRefusals;

impl IntoResponses for ReadRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        common(&[BAD_REQUEST, HEADERS_TOO_LARGE, DATABASE_ERROR, UNAVAILABLE])
    }
}

/// What a write (`POST`) can be refused with besides its own business answers.
#[derive(Debug)]
pub struct WriteRefusals;

impl IntoResponses for WriteRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        common(&[
            BAD_REQUEST,
            (413, "`body_too_large`: a body over 16 KiB", false),
            (
                415,
                "`unsupported_media_type`: a body that is not `application/json`",
                false,
            ),
            HEADERS_TOO_LARGE,
            DATABASE_ERROR,
            UNAVAILABLE,
            (
                504,
                "`outcome_unknown`: the write was sent and its answer lost; it may or may not \
                 have been applied (repeat with the same Idempotency-Key to learn which)",
                false,
            ),
        ])
    }
}

/// The `Idempotency-Key` header of the writes that take one.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// 1 to 200 visible ASCII characters. A repeat of the same request (within 24 h) replays
    /// the first answer with `Idempotent-Replayed: true`; the key sent with another request is
    /// `422 idempotency_key_reused`; a repeat while the first is in flight is
    /// `409 idempotency_key_in_flight`.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[!-~]{1,200}$"
    )]
    pub key: Option<String>,
}

/// A product.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Product {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Units in stock.
    pub stock: i64,
}

/// The answer to a deduction.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Deducted {
    /// The product.
    pub id: i64,
    /// Units left after this request's own deduction.
    pub stock: i64,
    /// `strategy=lock` only: the fence of the lock the write was made under (about
    /// 1.8 × 10^18: above 2^53, read it as a big integer).
    #[schema(nullable = false)]
    pub fence: Option<i64>,
}

/// A user's balance.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Balance {
    /// The user.
    pub user_id: i64,
    /// Their balance.
    pub balance: i64,
}

/// The answer to a transfer.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Transferred {
    /// The payer after the transfer.
    pub from: Balance,
    /// The payee after the transfer.
    pub to: Balance,
    /// The amount moved.
    pub amount: i64,
}

/// A seat reservation.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Reservation {
    /// The concert.
    pub concert_id: i64,
    /// The seat.
    pub seat_no: i32,
    /// Who holds it.
    pub user_id: i64,
}

/// A place in a concert's queue.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct QueueToken {
    /// The token.
    pub token: String,
    /// 1, 2, 3, … per concert.
    pub position: i64,
}

/// Liveness.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Live {
    /// `ok`.
    pub status: String,
    /// The instance that answered.
    pub instance: String,
}

/// Readiness: the dependencies.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Ready {
    /// `ok` or `degraded`.
    pub status: String,
    /// The instance that answered.
    pub instance: String,
    /// `ok` or `down`.
    pub db: String,
    /// The lock service.
    pub redis: RedisHealth,
}

/// The Redis nodes behind the locks.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RedisHealth {
    /// How many there are.
    pub nodes: u64,
    /// How many answer.
    pub up: u64,
    /// Whether enough answer to lock.
    pub quorum: bool,
}
