//! Every bad input gets its documented 4xx with a JSON `error` code, and nothing is written.

use crate::helpers::{spawn_cluster, spawn_cluster_with, Options};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_4xx_with_a_code_and_writes_nothing() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    cluster
        .post("/balance/1/charge", Some(json!({"amount": 5})))
        .await;
    let deduct = format!("/product/{product}/deduct");
    let huge = format!(r#"{{"quantity": 1, "pad": "{}"}}"#, "x".repeat(17 * 1024));
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "non-numeric id",
            "/product/abc/deduct".into(),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "zero id",
            "/product/0/deduct".into(),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "negative id",
            "/product/-4/deduct".into(),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "id beyond i64",
            "/product/99999999999999999999/deduct".into(),
            String::new(),
            400,
            "invalid_path",
        ),
        (
            "zero quantity",
            deduct.clone(),
            r#"{"quantity": 0}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "negative quantity",
            deduct.clone(),
            r#"{"quantity": -5}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "absurd quantity",
            deduct.clone(),
            r#"{"quantity": 10000000000}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "quantity as string",
            deduct.clone(),
            r#"{"quantity": "5"}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "malformed JSON",
            deduct.clone(),
            r#"{"quantity": "#.into(),
            400,
            "invalid_json",
        ),
        (
            "unknown field",
            deduct.clone(),
            r#"{"qty": 1}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "unknown strategy",
            format!("{deduct}?strategy=bogus"),
            String::new(),
            400,
            "invalid_query",
        ),
        (
            "body over 16 KiB",
            deduct.clone(),
            huge,
            413,
            "body_too_large",
        ),
        (
            "zero amount",
            "/balance/1/charge".into(),
            r#"{"amount": 0}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "missing amount",
            "/balance/1/use".into(),
            "{}".into(),
            400,
            "invalid_json",
        ),
        (
            "array body",
            "/balance/1/use".into(),
            "[1]".into(),
            400,
            "invalid_json",
        ),
        (
            "seat zero",
            "/concerts/1/seats/0/reserve".into(),
            r#"{"user_id": 1}"#.into(),
            400,
            "invalid_path",
        ),
        (
            "seat without user",
            "/concerts/1/seats/1/reserve".into(),
            "{}".into(),
            400,
            "invalid_json",
        ),
        (
            "queue id not a number",
            "/queue/x/tokens".into(),
            r#"{"user_id": 1}"#.into(),
            400,
            "invalid_path",
        ),
        (
            "queue user zero",
            "/queue/1/tokens".into(),
            r#"{"user_id": 0}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "bad reset stock",
            "/product/reset".into(),
            r#"{"stock": -1}"#.into(),
            400,
            "invalid_stock",
        ),
        (
            "bad product name",
            "/product".into(),
            r#"{"name": "", "stock": 1}"#.into(),
            400,
            "invalid_name",
        ),
        (
            "unknown route",
            "/nowhere".into(),
            String::new(),
            404,
            "not_found",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let reply = cluster
            .post_raw(&path, body, &[("content-type", "application/json")])
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{what}: {}",
            reply.text
        );
        assert!(!reply.instance.is_empty(), "{what}: no X-Instance");
        assert!(reply.body["message"].is_string(), "{what}: no message");
    }
    let bad_key = cluster
        .post_raw(&deduct, "", &[("idempotency-key", "")])
        .await;
    assert_eq!(
        (bad_key.status, bad_key.code()),
        (400, "invalid_idempotency_key")
    );
    let missing = cluster.get("/product/424242").await;
    assert_eq!((missing.status, missing.code()), (404, "product_not_found"));
    let unknown_user = cluster
        .post("/balance/999/use", Some(json!({"amount": 1})))
        .await;
    assert_eq!(
        (unknown_user.status, unknown_user.code()),
        (404, "user_not_found")
    );

    // Nothing was written by any of it.
    assert_eq!(
        cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}")),
        10
    );
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM products"), 1);
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 0);
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM balance_ledger"), 1);
    assert_eq!(
        cluster.sql_i64("SELECT count(*) FROM seat_reservations")
            + cluster.sql_i64("SELECT count(*) FROM queue_tokens"),
        0
    );
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM idempotency_keys"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_is_forbidden_unless_allowed() {
    let cluster = spawn_cluster_with(Options {
        instances: 1,
        allow_reset: false,
        ..Options::default()
    })
    .await;
    let reply = cluster.post("/product/reset", None).await;
    assert_eq!((reply.status, reply.code()), (403, "reset_disabled"));
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM products"), 0);
}
