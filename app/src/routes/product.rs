//! Products and stock deduction, under four strategies so load runs can compare them.

mod batch;

pub use batch::Batches;

use crate::error::AppError;
use crate::idempotency::{self, IdempotencyKey, Stored};
use crate::input::{check_text, integer, Amount, Id, JsonBody, MAX_AMOUNT};
use crate::schema::{products, stock_ledger};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use serde_json::json;

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

/// How a deduction protects its read-modify-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// `#[distributed_lock]` around read → check → fenced write (the default).
    Lock,
    /// Read, then write, unprotected: shows lost updates and oversell under load.
    None,
    /// `SELECT … FOR UPDATE` in a transaction: PostgreSQL's row lock.
    DbRow,
    /// One conditional `UPDATE … WHERE stock >= q`.
    Atomic,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Lock => "lock",
            Strategy::None => "none",
            Strategy::DbRow => "db-row",
            Strategy::Atomic => "atomic",
        }
    }
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

fn not_found(id: i64) -> AppError {
    AppError::NotFound {
        code: "product_not_found",
        what: "product",
        id,
    }
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

/// One request's part in [`fenced_deduct`]: its quantity and Idempotency-Key.
#[derive(Debug, Clone, Copy)]
pub struct Requested<'a> {
    /// How many units it deducts.
    pub quantity: i64,
    /// Its key, whose response is stored with the deduction.
    pub key: Option<&'a IdempotencyKey>,
}

