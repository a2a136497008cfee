//! The product routes: create, reset, show and deduct. The handlers stay short; what a
//! deduction writes lives below them, one concern per file:
//! - `strategy.rs` — the `?strategy=` choices, the stock read and the refusals they share;
//! - `unlocked.rs` — the strategies without a lock (`none`, `db-row`, `atomic`);
//! - `fenced.rs` — `strategy=lock`'s fenced write for one request or a batch;
//! - `batch.rs` — `strategy=lock`'s queues: one hold and one fenced write per batch.

mod batch;
mod fenced;
mod strategy;
mod unlocked;

pub use batch::Batches;
pub use fenced::{fenced_deduct, Requested};
pub use strategy::Strategy;

use crate::error::AppError;
use crate::idempotency::{self, IdempotencyKey};
use crate::input::{check_text, integer, Amount, Id, JsonBody, MAX_AMOUNT};
use crate::schema::{products, stock_ledger};
use crate::state::AppState;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use serde_json::json;
use strategy::not_found;
use unlocked::deduct_without_lock;

/// `POST /product/reset` body: both fields optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// Units in stock (default 1000).
    #[serde(default = "default_stock", deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 1_000_000_000, default = 1000)]
    stock: i64,
    /// Its name (default "demo product"): 1 to 200 characters, no control characters.
    #[serde(default = "default_name")]
    #[schema(
        min_length = 1,
        max_length = 200,
        default = "demo product",
        pattern = "^(?=.*\\S)[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u206F\\uFEFF\\uFFF9-\\uFFFB]+$"
    )]
    name: String,
}

fn default_stock() -> i64 {
    1000
}

fn default_name() -> String {
    "demo product".into()
}

/// `POST /product` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// 1 to 200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^(?=.*\\S)[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u206F\\uFEFF\\uFFF9-\\uFFFB]+$"
    )]
    name: String,
    /// Units in stock.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "integer")]
    stock: i64,
}

/// `POST /product/{id}/deduct` body: optional, quantity defaults to 1.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeductBody {
    /// Units to deduct (default 1).
    #[serde(default = "one")]
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000, default = 1)]
    quantity: Amount,
}

fn one() -> Amount {
    Amount(1)
}

/// `?strategy=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeductQuery {
    /// How the deduction protects its read-modify-write (default `lock`).
    #[serde(default = "lock_strategy")]
    #[param(inline)]
    strategy: Strategy,
}

fn lock_strategy() -> Strategy {
    Strategy::Lock
}

fn check_stock(stock: i64) -> Result<i64, AppError> {
    if (0..=MAX_AMOUNT).contains(&stock) {
        Ok(stock)
    } else {
        Err(AppError::bad_request(
            "invalid_stock",
            format!("stock must be between 0 and {MAX_AMOUNT}, got {stock}"),
        ))
    }
}

fn check_name(name: &str) -> Result<(), AppError> {
    check_text("invalid_name", "name", name, 200)
}

fn product_json(id: i64, name: &str, stock: i64) -> serde_json::Value {
    json!({"id": id, "name": name, "stock": stock})
}

