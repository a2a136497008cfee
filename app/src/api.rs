//! The published contract: the OpenAPI 3 document (`GET /openapi.json`), assembled by
//! `utoipa-actix-web` from the `#[utoipa::path]` of every handler the app registers (with the
//! shapes of `contract.rs`), so a route cannot be served without being documented; the methods
//! each path serves (405's `Allow`); and the docs page (`/docs/`, Swagger UI from files compiled
//! into the binary: it loads nothing from elsewhere).

use crate::contract::ErrorBody;
use crate::error::ErrorCode;
use crate::routes::{balance, health, product, queue, seats};
use std::sync::LazyLock;
use utoipa::OpenApi;
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
    // Every request asks: a map lookup first, the patterns only for the seven literal routes.
    if !document().paths.paths.contains_key(path) {
        return None;
    }
    let allowed = allowed_methods(path);
    (!allowed.contains(&method)).then_some(allowed)
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