/// The write a lock holder makes for one or more requests: read `(stock, fence)` once, go
/// through the requests in order — each that the remaining stock covers takes its quantity off
/// and is answered with the stock left after it; one it cannot cover is `out_of_stock` and
/// writes nothing — then one statement: the final stock with a compare-and-set
/// `WHERE fence = $read AND fence < $ours AND stock = $read_stock` that sets `fence = $ours`,
/// and a ledger row per success. Requests with a key store their response in the same
/// transaction. The answers are exactly those of serving the requests one by one.
///
/// `fence < ours` rejects a holder whose lock expired and was taken over once the newer holder
/// has written. `fence = read` closes the other half: a holder that read *before* a stale
/// holder's late write landed (that request was cancelled with its UPDATE queued on the row)
/// would otherwise write back a stale value. Either way nothing changes and the whole batch is
/// [`AppError::FencedOut`]. The stock is compared too: the strategies without a lock may be used
/// on the same product and do not touch the fence. Public so tests can play a stale holder.
pub async fn fenced_deduct(
    conn: &mut AsyncPgConnection,
    instance: &str,
    product_id: i64,
    requests: &[Requested<'_>],
    fence: i64,
    held_since: tokio::time::Instant,
) -> Result<Vec<Result<Stored, AppError>>, AppError> {
    // Always a transaction, even for one statement: its COMMIT's answer is awaited, so a commit
    // that fails is never answered as a sale (an autocommit statement's row arrives before
    // PostgreSQL has committed it).
    conn.transaction::<_, AppError, _>(async |conn| {
        sell(conn, instance, product_id, requests, fence, held_since).await
    })
    .await
}

/// How many times a lock holder reads the stock: the first read, and at most one re-read (under
/// the row lock) when a write without the lock moved the stock in between. A third is never
/// needed; the bound keeps the loop finite whatever the database does.
const MAX_STOCK_READS: usize = 3;

/// [`fenced_deduct`]'s work, inside the caller's transaction when keys are saved.
async fn sell(
    conn: &mut AsyncPgConnection,
    instance: &str,
    product_id: i64,
    requests: &[Requested<'_>],
    fence: i64,
    held_since: tokio::time::Instant,
) -> Result<Vec<Result<Stored, AppError>>, AppError> {
    // A key already answered (a retry whose first attempt committed after its client hung up)
    // or repeated within the batch is not sold again: `AlreadyApplied` makes the caller replay
    // the stored answer. Only that request; the rest of the batch goes on.
    let keys: Vec<&str> = requests
        .iter()
        .filter_map(|request| request.key.map(IdempotencyKey::key))
        .collect();
    let answered = idempotency::answered(conn, &keys).await?;
    let (mut stock, read_fence) = read_stock(conn, product_id, false).await?;
    if read_fence >= fence {
        // A newer holder has written: this hold is over, whatever the stock says.
        return Err(AppError::FencedOut { fence });
    }
    for _ in 0..MAX_STOCK_READS {
        let plan = Plan::new(product_id, requests, stock, fence, answered.clone());
        if plan.sold.is_empty() {
            return Ok(plan.answers);
        }
        let hold_us = i64::try_from(held_since.elapsed().as_micros()).unwrap_or(i64::MAX);
        let written: Written = diesel::sql_query(SELL_UNDER_FENCE)
            .bind::<BigInt, _>(product_id)
            .bind::<BigInt, _>(plan.remaining)
            .bind::<BigInt, _>(fence)
            .bind::<BigInt, _>(read_fence)
            .bind::<BigInt, _>(stock)
            .bind::<Text, _>(instance)
            .bind::<BigInt, _>(hold_us)
            .bind::<Array<BigInt>, _>(&plan.sold)
            .get_result(conn)
            .await?;
        if written.rows == 1 {
            for (request, answer) in requests.iter().zip(&plan.answers) {
                if let (Some(key), Ok(stored)) = (request.key, answer) {
                    idempotency::save(conn, key, stored).await?;
                }
            }
            tracing::info!(
                product = product_id,
                fence,
                sales = plan.sold.len(),
                remaining = plan.remaining,
                "stock deducted"
            );
            return Ok(plan.answers);
        }
        // Refused. A fence that moved means another holder wrote: this one's read may be
        // stale for a reason no re-read can see, and its lock is no longer the latest. The
        // stock alone moved: a write without the lock, which a re-read in this hold absorbs.
        // The re-read takes the row lock, so no other write lands before this one: one
        // re-read is all a batch ever pays.
        let (now_stock, now_fence) = read_stock(conn, product_id, true).await?;
        if now_fence != read_fence {
            return Err(AppError::FencedOut { fence });
        }
        stock = now_stock;
    }
    Err(AppError::Overloaded(format!(
        "the stock of product {product_id} kept changing under writes without the lock"
    )))
}

/// What serving `requests` one by one from `stock` answers and sells.
struct Plan {
    answers: Vec<Result<Stored, AppError>>,
    /// The quantities sold, in order (a ledger row each).
    sold: Vec<i64>,
    /// The stock left after them.
    remaining: i64,
}

impl Plan {
    fn new(
        product_id: i64,
        requests: &[Requested<'_>],
        stock: i64,
        fence: i64,
        mut answered: std::collections::HashSet<String>,
    ) -> Plan {
        let mut remaining = stock;
        let mut answers = Vec::with_capacity(requests.len());
        let mut sold = Vec::new();
        for request in requests {
            if let Some(key) = request.key {
                if !answered.insert(key.key().to_string()) {
                    answers.push(Err(AppError::AlreadyApplied));
                    continue;
                }
            }
            if remaining < request.quantity {
                answers.push(Err(out_of_stock(product_id, remaining, request.quantity)));
                continue;
            }
            remaining -= request.quantity;
            let body = json!({"id": product_id, "stock": remaining, "fence": fence});
            answers.push(Ok(Stored::new(StatusCode::OK, &body)));
            sold.push(request.quantity);
        }
        Plan {
            answers,
            sold,
            remaining,
        }
    }
}

/// A lock holder's sales in one statement: the final stock with the fenced compare-and-set,
/// and a ledger row per sale, in order (`$8` the quantities). Both or neither.
const SELL_UNDER_FENCE: &str = "\
    WITH updated AS (
        UPDATE products SET stock = $2, fence = $3
        WHERE id = $1 AND fence = $4 AND fence < $3 AND stock = $5
        RETURNING id
    ), ledger AS (
        INSERT INTO stock_ledger (product_id, quantity, strategy, instance, fence, hold_us)
        SELECT updated.id, sale.quantity, 'lock', $6, $3, $7
        FROM updated, unnest($8::bigint[]) WITH ORDINALITY AS sale(quantity, n)
        ORDER BY sale.n
    )
    SELECT count(*) AS rows FROM updated";

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// The strategies without a distributed lock, for comparison.
async fn deduct_without_lock(
    conn: &mut AsyncPgConnection,
    instance: &str,
    strategy: Strategy,
    product_id: i64,
    quantity: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    let deduction = Deduction {
        product_id,
        quantity,
        strategy,
        instance,
    };
    match strategy {
        // Read, then write back what was read minus the quantity: between the two another
        // request may do the same, and a deduction is lost (or stock oversold).
        Strategy::None => deduction.read_modify_write(conn, key, false).await,
        // The same read-modify-write, with PostgreSQL holding the row lock from read to commit.
        Strategy::DbRow => {
            conn.transaction::<_, AppError, _>(async |conn| {
                deduction.read_modify_write(conn, key, true).await
            })
            .await
        }
        // One conditional decrement.
        Strategy::Atomic => match deduction
            .commit(conn, NewStock::DecrementIfEnough, key)
            .await?
        {
            Some(stored) => Ok(stored),
            None => {
                let (stock, _) = read_stock(conn, product_id, false).await?;
                Err(out_of_stock(product_id, stock, quantity))
            }
        },
        Strategy::Lock => unreachable!("handled by deduct_under_lock"),
    }
}

/// `(stock, fence)` of a product, optionally `FOR UPDATE`.
async fn read_stock(
    conn: &mut AsyncPgConnection,
    product_id: i64,
    for_update: bool,
) -> Result<(i64, i64), AppError> {
    let query = products::table
        .find(product_id)
        .select((products::stock, products::fence));
    let row = if for_update {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    row.ok_or_else(|| not_found(product_id))
}

fn out_of_stock(id: i64, stock: i64, quantity: i64) -> AppError {
    AppError::Conflict {
        code: "out_of_stock",
        message: format!(
            "product {id} has {stock} in stock, {quantity} requested; nothing was deducted"
        ),
    }
}

/// How the stock column changes.
#[derive(Debug, Clone, Copy)]
enum NewStock {
    /// `stock = value` (read-modify-write strategies).
    Value(i64),
    /// `stock = stock - quantity`, only if `stock >= quantity` (atomic).
    DecrementIfEnough,
}

/// One deduction without a lock: the stock update with its ledger row, and the idempotency
/// record when the request has a key. (Under the lock, see [`fenced_deduct`].)
struct Deduction<'a> {
    product_id: i64,
    quantity: i64,
    strategy: Strategy,
    instance: &'a str,
}

/// The stock update and its ledger row in one statement, so they commit together, in one
/// round trip. `$5` is the new stock; `NULL` decrements, only if the stock is enough (then no
/// row comes back when it is not).
const UPDATE_STOCK_AND_LEDGER: &str = "\
    WITH updated AS (
        UPDATE products
        SET stock = COALESCE($5, stock - $2)
        WHERE id = $1 AND ($5 IS NOT NULL OR stock >= $2)
        RETURNING id, stock
    ), ledger AS (
        INSERT INTO stock_ledger (product_id, quantity, strategy, instance)
        SELECT id, $2, $3, $4 FROM updated
    )
    SELECT stock FROM updated";

#[derive(QueryableByName)]
struct Remaining {
    #[diesel(sql_type = BigInt)]
    stock: i64,
}

impl Deduction<'_> {
    fn response(&self, remaining: i64) -> Stored {
        let body = json!({"id": self.product_id, "stock": remaining});
        Stored::new(StatusCode::OK, &body)
    }

    /// Reads the stock (`FOR UPDATE` if asked), refuses when it is short, writes back what was
    /// read minus the quantity (the `none` and `db-row` strategies).
    async fn read_modify_write(
        &self,
        conn: &mut AsyncPgConnection,
        key: Option<&IdempotencyKey>,
        for_update: bool,
    ) -> Result<Stored, AppError> {
        let (stock, _) = read_stock(conn, self.product_id, for_update).await?;
        if stock < self.quantity {
            return Err(out_of_stock(self.product_id, stock, self.quantity));
        }
        self.commit(conn, NewStock::Value(stock - self.quantity), key)
            .await?
            .ok_or_else(|| not_found(self.product_id))
    }

    /// Writes the deduction and, with a key, its response in the same transaction. `None`
    /// when the update was refused (short of stock for `DecrementIfEnough`, or no product).
    async fn commit(
        &self,
        conn: &mut AsyncPgConnection,
        new_stock: NewStock,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Stored>, AppError> {
        // A transaction even without a key: its COMMIT's answer is awaited (see
        // `fenced_deduct`). Inside `db-row`'s, it is a savepoint.
        conn.transaction::<_, AppError, _>(async |conn| {
            let Some(remaining) = self.write(conn, new_stock).await? else {
                return Ok(None);
            };
            let stored = self.response(remaining);
            if let Some(key) = key {
                idempotency::save(conn, key, &stored).await?;
            }
            Ok(Some(stored))
        })
        .await
    }

    /// The stock update and ledger row; the remaining stock, or `None` if refused.
    async fn write(
        &self,
        conn: &mut AsyncPgConnection,
        new_stock: NewStock,
    ) -> Result<Option<i64>, AppError> {
        let value = match new_stock {
            NewStock::Value(value) => Some(value),
            NewStock::DecrementIfEnough => None,
        };
        let remaining: Option<Remaining> = diesel::sql_query(UPDATE_STOCK_AND_LEDGER)
            .bind::<BigInt, _>(self.product_id)
            .bind::<BigInt, _>(self.quantity)
            .bind::<Text, _>(self.strategy.name())
            .bind::<Text, _>(self.instance)
            .bind::<Nullable<BigInt>, _>(value)
            .get_result(conn)
            .await
            .optional()?;
        Ok(remaining.map(|row| row.stock))
    }
}
