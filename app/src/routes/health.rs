//! `/health/live` (what the load balancer checks), `/health/ready` and `/health` (dependencies)
//! and `/metrics` (Prometheus).

use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use serde_json::json;
use std::time::Duration;

/// Liveness: 200 while the process serves requests, whatever its dependencies do. This is what
/// the load balancer routes on, so an outage of the shared database or Redis (answered by every
/// instance with a JSON 503) does not take every instance out.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "The process serves", body = crate::contract::Live), crate::contract::ReadRefusals)
)]
#[get("/health/live")]
pub async fn live(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "instance": state.instance}))
}

/// Readiness: 200 when PostgreSQL answers and enough Redis nodes are up to lock; 503 (same
/// shape) otherwise.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "PostgreSQL answers and Redis has a quorum", body = crate::contract::Ready),
        (status = 503, description = "A dependency is down (same shape)", body = crate::contract::Ready),
        (status = 400, description = "`invalid_path`", body = crate::contract::ErrorBody),
        (status = 431, description = "`headers_too_large`", body = crate::contract::ErrorBody),
    )
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    readiness(&state).await
}

/// The readiness report, at its historical path.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "As `/health/ready`", body = crate::contract::Ready),
        (status = 503, description = "A dependency is down (same shape)", body = crate::contract::Ready),
        (status = 400, description = "`invalid_path`", body = crate::contract::ErrorBody),
        (status = 431, description = "`headers_too_large`", body = crate::contract::ErrorBody),
    )
)]
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    readiness(&state).await
}

async fn readiness(state: &AppState) -> HttpResponse {
    let (db_ok, redis) = tokio::join!(state.db.ping(Duration::from_secs(1)), state.locker.health());
    let body = json!({
        "status": if db_ok && redis.quorum { "ok" } else { "degraded" },
        "instance": state.instance,
        "db": if db_ok { "ok" } else { "down" },
        "redis": {"nodes": redis.nodes, "up": redis.up, "quorum": redis.quorum},
    });
    if db_ok && redis.quorum {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text: the lock runtime's metrics and HTTP request counts and latencies.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text", body = String, content_type = "text/plain"),
        (status = 400, description = "`invalid_path`", body = crate::contract::ErrorBody),
        (status = 431, description = "`headers_too_large`", body = crate::contract::ErrorBody),
    )
)]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics_handle().render())
}
