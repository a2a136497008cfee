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

/// Defects of the fault drills: duplicate keys (last one won), a text/plain body (accepted and
/// written), a NUL in a name (503 logged at ERROR), a 64 KB header (accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_input_refuses_duplicate_keys_wrong_media_types_control_characters_and_huge_heads() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    cluster
        .post("/balance/1/charge", Some(json!({"amount": 5})))
        .await;
    let deduct = format!("/product/{product}/deduct");
    let json_type = [("content-type", "application/json")];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: Vec<(&str, String, &str, Headers, u16, &str)> = vec![
        (
            "duplicate quantity",
            deduct.clone(),
            r#"{"quantity":1,"quantity":2}"#,
            &json_type,
            400,
            "invalid_json",
        ),
        (
            "duplicate amount",
            "/balance/1/use".into(),
            r#"{"amount":1,"amount":1000}"#,
            &json_type,
            400,
            "invalid_json",
        ),
        (
            "text/plain body",
            deduct.clone(),
            r#"{"quantity":1}"#,
            &[("content-type", "text/plain")],
            415,
            "unsupported_media_type",
        ),
        (
            "body without a content type",
            deduct.clone(),
            r#"{"quantity":1}"#,
            &[],
            415,
            "unsupported_media_type",
        ),
        (
            "NUL in a product name",
            "/product".into(),
            r#"{"name":"a\u0000b","stock":5}"#,
            &json_type,
            400,
            "invalid_name",
        ),
        (
            "escape sequence in a product name",
            "/product".into(),
            r#"{"name":"\u001b[31mred","stock":5}"#,
            &json_type,
            400,
            "invalid_name",
        ),
    ];
    for (what, path, body, headers, status, code) in cases {
        let reply = cluster.post_raw(&path, body, headers).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{what}: {}",
            reply.text
        );
    }
    // A JSON type with parameters is still JSON; an empty body needs no type.
    let with_charset = cluster
        .post_raw(
            &deduct,
            r#"{"quantity":1}"#,
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
    assert_eq!(with_charset.status, 200, "{}", with_charset.text);
    let empty = cluster.post_raw(&deduct, "", &[]).await;
    assert_eq!(empty.status, 200, "{}", empty.text);

    let huge = "x".repeat(64 * 1024);
    let reply = cluster
        .post_raw(&deduct, "", &[("x-padding", huge.as_str())])
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (431, "headers_too_large"),
        "{}",
        reply.text
    );

    assert_eq!(
        cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}")),
        8,
        "only the two good deductions were written"
    );
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM products"), 1);
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM balance_ledger"), 1);
}
