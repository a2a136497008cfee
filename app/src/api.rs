//! The published contract: the OpenAPI 3 document (`GET /openapi.json`), assembled by
//! `utoipa-actix-web` from the `#[utoipa::path]` of every handler the app registers, so a route
//! cannot be served without being documented; the schemas of bodies and answers; the refusals
//! every operation can send, with their stable codes; and the docs page (`/docs/`, Swagger UI
//! from files compiled into the binary: it loads nothing from elsewhere).

use crate::error::ErrorCode;
use crate::routes::{balance, health, product, queue, seats};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, OpenApi, PartialSchema, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Registers every route of the API (and so documents it).
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(product::reset)
        .service(product::create)
        .service(product::show)
        .service(product::deduct)
        .service(balance::charge)
        .service(balance::spend)
        .service(balance::show)
        .service(balance::transfer)
        .service(seats::reserve)
        .service(queue::take)
        .service(health::live)
        .service(health::ready)
        .service(health::health)
        .service(health::metrics);
}

/// The OpenAPI document of exactly the routes [`routes`] registers.
pub fn document() -> utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        actix_web::App::new()
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .configure(routes)
            .split_for_parts()
            .1
    });
    DOCUMENT.clone()
}

/// `GET /openapi.json` and the docs page at `/docs/`: Swagger UI's files are compiled into the
/// binary, and it is told not to ask the public validator about the document.
pub fn docs() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}")
        .url("/openapi.json", document())
        .config(Config::from("/openapi.json").validator_url("none"))
}

/// The methods the API serves on `path` (`HEAD` after `GET`), from the document: what a wrong
/// method is told in `Allow`.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    static PATTERNS: LazyLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        LazyLock::new(|| {
            document()
                .paths
                .paths
                .iter()
                .map(|(pattern, item)| {
                    let mut methods = Vec::new();
                    if item.get.is_some() {
                        methods.extend(["GET", "HEAD"]);
                    }
                    if item.post.is_some() {
                        methods.push("POST");
                    }
                    if item.put.is_some() {
                        methods.push("PUT");
                    }
                    if item.patch.is_some() {
                        methods.push("PATCH");
                    }
                    if item.delete.is_some() {
                        methods.push("DELETE");
                    }
                    (actix_web::dev::ResourceDef::new(pattern.as_str()), methods)
                })
                .collect()
        });
    let mut allowed = Vec::new();
    for (pattern, methods) in PATTERNS.iter() {
        if pattern.is_match(path) {
            for method in methods {
                if !allowed.contains(method) {
                    allowed.push(*method);
                }
            }
        }
    }
    allowed
}

/// The document's frame; the paths and schemas come from the registered handlers.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "fencelock reference service",
        description = "Stock, balances, seats and queue tokens under distributed locks with \
fencing. A non-2xx answer means nothing was written, except `504 outcome_unknown`, which says \
the outcome is unknown (repeat with the same Idempotency-Key to learn it). Every answer carries \
`X-Instance` and `X-Request-Id`; errors are JSON with a stable `error` code.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorCode))
)]
pub struct ApiDoc;

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
