//! `#[distributed_lock]` on real actix-web handlers, served over real TCP, locking in a real Redis.

mod common;

use actix_web::{post, web, App, HttpResponse, HttpServer, ResponseError};
use common::{locker, unique};
use fencelock::{distributed_lock, LockError, LockOptions, Locker};
use fencelock_testkit::{shared_redis, RedisServer};
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One hold as the handler saw it.
#[derive(Debug, Clone)]
struct Hold {
    resource: String,
    start: Instant,
    end: Instant,
    fence: u64,
}

#[derive(Default)]
struct HoldLog(Mutex<Vec<Hold>>);

#[derive(Deserialize)]
struct Work {
    hold_ms: u64,
}

#[post("/work/{id}")]
#[distributed_lock(resource = "work:{id}", ttl_ms = 30000, wait_ms = 10000, guard = lock)]
async fn work(
    id: web::Path<String>,
    query: web::Query<Work>,
    log: web::Data<HoldLog>,
) -> HttpResponse {
    let start = Instant::now();
    log.0.lock().unwrap().push(Hold {
        resource: lock.resource().to_string(),
        start,
        end: start,
        fence: lock.fence(),
    });
    tokio::time::sleep(Duration::from_millis(query.hold_ms)).await;
    let end = Instant::now();
    if let Some(hold) = log
        .0
        .lock()
        .unwrap()
        .iter_mut()
        .rev()
        .find(|hold| hold.start == start)
    {
        hold.end = end;
    }
    HttpResponse::Ok().body(lock.fence().to_string())
}

#[post("/try/{id}")]
#[distributed_lock(resource = "work:{id}", wait_ms = 0)]
async fn try_once(id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().body(id.into_inner())
}

/// An app error that wraps lock failures (`E: From<LockError>`), as a real service would.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("rejected")]
    Rejected,
}

impl ResponseError for AppError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            AppError::Lock(lock) => lock.status_code(),
            AppError::Rejected => actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Lock(lock) => lock.error_response(),
            AppError::Rejected => HttpResponse::UnprocessableEntity().finish(),
        }
    }
}

fn reject() -> Result<(), AppError> {
    Err(AppError::Rejected)
}

#[post("/early/{id}/{how}")]
#[distributed_lock(resource = "work:{path.0}", ttl_ms = 30000)]
async fn early(path: web::Path<(String, String)>) -> Result<HttpResponse, AppError> {
    if path.1 == "return" {
        return Ok(HttpResponse::Accepted().finish());
    }
    reject()?;
    Ok(HttpResponse::Ok().finish())
}

#[post("/lossy/{id}")]
#[distributed_lock(resource = "lossy:{id}", ttl_ms = 300, auto_extend, cancel_on_lost)]
async fn lossy(id: web::Path<String>) -> HttpResponse {
    // Far longer than the test lets it run: only losing the lock ends it early.
    tokio::time::sleep(Duration::from_secs(10)).await;
    HttpResponse::Ok().body(id.into_inner())
}

struct TestServer {
    port: u16,
    log: web::Data<HoldLog>,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    fn start(locker: Locker) -> TestServer {
        let log = web::Data::new(HoldLog::default());
        let app_log = log.clone();
        let locker = web::Data::new(locker);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(locker.clone())
                .app_data(app_log.clone())
                .service(work)
                .service(try_once)
                .service(early)
                .service(lossy)
        })
        .workers(2)
        .disable_signals()
        // Without this actix keeps serving a request whose client hung up (it allows TCP
        // half-close), so the handler, and the lock, would live on until the body ends.
        .h1_allow_half_closed(false)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        TestServer { port, log, handle }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }

    /// POSTs `path` and returns (status, headers, body).
    async fn post(&self, path: &str) -> (u16, String, String) {
        let mut stream = self.connect().await;
        send_post(&mut stream, path).await;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, head.to_lowercase(), body.to_string())
    }

    fn holds(&self) -> Vec<Hold> {
        self.log.0.lock().unwrap().clone()
    }
}

async fn send_post(stream: &mut TcpStream, path: &str) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
}

#[actix_web::test]
async fn one_resource_never_overlaps_while_different_resources_run_in_parallel() {
    let server = TestServer::start(locker(&[shared_redis().url()]));
    let hot = unique("hot");
    let mut requests = Vec::new();
    for _ in 0..12 {
        requests.push(format!("/work/{hot}?hold_ms=15"));
    }
    for i in 0..6 {
        requests.push(format!("/work/{}?hold_ms=150", unique(&format!("cold{i}"))));
    }
    let responses =
        futures_util::future::join_all(requests.iter().map(|path| server.post(path))).await;
    assert!(
        responses.iter().all(|(status, _, _)| *status == 200),
        "{responses:?}"
    );

    let holds = server.holds();
    let hot_resource = format!("work:{hot}");
    let mut hot_holds: Vec<&Hold> = holds
        .iter()
        .filter(|hold| hold.resource == hot_resource)
        .collect();
    assert_eq!(hot_holds.len(), 12);
    hot_holds.sort_by_key(|hold| hold.start);
    for pair in hot_holds.windows(2) {
        assert!(
            pair[1].start >= pair[0].end,
            "holds of one resource overlapped: {pair:?}"
        );
        assert!(pair[1].fence > pair[0].fence);
    }
    let cold: Vec<&Hold> = holds
        .iter()
        .filter(|hold| hold.resource.starts_with("work:cold"))
        .collect();
    let overlapping = cold.iter().any(|a| {
        cold.iter()
            .any(|b| a.resource != b.resource && a.start < b.end && b.start < a.end)
    });
    assert!(overlapping, "different resources were serialized: {cold:?}");
    server.handle.stop(false).await;
}

