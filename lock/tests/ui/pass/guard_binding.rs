// `guard = ident` binds the guard in the body: fence the write, or watch for loss.
use actix_web::{post, web, App, HttpResponse};
use fencelock::distributed_lock;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reserve {
    user_id: u64,
}

#[post("/concerts/{concert_id}/seats/{seat_no}/reserve")]
#[distributed_lock(resource = "seat:{path.0}:{path.1}:{{user {body.user_id}}}", guard = lock)]
async fn reserve(path: web::Path<(u64, u32)>, body: web::Json<Reserve>) -> HttpResponse {
    if lock.is_lost() {
        return HttpResponse::Conflict().finish();
    }
    HttpResponse::Created().body(format!("fence {} for user {}", lock.fence(), body.user_id))
}

fn main() {
    let _ = App::new().service(reserve);
}
