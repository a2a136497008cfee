//! User balances: charge and use, each under the user's lock with a fenced write.

use crate::error::AppError;
use crate::idempotency::{self, IdempotencyKey, Stored};
use crate::input::{Amount, Id, JsonBody};
use crate::schema::{balance_ledger, balances};
use crate::state::{db_fence, AppState};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dlock::distributed_lock;
use serde::Deserialize;
use serde_json::json;

/// `{"amount": N}` for charge and use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    amount: Amount,
}

#[derive(QueryableByName)]
struct BalanceRow {
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

fn unknown_user(user_id: i64) -> AppError {
    AppError::NotFound {
        code: "user_not_found",
        what: "user",
        id: user_id,
    }
}

fn balance_json(user_id: i64, balance: i64) -> serde_json::Value {
    json!({"user_id": user_id, "balance": balance})
}

/// Adds to a balance, creating the user on first charge.
#[post("/balance/{user_id}/charge")]
#[distributed_lock(resource = "balance:{user_id}", ttl_ms = 5000, wait_ms = 10000, guard = lock)]
pub async fn charge(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
    body: JsonBody<AmountBody>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let (user_id, amount) = (user_id.0, body.0.amount.0);
    let fence = db_fence(lock);
    let key = IdempotencyKey::from_request(&req, format!("charge:{user_id}"))?;
    let mut conn = state.pool.get().await?;
    if let Some(stored) = idempotency::replay(&mut conn, key.as_ref()).await? {
        return Ok(stored);
    }
    let outcome = conn
        .transaction::<_, AppError, _>(async |conn| {
            // Fenced upsert: a holder whose lock was taken over cannot write.
            let row: Option<BalanceRow> = diesel::sql_query(
                "INSERT INTO balances (user_id, balance, fence) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE \
                 SET balance = balances.balance + EXCLUDED.balance, fence = EXCLUDED.fence \
                 WHERE balances.fence <= EXCLUDED.fence \
                 RETURNING balance",
            )
            .bind::<BigInt, _>(user_id)
            .bind::<BigInt, _>(amount)
            .bind::<BigInt, _>(fence)
            .get_result(conn)
            .await
            .optional()?;
            let Some(BalanceRow { balance }) = row else {
                return Err(AppError::FencedOut { newer: fence });
            };
            write_ledger(conn, user_id, "charge", amount, &state.instance, fence).await?;
            finish(conn, key.as_ref(), user_id, balance).await
        })
        .await;
    drop(conn);
    idempotency::respond(&state.pool, key.as_ref(), outcome).await
}

/// Spends from a balance: 409 `insufficient_balance` when it is short, nothing changed.
#[post("/balance/{user_id}/use")]
#[distributed_lock(resource = "balance:{user_id}", ttl_ms = 5000, wait_ms = 10000, guard = lock)]
pub async fn spend(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
    body: JsonBody<AmountBody>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let (user_id, amount) = (user_id.0, body.0.amount.0);
    let fence = db_fence(lock);
    let key = IdempotencyKey::from_request(&req, format!("use:{user_id}"))?;
    let mut conn = state.pool.get().await?;
    if let Some(stored) = idempotency::replay(&mut conn, key.as_ref()).await? {
        return Ok(stored);
    }
    let outcome = conn
        .transaction::<_, AppError, _>(async |conn| {
            let (balance, stored_fence): (i64, i64) = balances::table
                .find(user_id)
                .select((balances::balance, balances::fence))
                .first(conn)
                .await
                .optional()?
                .ok_or_else(|| unknown_user(user_id))?;
            if balance < amount {
                return Err(AppError::Conflict {
                    code: "insufficient_balance",
                    message: format!(
                        "user {user_id} has {balance}, {amount} requested; nothing was spent"
                    ),
                });
            }
            let written = diesel::update(
                // Compare-and-set on the fence read with the balance (see `fenced_deduct`).
                balances::table
                    .find(user_id)
                    .filter(balances::fence.eq(stored_fence))
                    .filter(balances::fence.lt(fence)),
            )
            .set((
                balances::balance.eq(balance - amount),
                balances::fence.eq(fence),
            ))
            .execute(conn)
            .await?;
            if written == 0 {
                return Err(AppError::FencedOut {
                    newer: stored_fence,
                });
            }
            write_ledger(conn, user_id, "use", amount, &state.instance, fence).await?;
            finish(conn, key.as_ref(), user_id, balance - amount).await
        })
        .await;
    drop(conn);
    idempotency::respond(&state.pool, key.as_ref(), outcome).await
}

/// Reads a balance.
#[get("/balance/{user_id}")]
pub async fn show(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
) -> Result<HttpResponse, AppError> {
    let mut conn = state.pool.get().await?;
    let balance: i64 = balances::table
        .find(user_id.0)
        .select(balances::balance)
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| unknown_user(user_id.0))?;
    Ok(HttpResponse::Ok().json(balance_json(user_id.0, balance)))
}

async fn finish(
    conn: &mut AsyncPgConnection,
    key: Option<&IdempotencyKey>,
    user_id: i64,
    balance: i64,
) -> Result<Stored, AppError> {
    let stored = Stored::new(StatusCode::OK, &balance_json(user_id, balance));
    if let Some(key) = key {
        idempotency::save(conn, key, &stored).await?;
    }
    Ok(stored)
}

async fn write_ledger(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    kind: &str,
    amount: i64,
    instance: &str,
    fence: i64,
) -> Result<(), AppError> {
    diesel::insert_into(balance_ledger::table)
        .values((
            balance_ledger::user_id.eq(user_id),
            balance_ledger::kind.eq(kind),
            balance_ledger::amount.eq(amount),
            balance_ledger::instance.eq(instance),
            balance_ledger::fence.eq(Some(fence)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
