// A route-macro handler returning `Result`: lock failures become `Err(actix_web::Error)`.
use actix_web::{post, web, App, HttpResponse};
use fencelock::distributed_lock;

#[post("/product/{id}/deduct")]
#[distributed_lock(resource = "product:{id}", ttl_ms = 5000, auto_extend)]
async fn deduct(id: web::Path<i64>) -> Result<HttpResponse, actix_web::Error> {
    Ok(HttpResponse::Ok().body(format!("deducted from {id}")))
}

fn main() {
    let _ = App::new().service(deduct);
}
