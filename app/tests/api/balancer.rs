//! The instances behind a real HAProxy with the load balancer's configuration (the one
//! `cargo xtask up` and docker/haproxy.cfg use): hang-ups, dead instances, its own errors.

use crate::helpers::{spawn_cluster, Cluster};
use fencelock_testkit::{free_port, HaProxy};
use std::time::Duration;

fn balancer(cluster: &Cluster, extra: &[(String, String)]) -> HaProxy {
    let mut servers: Vec<(String, String)> = cluster
        .ports
        .iter()
        .enumerate()
        .map(|(index, port)| (format!("app{}", index + 1), format!("127.0.0.1:{port}")))
        .collect();
    servers.extend_from_slice(extra);
    HaProxy::start(&servers)
}

/// Defect: without `option abortonclose` a client's hang-up never reached the instance: 3,000
/// abandoned requests were all executed. Here a request waits for a lock held elsewhere, its
/// client gives up; once the lock is free the abandoned request must not have run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_hangs_up_behind_the_balancer_cancels_its_request() {
    let cluster = spawn_cluster().await;
    let lb = balancer(&cluster, &[]);
    let product = cluster.reset(10).await;
    let held = cluster
        .hold_lock(&format!("product:{product}"), Duration::from_secs(30))
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let deduct = format!("{}/product/{product}/deduct", lb.url());
    for _ in 0..3 {
        let gave_up = impatient.post(&deduct).send().await;
        assert!(gave_up.is_err(), "the lock is held: {gave_up:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.release().await.unwrap();
    // The lock is free at once for the next client.
    let next = cluster
        .client
        .post(&deduct)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.sql_i64("SELECT count(*) FROM stock_ledger"),
        1,
        "an abandoned request was executed"
    );
}

/// Defect: a killed instance got requests for 3 s and clients got HAProxy's HTML 503 (retries
/// went to the same dead server). Now a request that could not connect is sent to another
/// instance, and every answer is the service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_cannot_reach_a_dead_instance_go_to_another() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(1000).await;
    let dead = ("app4".to_string(), format!("127.0.0.1:{}", free_port()));
    let lb = balancer(&cluster, &[dead]);
    let deduct = format!("{}/product/{product}/deduct", lb.url());
    for _ in 0..40 {
        let reply = cluster.client.post(&deduct).send().await.unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 40);
}

/// The load balancer's own errors are JSON with a stable code (and Retry-After), not HTML.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_instance_left_the_balancer_answers_json() {
    let dead = ("app1".to_string(), format!("127.0.0.1:{}", free_port()));
    let lb = HaProxy::start(&[dead]);
    let reply = reqwest::Client::new()
        .post(format!("{}/product/1/deduct", lb.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);
    assert!(reply.headers().contains_key("retry-after"));
    let body: serde_json::Value = reply.json().await.expect("a JSON body");
    assert_eq!(body["error"], "lb_no_server", "{body}");
}

/// Issue 19, finding 10: every answer names who answered and the request, the load balancer's
/// own errors too: a request through the balancer carries one id from the balancer to the
/// instance and back, and the balancer's JSON errors carry `X-Instance: lb` and an id.
/// (HAProxy 2.6's 408 for a request head not received in time is the exception: see
/// `testkit::haproxy::config`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_balancers_own_answers_are_identified() {
    let cluster = spawn_cluster().await;
    let lb = balancer(&cluster, &[]);
    let through = cluster
        .client
        .get(format!("{}/health/live", lb.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 200);
    assert!(through.headers()["x-instance"]
        .to_str()
        .unwrap()
        .starts_with("app"));
    assert!(!through.headers()["x-request-id"].is_empty());
    let chosen = cluster
        .client
        .get(format!("{}/health/live", lb.url()))
        .header("x-request-id", "chosen-by-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(chosen.headers()["x-request-id"], "chosen-by-the-client");

    let dead = ("app1".to_string(), format!("127.0.0.1:{}", free_port()));
    let nobody = HaProxy::start(&[dead]);
    let refused = reqwest::Client::new()
        .get(format!("{}/health/live", nobody.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-instance"], "lb");
    assert!(!refused.headers()["x-request-id"].is_empty());
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "lb_no_server");
}
