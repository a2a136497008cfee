//! Strict HTTP (issue 19, findings 10, 12, 13): one spelling per id, 405 with `Allow` for a
//! wrong method, `HEAD` wherever `GET` is, and every answer — refusals from the middleware
//! included — JSON with `X-Instance` and `X-Request-Id`. Each test failed before its fix.

use crate::helpers::{spawn_cluster, spawn_cluster_with, Options};
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
/// method_not_allowed` with `Allow`, built from the OpenAPI document; and each operation of the
/// document is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_method_is_405_with_allow() {
    let cluster = spawn_cluster().await;
    let document = fencelock_app::api::document();
    let routes: Vec<(&str, &String)> = document
        .paths
        .paths
        .iter()
        .flat_map(|(pattern, item)| {
            [("GET", item.get.is_some()), ("POST", item.post.is_some())]
                .into_iter()
                .filter(|(_, served)| *served)
                .map(move |(method, _)| (method, pattern))
        })
        .collect();
    assert_eq!(routes.len(), 14, "{routes:?}");
    for (method, pattern) in routes {
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

/// The published contract: `GET /openapi.json` is the document built from the registered
/// handlers, it names every error code the service sends, and the docs page and everything it
/// loads come from the service itself (nothing from a CDN).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contract_and_its_docs_page_are_served_offline() {
    let cluster = spawn_cluster_with(Options {
        instances: 1,
        ..Options::default()
    })
    .await;
    let served: serde_json::Value = cluster
        .client
        .get(cluster.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served,
        serde_json::to_value(fencelock_app::api::document()).unwrap()
    );
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    let codes = &served["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "overloaded",
        "outcome_unknown",
        "method_not_allowed",
        "lock_busy",
        "idempotency_key_reused",
    ] {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code),
            "{code} not in {codes}"
        );
    }

    let page = cluster
        .client
        .get(cluster.url("/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for part in html.split(attribute).skip(1) {
            let target = part.split('"').next().unwrap();
            assert!(
                !target.contains("//"),
                "the docs page loads {target} from elsewhere"
            );
            assets.push(target.trim_start_matches("./").to_string());
        }
    }
    assert!(!assets.is_empty(), "{html}");
    for asset in assets {
        let url = cluster.url(&format!("/docs/{asset}"));
        let reply = cluster.client.get(&url).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{url}");
        let text = reply.text().await.unwrap_or_default();
        assert!(
            !text.contains("validator.swagger.io")
                || asset.ends_with(".js") && !asset.contains("initializer"),
            "{asset} asks the public validator"
        );
    }
}