#[actix_web::test]
async fn busy_is_423_with_retry_after_and_a_json_code() {
    let locker = locker(&[shared_redis().url()]);
    let server = TestServer::start(locker.clone());
    let id = unique("busy");
    let _held = locker
        .acquire(&format!("work:{id}"), &LockOptions::new())
        .await
        .unwrap();
    let (status, head, body) = server.post(&format!("/try/{id}")).await;
    assert_eq!(status, 423, "{head}\n{body}");
    assert!(head.contains("retry-after: "), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "lock_busy");
    assert_eq!(json["resource"], format!("work:{id}"));
    server.handle.stop(false).await;
}

#[actix_web::test]
async fn redis_down_is_503() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(locker(&[redis.url()]));
    redis.kill();
    let (status, _, body) = server.post("/try/anything").await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "lock_unavailable");
    server.handle.stop(false).await;
}

/// `cancel_on_lost`: a handler whose lock is lost stops and answers `409 lock_lost` in JSON.
#[actix_web::test]
async fn a_handler_whose_lock_is_lost_answers_409_lock_lost() {
    let url = shared_redis().url();
    let server = TestServer::start(locker(&[&url]));
    let id = unique("lost");
    let path = format!("/lossy/{id}");
    let take_the_key_away = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Someone (an operator, an expiry during a stall) takes the key away.
        let mut redis = common::connection(&url).await;
        let key = common::lock_key(&format!("lossy:{id}"));
        let _: () = redis::AsyncCommands::del(&mut redis, key).await.unwrap();
    };
    let ((status, _, body), ()) = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::join!(server.post(&path), take_the_key_away)
    })
    .await
    .expect("the handler kept running after its lock was lost");
    assert_eq!(status, 409, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "lock_lost");
    server.handle.stop(false).await;
}

/// A case of [`early_return_and_question_mark_release_the_lock`]: how the handler leaves early
/// (the `how` segment of `/early/{id}/{how}`) and the status it then answers.
#[derive(Debug)]
struct EarlyExit {
    how: &'static str,
    status: u16,
}

#[actix_web::test]
async fn early_return_and_question_mark_release_the_lock() {
    let locker = locker(&[shared_redis().url()]);
    let server = TestServer::start(locker.clone());
    let cases = [
        EarlyExit {
            how: "return",
            status: 202,
        },
        EarlyExit {
            how: "question-mark",
            status: 422,
        },
    ];
    for EarlyExit {
        how,
        status: expected,
    } in cases
    {
        let id = unique("early");
        let (status, _, _) = server.post(&format!("/early/{id}/{how}")).await;
        assert_eq!(status, expected, "`{how}`");
        let guard = locker
            .try_acquire(&format!("work:{id}"), &LockOptions::new())
            .await
            .unwrap_or_else(|err| panic!("`{how}` left the lock held: {err}"));
        guard.release().await.unwrap();
    }
    server.handle.stop(false).await;
}

#[actix_web::test]
async fn a_client_that_disconnects_mid_hold_frees_the_lock_at_once() {
    let locker = locker(&[shared_redis().url()]);
    let server = TestServer::start(locker.clone());
    let id = unique("disconnect");
    let mut stream = server.connect().await;
    send_post(&mut stream, &format!("/work/{id}?hold_ms=20000")).await;
    // Wait until the handler holds the lock (TTL 30 s, hold 20 s)…
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .holds()
        .iter()
        .all(|hold| hold.resource != format!("work:{id}"))
    {
        assert!(Instant::now() < deadline, "handler never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // …then hang up. actix drops the handler's future; the guard's drop releases.
    drop(stream);
    let hung_up = Instant::now();
    let guard = locker
        .acquire(
            &format!("work:{id}"),
            &LockOptions::new().wait(Duration::from_secs(5)),
        )
        .await
        .expect("the lock was not freed after the client left");
    let freed_after = hung_up.elapsed();
    assert!(
        freed_after < Duration::from_secs(1),
        "freed after {freed_after:?} (TTL 30 s)"
    );
    guard.release().await.unwrap();
    server.handle.stop(false).await;
}

#[actix_web::test]
async fn guard_binding_gives_strictly_increasing_fences() {
    let server = TestServer::start(locker(&[shared_redis().url()]));
    let id = unique("fences");
    let mut last = 0u64;
    for _ in 0..10 {
        let (status, _, body) = server.post(&format!("/work/{id}?hold_ms=0")).await;
        assert_eq!(status, 200);
        let fence: u64 = body.parse().unwrap();
        assert!(fence > last, "{fence} <= {last}");
        last = fence;
    }
    server.handle.stop(false).await;
}

#[actix_web::test]
async fn a_handler_without_a_registered_locker_explains_itself() {
    let server = HttpServer::new(|| App::new().service(try_once))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_post(&mut stream, "/try/x").await;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(response.contains("lock_not_configured"), "{response}");
    handle.stop(false).await;
}