/// Clears all products and their ledger and creates one product (demo and load-test setup).
#[utoipa::path(
    tag = "products",
    request_body(content = Option<ResetBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "The one product now", body = crate::contract::Product),
        (status = 403, description = "`reset_disabled`: ALLOW_RESET is off", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
#[post("/product/reset")]
pub async fn reset(
    state: web::Data<AppState>,
    body: JsonBody<ResetBody>,
) -> Result<HttpResponse, AppError> {
    if !state.allow_reset {
        return Err(AppError::ResetDisabled);
    }
    let ResetBody { stock, name } = body.0;
    check_stock(stock)?;
    check_name(&name)?;
    let id: i64 = state
        .db
        .write(async |conn| {
            conn.transaction::<_, AppError, _>(async |conn| {
                diesel::delete(stock_ledger::table).execute(conn).await?;
                diesel::delete(products::table).execute(conn).await?;
                insert_product(conn, &name, stock).await
            })
            .await
        })
        .await?;
    tracing::info!(product = id, stock, "products reset");
    Ok(HttpResponse::Created().json(product_json(id, &name, stock)))
}

/// A new product row; its id.
async fn insert_product(
    conn: &mut AsyncPgConnection,
    name: &str,
    stock: i64,
) -> Result<i64, AppError> {
    Ok(diesel::insert_into(products::table)
        .values((products::name.eq(name), products::stock.eq(stock)))
        .returning(products::id)
        .get_result(conn)
        .await?)
}

/// Creates a product.
#[utoipa::path(
    tag = "products",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The product", body = crate::contract::Product),
        crate::contract::WriteRefusals,
    )
)]
#[post("/product")]
pub async fn create(
    state: web::Data<AppState>,
    body: JsonBody<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let CreateBody { name, stock } = body.0;
    check_stock(stock)?;
    check_name(&name)?;
    let id: i64 = state
        .db
        .write(async |conn| {
            // A transaction so that the COMMIT's answer is awaited (see `fenced_deduct`).
            conn.transaction::<_, AppError, _>(async |conn| {
                insert_product(conn, &name, stock).await
            })
            .await
        })
        .await?;
    Ok(HttpResponse::Created().json(product_json(id, &name, stock)))
}

/// Reads a product.
#[utoipa::path(
    tag = "products",
    params(("id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The product: a positive integer in plain decimal (no sign, no leading zeros)")),
    responses(
        (status = 200, description = "The product", body = crate::contract::Product),
        (status = 404, description = "`product_not_found`", body = crate::contract::ErrorBody),
        crate::contract::ReadRefusals,
    )
)]
#[get("/product/{id}")]
pub async fn show(state: web::Data<AppState>, id: web::Path<Id>) -> Result<HttpResponse, AppError> {
    let (name, stock): (String, i64) = state
        .db
        .read(async |conn| {
            Ok(products::table
                .find(id.0)
                .select((products::name, products::stock))
                .first(conn)
                .await
                .optional()?)
        })
        .await?
        .ok_or_else(|| not_found(id.0))?;
    Ok(HttpResponse::Ok().json(product_json(id.0, &name, stock)))
}

/// Deducts `quantity` from a product's stock with the chosen strategy. Every success writes a
/// ledger row in the same transaction, so `stock == initial − Σ ledger` can be checked.
#[utoipa::path(
    tag = "products",
    params(
        ("id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The product: a positive integer in plain decimal (no sign, no leading zeros)"),
        DeductQuery,
        crate::contract::IdempotencyHeader,
    ),
    request_body(content = Option<DeductBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Deducted (or replayed, with `Idempotent-Replayed: true`)", body = crate::contract::Deducted),
        (status = 404, description = "`product_not_found`", body = crate::contract::ErrorBody),
        (status = 409, description = "`out_of_stock`, `lock_lost` or `idempotency_key_in_flight`; nothing written", body = crate::contract::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key was sent with another request", body = crate::contract::ErrorBody),
        (status = 423, description = "`lock_busy`: the product's lock stayed held for the whole wait", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
#[post("/product/{id}/deduct")]
pub async fn deduct(
    state: web::Data<AppState>,
    batches: web::Data<Batches>,
    id: web::Path<Id>,
    query: web::Query<DeductQuery>,
    body: JsonBody<DeductBody>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let product_id = *id;
    let quantity = body.0.quantity.0;
    let input =
        json!({"product": product_id.0, "strategy": query.strategy.name(), "quantity": quantity});
    let key = IdempotencyKey::from_request(&req, "deduct", &input)?;
    idempotency::run(&state, key, async |key| match query.strategy {
        // No pooled connection is held while waiting for the lock: the holder must find the
        // pool free, or every hold would queue behind the waiters.
        Strategy::Lock => Batches::deduct(&batches, &state, product_id.0, quantity, key).await,
        strategy => {
            state
                .db
                .write(async |conn| {
                    deduct_without_lock(
                        conn,
                        &state.instance,
                        strategy,
                        product_id.0,
                        quantity,
                        key,
                    )
                    .await
                })
                .await
        }
    })
    .await
}
