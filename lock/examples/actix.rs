//! `#[distributed_lock]` on an actix-web handler: the Locker comes from app data.
//!
//! ```sh
//! cargo run -p fencelock --features actix --example actix
//! curl -X POST http://127.0.0.1:8080/product/42/deduct
//! ```

use actix_web::{post, web, App, HttpResponse, HttpServer};
use fencelock::{distributed_lock, LockError, Locker, LockerConfig};

#[post("/product/{id}/deduct")]
#[distributed_lock(resource = "product:{id}", ttl_ms = 5000, auto_extend, guard = lock)]
async fn deduct(id: web::Path<u64>) -> Result<HttpResponse, LockError> {
    // Runs only while this request holds `product:<id>`, in every instance. A busy lock
    // answers 423 with Retry-After, Redis down 503 — JSON with a stable `error` code.
    Ok(HttpResponse::Ok().body(format!("product {id} under fence {}\n", lock.fence())))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let locker = Locker::new(LockerConfig::new([url])).map_err(std::io::Error::other)?;
    let locker = web::Data::new(locker);
    let server = HttpServer::new(move || App::new().app_data(locker.clone()).service(deduct))
        // Let actix drop a handler whose client hung up, so its lock is freed at once.
        .h1_allow_half_closed(false)
        .workers(2)
        .bind(bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
