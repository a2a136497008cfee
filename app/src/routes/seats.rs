//! Seat reservation: one seat, one winner.

use crate::configuration::LOCK_TTL_MS;
use crate::error::AppError;
use crate::fencing::{self, db_fence};
use crate::input::{Id, JsonBody, SeatNo};
use crate::schema::seat_reservations;
use crate::state::AppState;
use actix_web::{post, web, HttpResponse};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fencelock::distributed_lock;
use serde::Deserialize;
use serde_json::json;

/// `{"user_id": N}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// Who asks.
    #[schema(value_type = i64, minimum = 1, maximum = 999_999_999_999_999_999_i64)]
    pub user_id: Id,
}

fn seat_taken(concert_id: i64, seat_no: i32) -> AppError {
    AppError::Conflict {
        code: "seat_taken",
        message: format!("seat {seat_no} of concert {concert_id} is already reserved"),
    }
}

/// Reserves a seat: 201 for the one winner, 409 `seat_taken` for everyone else.
#[utoipa::path(
    tag = "seats",
    params(
        ("concert_id" = String, Path, pattern = "^[1-9][0-9]{0,17}$", description = "The concert: a positive integer in plain decimal (no sign, no leading zeros)"),
        ("seat_no" = String, Path, pattern = "^([1-9][0-9]{0,4}|100000)$", description = "The seat: 1 to 100000 in plain decimal"),
    ),
    request_body(content = UserBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Reserved", body = crate::contract::Reservation),
        (status = 409, description = "`seat_taken` or `lock_lost`; nothing written", body = crate::contract::ErrorBody),
        (status = 423, description = "`lock_busy`", body = crate::contract::ErrorBody),
        crate::contract::WriteRefusals,
    )
)]
#[post("/concerts/{concert_id}/seats/{seat_no}/reserve")]
#[distributed_lock(resource = "seat:{path.0}:{path.1}", ttl_ms = LOCK_TTL_MS, wait_ms = 10000, guard = lock)]
pub async fn reserve(
    state: web::Data<AppState>,
    path: web::Path<(Id, SeatNo)>,
    body: JsonBody<UserBody>,
) -> Result<HttpResponse, AppError> {
    let (Id(concert_id), SeatNo(seat_no)) = *path;
    let user_id = body.0.user_id.0;
    let seat = Seat {
        concert_id,
        seat_no,
    };
    state
        .db
        .holding(lock, async |conn| {
            reserve_seat(
                conn,
                &state.instance,
                lock.resource(),
                seat,
                user_id,
                db_fence(lock),
            )
            .await
        })
        .await?;
    Ok(HttpResponse::Created()
        .json(json!({"concert_id": concert_id, "seat_no": seat_no, "user_id": user_id})))
}

/// A seat of a concert.
#[derive(Debug, Clone, Copy)]
pub struct Seat {
    /// The concert.
    pub concert_id: i64,
    /// The seat number.
    pub seat_no: i32,
}

/// Reserves `seat` for `user_id` under the lock `resource` held with `fence`: 409 `seat_taken`
/// if it is reserved, [`AppError::FencedOut`] if the holder's lock was taken over. Public so
/// tests can play a stale holder.
pub async fn reserve_seat(
    conn: &mut AsyncPgConnection,
    instance: &str,
    resource: &str,
    seat: Seat,
    user_id: i64,
    fence: i64,
) -> Result<(), AppError> {
    let Seat {
        concert_id,
        seat_no,
    } = seat;
    conn.transaction::<_, AppError, _>(async |conn| {
        fencing::claim(conn, resource, fence).await?;
        let taken: bool = diesel::select(diesel::dsl::exists(
            seat_reservations::table.find((concert_id, seat_no)),
        ))
        .get_result(conn)
        .await?;
        if taken {
            return Err(seat_taken(concert_id, seat_no));
        }
        diesel::insert_into(seat_reservations::table)
            .values((
                seat_reservations::concert_id.eq(concert_id),
                seat_reservations::seat_no.eq(seat_no),
                seat_reservations::user_id.eq(user_id),
                seat_reservations::instance.eq(instance),
                seat_reservations::fence.eq(fence),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}
