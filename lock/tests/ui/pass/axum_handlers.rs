// axum handlers: the Locker from a request extension (`axum`) or from `State`
// (`locker = state.locker`), parameters bound by patterns, `impl IntoResponse`.
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Router};
use fencelock::{distributed_lock, LockError, Locker};

#[derive(Clone)]
struct AppState {
    locker: Locker,
}

#[distributed_lock(axum, resource = "product:{id}", ttl_ms = 5000)]
async fn deduct(Path(id): Path<u64>) -> Result<String, LockError> {
    Ok(id.to_string())
}

#[distributed_lock(axum, resource = "product:{id}", locker = state.locker)]
async fn show(State(state): State<AppState>, Path(id): Path<u64>) -> impl IntoResponse {
    let _ = &state;
    id.to_string()
}

fn main() {
    let locker = Locker::new(fencelock::LockerConfig::new(["redis://127.0.0.1/"])).unwrap();
    let _: Router = Router::new()
        .route("/product/{id}/deduct", post(deduct))
        .route("/product/{id}", post(show))
        .with_state(AppState { locker: locker.clone() })
        .layer(Extension(locker));
}
