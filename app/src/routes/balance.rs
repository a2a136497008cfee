//! User balances: charge and use, each under the user's lock with a fenced write, and
//! transfers between two users under both users' locks.

use crate::configuration::LOCK_TTL_MS;
use crate::error::AppError;
use crate::fencing::{db_fence, db_fence_of};
use crate::idempotency::{self, IdempotencyKey, Stored};
use crate::input::{Amount, Id, JsonBody};
use crate::schema::{balance_ledger, balances};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fencelock::distributed_lock;
use serde::Deserialize;
use serde_json::json;

/// `{"from": id, "to": id, "amount": N}` for a transfer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The payer.
    #[schema(value_type = i64, minimum = 1, maximum = 999_999_999_999_999_999_i64)]
    from: Id,
    /// The payee (not the payer).
    #[schema(value_type = i64, minimum = 1, maximum = 999_999_999_999_999_999_i64)]
    to: Id,
    /// How much.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000)]
    amount: Amount,
}

/// `{"amount": N}` for charge and use.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    /// How much.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000)]
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
#[utoipa::path(
    tag = "balances",
    params(("user_id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The user (created on first charge): a positive integer in plain decimal (no sign, no leading zeros)"), crate::contract::IdempotencyHeader),
    request_body(content = AmountBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Charged (or replayed)", body = crate::contract::Balance),
        (status = 409, description = "`balance_overflow`, `lock_lost` or `idempotency_key_in_flight`; nothing written", body = crate::contract::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = crate::contract::ErrorBody),
        (status = 423, description = "`lock_busy`", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
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
#[utoipa::path(
    tag = "balances",
    params(("user_id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The user: a positive integer in plain decimal (no sign, no leading zeros)"), crate::contract::IdempotencyHeader),
    request_body(content = AmountBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Spent (or replayed)", body = crate::contract::Balance),
        (status = 404, description = "`user_not_found`", body = crate::contract::ErrorBody),
        (status = 409, description = "`insufficient_balance`, `lock_lost` or `idempotency_key_in_flight`; nothing written", body = crate::contract::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = crate::contract::ErrorBody),
        (status = 423, description = "`lock_busy`", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
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

/// A ledger row's `kind`: balance = Σ charge + Σ transfer_in − Σ use − Σ transfer_out.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Change(Change),
    TransferOut,
    TransferIn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Change(change) => change.name(),
            Kind::TransferOut => "transfer_out",
            Kind::TransferIn => "transfer_in",
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
    let input = json!({"user": user_id.0, "amount": amount});
    let key = IdempotencyKey::from_request(req, change.name(), &input)?;
    // A repeat is answered from the stored response without taking the user's lock; no pooled
    // connection is held while waiting for it (see `product::deduct`).
    idempotency::run(state, key, async |key| {
        change_under_lock(state, user_id, change, amount, key).await
    })
    .await
}

#[distributed_lock(resource = "balance:{user_id}", locker = state.locker, ttl_ms = LOCK_TTL_MS, wait_ms = 10000, guard = lock)]
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
        // A sum past BIGINT leaves the row as it is (and is told apart from a fence refusal
        // below): the database would fail the whole statement.
        let row: Option<BalanceRow> = diesel::sql_query(
            "INSERT INTO balances (user_id, balance, fence) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE \
             SET balance = balances.balance + EXCLUDED.balance, fence = EXCLUDED.fence \
             WHERE balances.fence <= EXCLUDED.fence \
               AND balances.balance <= 9223372036854775807 - EXCLUDED.balance \
             RETURNING balance",
        )
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(amount)
        .bind::<BigInt, _>(fence)
        .get_result(conn)
        .await
        .optional()?;
        let Some(BalanceRow { balance }) = row else {
            let held: i64 = balances::table
                .find(user_id)
                .select(balances::balance)
                .first(conn)
                .await?;
            if held.checked_add(amount).is_none() {
                return Err(AppError::Conflict {
                    code: "balance_overflow",
                    message: format!(
                        "user {user_id} would hold more than a BIGINT; nothing was charged"
                    ),
                });
            }
            return Err(AppError::FencedOut { fence });
        };
        write_ledger(
            conn,
            user_id,
            Kind::Change(Change::Charge),
            amount,
            &state.instance,
            fence,
        )
        .await?;
        finish(conn, key, &balance_json(user_id, balance)).await
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
        write_ledger(
            conn,
            user_id,
            Kind::Change(Change::Use),
            amount,
            &state.instance,
            fence,
        )
        .await?;
        finish(conn, key, &balance_json(user_id, balance - amount)).await
    })
    .await
}

