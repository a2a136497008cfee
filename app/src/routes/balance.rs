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
use fencelock::distributed_lock;
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
pub async fn charge(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
    body: JsonBody<AmountBody>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    change_balance(&state, *user_id, Change::Charge, body.0.amount.0, &req).await
}

/// Spends from a balance: 409 `insufficient_balance` when it is short, nothing changed.
#[post("/balance/{user_id}/use")]
pub async fn spend(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
    body: JsonBody<AmountBody>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    change_balance(&state, *user_id, Change::Use, body.0.amount.0, &req).await
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Charge,
    Use,
}

impl Change {
    /// The idempotency record's operation and the ledger's `kind`.
    fn name(self) -> &'static str {
        match self {
            Change::Charge => "charge",
            Change::Use => "use",
        }
    }
}

async fn change_balance(
    state: &AppState,
    user_id: Id,
    change: Change,
    amount: i64,
    req: &HttpRequest,
) -> Result<HttpResponse, AppError> {
    let key = IdempotencyKey::from_request(req, change.name())?;
    // A repeat is answered from the stored response without taking the user's lock; no pooled
    // connection is held while waiting for it (see `product::deduct`).
    idempotency::run(state, key, async |key| {
        change_under_lock(state, user_id, change, amount, key).await
    })
    .await
}

#[distributed_lock(resource = "balance:{user_id}", locker = state.locker, ttl_ms = 5000, wait_ms = 10000, guard = lock)]
async fn change_under_lock(
    state: &AppState,
    user_id: Id,
    change: Change,
    amount: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    let (user_id, fence) = (user_id.0, db_fence(lock));
    state
        .db
        .holding(lock, async |conn| match change {
            Change::Charge => add(conn, state, user_id, amount, fence, key).await,
            Change::Use => subtract(conn, state, user_id, amount, fence, key).await,
        })
        .await
}

/// A fenced upsert: a holder whose lock was taken over cannot write. (The addition happens in
/// the statement, so no read can go stale in between.)
async fn add(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user_id: i64,
    amount: i64,
    fence: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    conn.transaction::<_, AppError, _>(async |conn| {
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
            return Err(AppError::FencedOut { fence });
        };
        write_ledger(
            conn,
            user_id,
            Change::Charge,
            amount,
            &state.instance,
            fence,
        )
        .await?;
        finish(conn, key, user_id, balance).await
    })
    .await
}

/// Read, check, then a compare-and-set on the fence read with the balance (see
/// `fenced_deduct`).
async fn subtract(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user_id: i64,
    amount: i64,
    fence: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    conn.transaction::<_, AppError, _>(async |conn| {
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
            return Err(AppError::FencedOut { fence });
        }
        write_ledger(conn, user_id, Change::Use, amount, &state.instance, fence).await?;
        finish(conn, key, user_id, balance - amount).await
    })
    .await
}

/// Reads a balance.
#[get("/balance/{user_id}")]
pub async fn show(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
) -> Result<HttpResponse, AppError> {
    let balance: i64 = state
        .db
        .bounded(async |conn| {
            Ok(balances::table
                .find(user_id.0)
                .select(balances::balance)
                .first(conn)
                .await
                .optional()?)
        })
        .await?
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
    change: Change,
    amount: i64,
    instance: &str,
    fence: i64,
) -> Result<(), AppError> {
    diesel::insert_into(balance_ledger::table)
        .values((
            balance_ledger::user_id.eq(user_id),
            balance_ledger::kind.eq(change.name()),
            balance_ledger::amount.eq(amount),
            balance_ledger::instance.eq(instance),
            balance_ledger::fence.eq(Some(fence)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
