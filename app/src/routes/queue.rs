//! Queue tokens: positions 1, 2, 3, … per concert, no gaps, no repeats.

use crate::configuration::LOCK_TTL_MS;
use crate::error::AppError;
use crate::fencing::{self, db_fence};
use crate::input::{Id, JsonBody};
use crate::routes::seats::UserBody;
use crate::schema::queue_tokens;
use crate::state::AppState;
use actix_web::{post, web, HttpResponse};
use diesel::dsl::max;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fencelock::distributed_lock;
use serde_json::json;

/// Hands out the next position in a concert's queue.
#[utoipa::path(
    tag = "seats",
    params(("concert_id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The concert: a positive integer in plain decimal (no sign, no leading zeros)")),
    request_body(content = crate::routes::seats::UserBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The next place", body = crate::contract::QueueToken),
        (status = 409, description = "`lock_lost`; nothing written", body = crate::contract::ErrorBody),
        (status = 423, description = "`lock_busy`", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
#[post("/queue/{concert_id}/tokens")]
#[distributed_lock(resource = "queue:{concert_id}", ttl_ms = LOCK_TTL_MS, wait_ms = 10000, guard = lock)]
pub async fn take(
    state: web::Data<AppState>,
    concert_id: web::Path<Id>,
    body: JsonBody<UserBody>,
) -> Result<HttpResponse, AppError> {
    let concert_id = concert_id.0;
    let user_id = body.0.user_id.0;
    let fence = db_fence(lock);
    let (position, token) = state
        .db
        .holding(lock, async |conn| {
            take_token(
                conn,
                &state.instance,
                lock.resource(),
                concert_id,
                user_id,
                fence,
            )
            .await
        })
        .await?;
    Ok(HttpResponse::Created().json(json!({"token": token, "position": position})))
}

/// The next position of a concert's queue for `user_id`, written with the holder's `fence`
/// after claiming `resource` (the lock's) for it: a holder whose lock was taken over gets
/// [`AppError::FencedOut`]. Public so tests can play a stale holder.
pub async fn take_token(
    conn: &mut AsyncPgConnection,
    instance: &str,
    resource: &str,
    concert_id: i64,
    user_id: i64,
    fence: i64,
) -> Result<(i32, String), AppError> {
    let token = uuid::Uuid::new_v4().to_string();
    conn.transaction::<_, AppError, _>(async |conn| {
        fencing::claim(conn, resource, fence).await?;
        let last: Option<i32> = queue_tokens::table
            .filter(queue_tokens::concert_id.eq(concert_id))
            .select(max(queue_tokens::position))
            .first(conn)
            .await?;
        let position = last.unwrap_or(0) + 1;
        diesel::insert_into(queue_tokens::table)
            .values((
                queue_tokens::concert_id.eq(concert_id),
                queue_tokens::position.eq(position),
                queue_tokens::user_id.eq(user_id),
                queue_tokens::token.eq(&token),
                queue_tokens::instance.eq(instance),
                queue_tokens::fence.eq(fence),
            ))
            .execute(conn)
            .await?;
        Ok((position, token))
    })
    .await
}