/// Moves `amount` from one user to another: 422 `same_user` for a transfer to oneself, 404
/// `user_not_found` when either user is unknown, 409 `insufficient_balance` when `from` is
/// short; nothing is written in any of those cases.
#[utoipa::path(
    tag = "balances",
    params(crate::contract::IdempotencyHeader),
    request_body(content = TransferBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Transferred (or replayed)", body = crate::contract::Transferred),
        (status = 404, description = "`user_not_found` (either user)", body = crate::contract::ErrorBody),
        (status = 422, description = "`same_user` (a transfer to oneself) or `idempotency_key_reused`", body = crate::contract::ErrorBody),
        (status = 409, description = "`insufficient_balance`, `balance_overflow`, `lock_lost` or `idempotency_key_in_flight`; nothing written", body = crate::contract::ErrorBody),
        (status = 423, description = "`lock_busy`", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
#[post("/balance/transfer")]
pub async fn transfer(
    state: web::Data<AppState>,
    body: JsonBody<TransferBody>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let TransferBody { from, to, amount } = body.0;
    // Refused before any lock, like all bad input (and not stored for an Idempotency-Key): 422,
    // well-formed input that no state of the balances could accept.
    if from == to {
        return Err(AppError::Unprocessable {
            code: "same_user",
            message: format!("from and to are both user {from}: a transfer needs two users"),
        });
    }
    let input = json!({"from": from.0, "to": to.0, "amount": amount.0});
    let key = IdempotencyKey::from_request(&req, "transfer", &input)?;
    idempotency::run(&state, key, async |key| {
        transfer_under_lock(&state, from, to, amount.0, key).await
    })
    .await
}

/// Both users' locks, taken in one global order by the runtime (so transfers in opposite
/// directions cannot deadlock), each row written with its own lock's fence.
#[distributed_lock(resource = ["balance:{from}", "balance:{to}"], locker = state.locker, ttl_ms = LOCK_TTL_MS, wait_ms = 10000, guard = lock)]
async fn transfer_under_lock(
    state: &AppState,
    from: Id,
    to: Id,
    amount: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    let from = Party {
        user_id: from.0,
        fence: db_fence_of(lock, &format!("balance:{from}")),
    };
    let to = Party {
        user_id: to.0,
        fence: db_fence_of(lock, &format!("balance:{to}")),
    };
    state
        .db
        .holding(lock, async |conn| {
            move_balance(conn, state, from, to, amount, key).await
        })
        .await
}

/// One side of a transfer: the user and the fence of the lock on that user's balance.
#[derive(Debug, Clone, Copy)]
struct Party {
    user_id: i64,
    fence: i64,
}

/// Reads both rows, checks, then one compare-and-set per row on the fence read with it (see
/// `subtract`), both ledger rows and the idempotency record, all in one transaction: either
/// the whole transfer lands or nothing does.
async fn move_balance(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    from: Party,
    to: Party,
    amount: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    conn.transaction::<_, AppError, _>(async |conn| {
        let rows: Vec<(i64, i64, i64)> = balances::table
            .filter(balances::user_id.eq_any([from.user_id, to.user_id]))
            .select((balances::user_id, balances::balance, balances::fence))
            .load(conn)
            .await?;
        let read = |party: Party| {
            rows.iter()
                .find(|(user_id, _, _)| *user_id == party.user_id)
                .map(|&(_, balance, fence)| (balance, fence))
                .ok_or_else(|| unknown_user(party.user_id))
        };
        let (from_balance, from_read) = read(from)?;
        let (to_balance, to_read) = read(to)?;
        if from_balance < amount {
            return Err(AppError::Conflict {
                code: "insufficient_balance",
                message: format!(
                    "user {} has {from_balance}, {amount} requested; nothing was transferred",
                    from.user_id
                ),
            });
        }
        let from_after = from_balance - amount;
        let to_after = to_balance
            .checked_add(amount)
            .ok_or_else(|| AppError::Conflict {
                code: "balance_overflow",
                message: format!(
                    "user {} would hold more than a BIGINT; nothing was transferred",
                    to.user_id
                ),
            })?;
        // Rows are written in user id order: holders that lost their lock can still race a
        // newer holder here, and a fixed order keeps PostgreSQL's row locks from deadlocking.
        let mut writes = [(from, from_read, from_after), (to, to_read, to_after)];
        writes.sort_by_key(|(party, _, _)| party.user_id);
        for (party, read_fence, balance) in writes {
            let written = diesel::update(
                balances::table
                    .find(party.user_id)
                    .filter(balances::fence.eq(read_fence))
                    .filter(balances::fence.lt(party.fence)),
            )
            .set((
                balances::balance.eq(balance),
                balances::fence.eq(party.fence),
            ))
            .execute(conn)
            .await?;
            if written == 0 {
                return Err(AppError::FencedOut { fence: party.fence });
            }
        }
        for (party, kind) in [(from, Kind::TransferOut), (to, Kind::TransferIn)] {
            write_ledger(
                conn,
                party.user_id,
                kind,
                amount,
                &state.instance,
                party.fence,
            )
            .await?;
        }
        let body = json!({
            "from": balance_json(from.user_id, from_after),
            "to": balance_json(to.user_id, to_after),
            "amount": amount,
        });
        finish(conn, key, &body).await
    })
    .await
}

/// Reads a balance.
#[utoipa::path(
    tag = "balances",
    params(("user_id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The user: a positive integer in plain decimal (no sign, no leading zeros)")),
    responses(
        (status = 200, description = "The balance", body = crate::contract::Balance),
        (status = 404, description = "`user_not_found`", body = crate::contract::ErrorBody),
        crate::contract::ReadRefusals,
    )
)]
#[get("/balance/{user_id}")]
pub async fn show(
    state: web::Data<AppState>,
    user_id: web::Path<Id>,
) -> Result<HttpResponse, AppError> {
    let balance: i64 = state
        .db
        .read(async |conn| {
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

/// The 200 with `body`, stored for the request's key in the caller's transaction.
async fn finish(
    conn: &mut AsyncPgConnection,
    key: Option<&IdempotencyKey>,
    body: &serde_json::Value,
) -> Result<Stored, AppError> {
    let stored = Stored::new(StatusCode::OK, body);
    if let Some(key) = key {
        idempotency::save(conn, key, &stored).await?;
    }
    Ok(stored)
}

async fn write_ledger(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    kind: Kind,
    amount: i64,
    instance: &str,
    fence: i64,
) -> Result<(), AppError> {
    diesel::insert_into(balance_ledger::table)
        .values((
            balance_ledger::user_id.eq(user_id),
            balance_ledger::kind.eq(kind.name()),
            balance_ledger::amount.eq(amount),
            balance_ledger::instance.eq(instance),
            balance_ledger::fence.eq(Some(fence)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
