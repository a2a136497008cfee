//! `#[distributed_lock]` on real axum handlers, served over real TCP, locking in a real Redis:
//! the Locker from a request extension or from `State`, one resource or several, and lock
//! failures answered with the same status codes and JSON as with actix-web.

mod common;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Router};
use common::unique;
use fencelock::{distributed_lock, LockError, LockOptions, Locker, LockerConfig};
use fencelock_testkit::{free_port, shared_redis};
use std::time::Duration;

#[derive(Clone)]
struct AppState {
    locker: Locker,
}

/// The Locker from the request extensions (the `axum` flag adds the extractor).
#[distributed_lock(axum, resource = "work:{id}", wait_ms = 0, guard = lock)]
async fn work(Path(id): Path<String>) -> Result<String, LockError> {
    Ok(format!("{id} {}", lock.fence()))
}

/// The Locker from `State`, an opaque `impl IntoResponse`.
#[distributed_lock(axum, resource = "work:{id}", locker = state.locker, wait_ms = 0)]
async fn from_state(State(state): State<AppState>, Path(id): Path<String>) -> impl IntoResponse {
    let _ = &state;
    format!("state {id}")
}

/// Two resources at once, each with its own fence.
#[distributed_lock(axum, resource = ["work:{from}", "work:{to}"], wait_ms = 0, guard = both)]
async fn transfer(Path((from, to)): Path<(String, String)>) -> Result<String, LockError> {
    let from_fence = both.fence(&format!("work:{from}")).unwrap();
    let to_fence = both.fence(&format!("work:{to}")).unwrap();
    Ok(format!("{from_fence} {to_fence}"))
}

fn router(locker: Option<Locker>) -> Router {
    let state = AppState {
        locker: locker.clone().unwrap_or_else(unreachable_locker),
    };
    let router = Router::new()
        .route("/work/{id}", post(work))
        .route("/state/{id}", post(from_state))
        .route("/transfer/{from}/{to}", post(transfer))
        .with_state(state);
    match locker {
        Some(locker) => router.layer(Extension(locker)),
        None => router,
    }
}

/// A Locker whose Redis is a closed port.
fn unreachable_locker() -> Locker {
    let url = format!("redis://127.0.0.1:{}/", free_port());
    Locker::new(LockerConfig::new([url]).node_timeout(Duration::from_millis(200))).unwrap()
}

/// Serves `router` on a free loopback port; its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn post_to(url: &str) -> Answer {
    let response = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the server answers");
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_string());
    Answer {
        status: response.status().as_u16(),
        retry_after,
        body: response.text().await.unwrap(),
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_lock_and_busy_locks_answer_423_json() {
    let locker = Locker::new(LockerConfig::new([shared_redis().url()])).unwrap();
    let base = serve(router(Some(locker.clone()))).await;
    let id = unique("axum");

    let free = post_to(&format!("{base}/work/{id}")).await;
    assert_eq!(free.status, 200, "{}", free.body);
    assert!(free.body.starts_with(&format!("{id} ")), "{}", free.body);

    // Someone else holds it: both handler kinds answer 423 with Retry-After and the JSON code.
    let held = locker
        .acquire(&format!("work:{id}"), &LockOptions::new())
        .await
        .unwrap();
    for path in [format!("/work/{id}"), format!("/state/{id}")] {
        let busy = post_to(&format!("{base}{path}")).await;
        assert_eq!(busy.status, 423, "{path}: {}", busy.body);
        assert!(busy.retry_after.is_some(), "{path}: Retry-After");
        let body = json(&busy.body);
        assert_eq!(body["error"], "lock_busy", "{path}");
        assert_eq!(body["resource"], format!("work:{id}"), "{path}");
    }
    held.release().await.unwrap();
    let again = post_to(&format!("{base}/state/{id}")).await;
    assert_eq!((again.status, again.body), (200, format!("state {id}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_of_resources_is_held_together_with_a_fence_each() {
    let locker = Locker::new(LockerConfig::new([shared_redis().url()])).unwrap();
    let base = serve(router(Some(locker.clone()))).await;
    let (a, b) = (unique("axum-a"), unique("axum-b"));

    let both = post_to(&format!("{base}/transfer/{a}/{b}")).await;
    assert_eq!(both.status, 200, "{}", both.body);
    let fences: Vec<u64> = both.body.split(' ').map(|f| f.parse().unwrap()).collect();
    assert_eq!(fences.len(), 2);

    // One of the two is held elsewhere: the pair is busy, and nothing stays locked after.
    let held = locker
        .acquire(&format!("work:{b}"), &LockOptions::new())
        .await
        .unwrap();
    let busy = post_to(&format!("{base}/transfer/{b}/{a}")).await;
    assert_eq!(busy.status, 423, "{}", busy.body);
    assert_eq!(json(&busy.body)["resource"], format!("work:{b}"));
    let a_state = locker.inspect(&format!("work:{a}")).await.unwrap();
    assert!(!a_state.locked, "the first lock went back: {a_state:?}");
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_503_with_retry_after_and_no_locker_is_500() {
    // The State's Locker points at a closed port; no Extension at all.
    let base = serve(router(None)).await;
    let down = post_to(&format!("{base}/state/x")).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.retry_after.as_deref(), Some("1"));
    assert_eq!(json(&down.body)["error"], "lock_unavailable");

    let missing = post_to(&format!("{base}/work/x")).await;
    assert_eq!(missing.status, 500, "{}", missing.body);
    assert_eq!(json(&missing.body)["error"], "lock_not_configured");
}
