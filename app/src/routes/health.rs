//! `/health` (what the load balancer checks) and `/metrics` (Prometheus).

use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use diesel_async::RunQueryDsl;
use serde_json::json;
use std::time::Duration;

/// 200 when PostgreSQL answers and enough Redis nodes are up to lock; 503 (same shape) otherwise.
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let db_check = async {
        let mut conn = state.pool.get().await.ok()?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
    };
    let (db, redis) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), db_check),
        state.locker.health()
    );
    let db_ok = matches!(db, Ok(Some(_)));
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
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics_handle().render())
}
