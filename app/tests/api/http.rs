//! Strict HTTP (issue 19, findings 10, 12, 13): one spelling per id, 405 with `Allow` for a
//! wrong method, `HEAD` wherever `GET` is, and every answer — refusals from the middleware
//! included — JSON with `X-Instance` and `X-Request-Id`. Each test failed before its fix.

use crate::helpers::{spawn_cluster, spawn_cluster_with, Options};
use fencelock_app::startup::ROUTES;
use reqwest::Method;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A route pattern with every `{param}` replaced by `1`.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn assert_identified(reply: &reqwest::Response, what: &str) {
    for header in ["x-instance", "x-request-id"] {
        assert!(
            reply.headers().contains_key(header),
            "{what}: no {header}: {:?}",
            reply.headers()
        );
    }
}

/// Finding 13: a wrong method on a known path was `404 not_found`. Now it is `405
/// method_not_allowed` with `Allow`; and each entry of the table the 405 is built from is a
/// route the service serves (so the table cannot drift from the router unnoticed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_method_is_405_with_allow() {
    let cluster = spawn_cluster().await;
    for (method, pattern) in ROUTES {
        let path = concrete(pattern);
        let served = cluster
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                cluster.url(&path),
            )
            .send()
            .await
            .unwrap();
        let status = served.status().as_u16();
        let body: serde_json::Value = served.json().await.unwrap_or_default();
        assert!(
            status != 405 && !(status == 404 && body["error"] == "not_found"),
            "{method} {path} is not routed: {status} {body}"
        );
        let wrong = if method == "GET" {
            Method::POST
        } else {
            Method::DELETE
        };
        let reply = cluster
            .client
            .request(wrong.clone(), cluster.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 405, "{wrong} {path}");
        assert_identified(&reply, &path);
        let allow = reply.headers()["allow"].to_str().unwrap().to_string();
        assert!(allow.contains(method), "{path}: Allow: {allow}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
    let unknown = cluster
        .client
        .get(cluster.url("/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_identified(&unknown, "/nothing/here");
}

/// Finding 13: `HEAD` on a `GET` route was 404. Now it is the GET's status and headers without
/// a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_is_served_wherever_get_is() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    for path in [
        format!("/product/{product}"),
        "/health/live".to_string(),
        "/product/999999".into(),
    ] {
        let get = cluster.client.get(cluster.url(&path)).send().await.unwrap();
        let head = cluster
            .client
            .head(cluster.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get.status(), "{path}");
        assert_identified(&head, &path);
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "{path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "{path}: HEAD has no body"
        );
    }
}

/// Finding 12: path ids accepted `+2` and `02` (and `%32`), so one product had many names.
/// Now only the plain decimal is an id; the others are `400 invalid_path` and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_id_has_one_spelling() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    for spelling in [
        format!("0{product}"),
        format!("+{product}"),
        format!("00{product}"),
        product
            .to_string()
            .bytes()
            .map(|digit| format!("%{digit:02X}"))
            .collect(),
    ] {
        let read = cluster.get(&format!("/product/{spelling}")).await;
        assert_eq!(
            (read.status, read.code()),
            (400, "invalid_path"),
            "{spelling}"
        );
        let write = cluster
            .post(&format!("/product/{spelling}/deduct"), None)
            .await;
        assert_eq!(
            (write.status, write.code()),
            (400, "invalid_path"),
            "{spelling}"
        );
        assert!(!write.instance.is_empty());
    }
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 0);
    let read = cluster.get(&format!("/product/{product}")).await;
    assert_eq!(read.status, 200, "{}", read.text);
}

/// Finding 10: the 431 answer carried neither `X-Instance` nor `X-Request-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_in_the_middleware_is_identified_like_any_answer() {
    let cluster = spawn_cluster().await;
    let huge = "x".repeat(20 * 1024);
    let reply = cluster
        .client
        .get(cluster.url("/health/live"))
        .header("x-padding", huge)
        .header("x-request-id", "chosen-by-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 431);
    assert_identified(&reply, "431");
    assert_eq!(reply.headers()["x-request-id"], "chosen-by-the-client");
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large");
}

/// Finding 10: an instance resumed after a pause answered the request the load balancer had
/// sent meanwhile with actix-web's bare, non-JSON 408 (its 5 s deadline for a request head
/// had passed). A head that arrives in two parts 6 s apart plays that here: it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_head_that_arrives_late_is_answered_not_timed_out() {
    let cluster = spawn_cluster_with(Options {
        instances: 1,
        ..Options::default()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", cluster.ports[0]))
        .await
        .unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stream
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
