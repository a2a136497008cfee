//! `rediss://` in the service: a real redis-server speaking TLS with a CA made by the test,
//! trusted through `REDIS_TLS_CA`.

use crate::helpers::{spawn_cluster_with, Options};
use fencelock_testkit::{RedisServer, TestCertificates};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_service_locks_over_tls_with_a_private_ca() {
    let certificates = TestCertificates::generate();
    let redis = RedisServer::start_tls(&certificates);
    let cluster = spawn_cluster_with(Options {
        instances: 2,
        redis_url: Some(redis.tls_url()),
        redis_tls_ca: Some(certificates.ca_file()),
        ..Options::default()
    })
    .await;
    assert_eq!(cluster.get("/health/ready").await.status, 200);
    for _ in 0..4 {
        let reply = cluster
            .post("/balance/7/charge", Some(json!({"amount": 5})))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(cluster.get("/balance/7").await.body["balance"], 20);
    // The locks were taken in that Redis (seen on its plain port): fences were issued.
    let fence_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*fence", cluster.lock_prefix))
        .query(
            &mut redis::Client::open(redis.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    assert!(!fence_keys.is_empty(), "no lock went through the TLS Redis");
}

/// Without the CA the same URL is refused by certificate verification: the instance says it is
/// not ready, rather than talking to a server it cannot authenticate.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_leaves_the_service_not_ready() {
    let certificates = TestCertificates::generate();
    let redis = RedisServer::start_tls(&certificates);
    let cluster = spawn_cluster_with(Options {
        instances: 1,
        redis_url: Some(redis.tls_url()),
        ..Options::default()
    })
    .await;
    assert_eq!(cluster.get("/health/ready").await.status, 503);
    let reply = cluster
        .post("/balance/8/charge", Some(json!({"amount": 5})))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (503, "lock_unavailable"),
        "{}",
        reply.text
    );
}
