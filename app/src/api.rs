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

/// The OpenAPI document of exactly the routes [`routes`] registers (built once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        actix_web::App::new()
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .configure(routes)
            .split_for_parts()
            .1
    });
    &DOCUMENT
}

/// `GET /openapi.json` and the docs page at `/docs/`: Swagger UI's files are compiled into the
/// binary, and it is told not to ask the public validator about the document.
pub fn docs() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}")
        .url("/openapi.json", document().clone())
        .config(Config::from("/openapi.json").validator_url("none"))
}

/// The methods served on `path` when they do not include `method` and `path` is a route of its
/// own (`/balance/transfer`, `/product/reset`): the router would otherwise hand a `GET` of it
/// to the route with a parameter that also matches (`/balance/{user_id}`) and answer 400.
pub fn refused_on_exact_route(path: &str, method: &str) -> Option<Vec<&'static str>> {
    let allowed = allowed_methods(path);
    let exact = document().paths.paths.contains_key(path);
    (exact && !allowed.contains(&method)).then_some(allowed)
}

/// The methods the API serves on `path` (`HEAD` after `GET`), from the document: what a wrong
/// method is told in `Allow`.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    static PATTERNS: LazyLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        LazyLock::new(|| {
            // The contract and its page, served beside the API.
            let docs = ["/openapi.json", "/docs/{_:.*}"].map(|pattern| {
                (
                    actix_web::dev::ResourceDef::new(pattern),
                    vec!["GET", "HEAD"],
                )
            });
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
                .chain(docs)
                .collect()
        });
    // A path that is a route of its own (`/balance/transfer`) is not also the match of a
    // pattern with a parameter (`/balance/{user_id}`): the router gives it to the former.
    let exact = PATTERNS
        .iter()
        .any(|(pattern, _)| pattern.pattern() == Some(path));
    let mut allowed = Vec::new();
    for (pattern, methods) in PATTERNS.iter() {
        if pattern.is_match(path) && (!exact || pattern.pattern() == Some(path)) {
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

#[cfg(test)]
mod tests {
    /// The names' `pattern` in the document is the rule `check_text` applies.
    #[test]
    fn text_fields_publish_the_rule_they_are_checked_by() {
        let document = serde_json::to_value(super::document()).unwrap();
        for schema in ["CreateBody", "ResetBody"] {
            assert_eq!(
                document["components"]["schemas"][schema]["properties"]["name"]["pattern"],
                crate::input::TEXT_PATTERN,
                "{schema}"
            );
        }
    }

    /// A wrong method's `Allow` names the methods of the path itself, not of a pattern that
    /// would also match it (`/balance/transfer` is not `/balance/{user_id}`).
    #[test]
    fn allow_names_the_most_specific_route() {
        assert_eq!(super::allowed_methods("/balance/transfer"), ["POST"]);
        assert_eq!(super::allowed_methods("/product/reset"), ["POST"]);
        assert_eq!(super::allowed_methods("/product/7"), ["GET", "HEAD"]);
        assert_eq!(super::allowed_methods("/balance/7"), ["GET", "HEAD"]);
        assert_eq!(super::allowed_methods("/openapi.json"), ["GET", "HEAD"]);
        assert!(super::allowed_methods("/nowhere").is_empty());
    }
}
