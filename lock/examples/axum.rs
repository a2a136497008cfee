//! `#[distributed_lock]` on axum handlers: the Locker from a request extension (the `axum`
//! flag), or from `State` (`locker = state.locker`); one resource or several.
//!
//! ```sh
//! cargo run -p fencelock --features axum --example axum
//! curl -X POST http://127.0.0.1:8080/product/42/deduct
//! curl -X POST http://127.0.0.1:8080/transfer/1/2
//! ```

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Extension, Router};
use fencelock::{distributed_lock, LockError, Locker, LockerConfig};

#[derive(Clone)]
struct AppState {
    locker: Locker,
}

/// The Locker from the request extensions.
#[distributed_lock(axum, resource = "product:{id}", ttl_ms = 5000, guard = lock)]
async fn deduct(Path(id): Path<u64>) -> Result<String, LockError> {
    Ok(format!("product {id} under fence {}\n", lock.fence()))
}

/// The Locker from `State`; two users' balances at once, each with its own fence.
#[distributed_lock(axum, resource = ["balance:{from}", "balance:{to}"], locker = state.locker, guard = both)]
async fn transfer(
    State(state): State<AppState>,
    Path((from, to)): Path<(u64, u64)>,
) -> Result<String, LockError> {
    let _ = &state;
    let from_fence = both.fence(&format!("balance:{from}")).unwrap_or_default();
    let to_fence = both.fence(&format!("balance:{to}")).unwrap_or_default();
    Ok(format!(
        "{from} → {to} under fences {from_fence} and {to_fence}\n"
    ))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let locker = Locker::new(LockerConfig::new([url])).map_err(std::io::Error::other)?;
    let app = Router::new()
        .route("/product/{id}/deduct", post(deduct))
        .route("/transfer/{from}/{to}", post(transfer))
        .with_state(AppState {
            locker: locker.clone(),
        })
        .layer(Extension(locker));
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
