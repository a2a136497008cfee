// `impl Responder`: the failure response and the body's value share a type through `Either`.
use actix_web::{get, web, App, Responder};
use fencelock::distributed_lock;

#[get("/report/{name}")]
#[distributed_lock(resource = "report:{name}", ttl_ms = 2000, fair)]
async fn report(name: web::Path<String>) -> impl Responder {
    format!("report {name}")
}

fn main() {
    let _ = App::new().service(report);
}
