// A handler returning `HttpResponse`, registered with `.route(.., web::post().to(..))`.
use actix_web::{web, App, HttpResponse};
use fencelock::distributed_lock;

#[distributed_lock(resource = "user:{user_id}", wait_ms = 0)]
async fn charge(user_id: web::Path<u64>) -> HttpResponse {
    if *user_id == 0 {
        return HttpResponse::BadRequest().finish();
    }
    HttpResponse::Ok().finish()
}

fn main() {
    let _ = App::new().route("/balance/{user_id}/charge", web::post().to(charge));
}
