// `locker = state.locker`: a handler whose app state holds the Locker.
use actix_web::{web, App, HttpResponse};
use fencelock::{distributed_lock, LockError, Locker};

struct AppState {
    locker: Locker,
}

#[distributed_lock(resource = "queue:{concert_id}", locker = state.locker, ttl_ms = 3000, wait_ms = 1000)]
async fn take_token(state: web::Data<AppState>, concert_id: web::Path<u64>) -> Result<HttpResponse, LockError> {
    Ok(HttpResponse::Created().finish())
}

fn main() {
    let _ = App::new().route("/queue/{concert_id}/tokens", web::post().to(take_token));
}
