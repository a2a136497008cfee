//! Every bad input gets its documented 4xx with a JSON `error` code, and nothing is written.

use crate::helpers::{spawn_cluster, spawn_cluster_with, Options};
use serde_json::json;

/// One bad request and the refusal it must get; `name` is what a failure reports.
struct BadInput<'a> {
    name: &'a str,
    path: String,
    body: String,
    headers: &'a [(&'a str, &'a str)],
    expect_status: u16,
    expect_code: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_4xx_with_a_code_and_writes_nothing() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    cluster
        .post("/balance/1/charge", Some(json!({"amount": 5})))
        .await;
    let deduct = format!("/product/{product}/deduct");
    let huge = format!(r#"{{"quantity": 1, "pad": "{}"}}"#, "x".repeat(17 * 1024));
    let json_type = [("content-type", "application/json")];
    let cases = vec![
        BadInput {
            name: "non-numeric id",
            path: "/product/abc/deduct".into(),
            body: String::new(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_path",
        },
        BadInput {
            name: "zero id",
            path: "/product/0/deduct".into(),
            body: String::new(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_path",
        },
        BadInput {
            name: "negative id",
            path: "/product/-4/deduct".into(),
            body: String::new(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_path",
        },
        BadInput {
            name: "id beyond i64",
            path: "/product/99999999999999999999/deduct".into(),
            body: String::new(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_path",
        },
        BadInput {
            name: "zero quantity",
            path: deduct.clone(),
            body: r#"{"quantity": 0}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "negative quantity",
            path: deduct.clone(),
            body: r#"{"quantity": -5}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "absurd quantity",
            path: deduct.clone(),
            body: r#"{"quantity": 10000000000}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "quantity as string",
            path: deduct.clone(),
            body: r#"{"quantity": "5"}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "malformed JSON",
            path: deduct.clone(),
            body: r#"{"quantity": "#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "unknown field",
            path: deduct.clone(),
            body: r#"{"qty": 1}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "unknown strategy",
            path: format!("{deduct}?strategy=bogus"),
            body: String::new(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_query",
        },
        BadInput {
            name: "body over 16 KiB",
            path: deduct.clone(),
            body: huge,
            headers: &json_type,
            expect_status: 413,
            expect_code: "body_too_large",
        },
        BadInput {
            name: "zero amount",
            path: "/balance/1/charge".into(),
            body: r#"{"amount": 0}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "missing amount",
            path: "/balance/1/use".into(),
            body: "{}".into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "array body",
            path: "/balance/1/use".into(),
            body: "[1]".into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "seat zero",
            path: "/concerts/1/seats/0/reserve".into(),
            body: r#"{"user_id": 1}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_path",
        },
        BadInput {
            name: "seat without user",
            path: "/concerts/1/seats/1/reserve".into(),
            body: "{}".into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "queue id not a number",
            path: "/queue/x/tokens".into(),
            body: r#"{"user_id": 1}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_path",
        },
        BadInput {
            name: "queue user zero",
            path: "/queue/1/tokens".into(),
            body: r#"{"user_id": 0}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "bad reset stock",
            path: "/product/reset".into(),
            body: r#"{"stock": -1}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_stock",
        },
        BadInput {
            name: "bad product name",
            path: "/product".into(),
            body: r#"{"name": "", "stock": 1}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_name",
        },
        BadInput {
            name: "unknown route",
            path: "/nowhere".into(),
            body: String::new(),
            headers: &json_type,
            expect_status: 404,
            expect_code: "not_found",
        },
    ];
    for case in cases {
        let reply = cluster.post_raw(&case.path, case.body, case.headers).await;
        assert_eq!(
            (reply.status, reply.code()),
            (case.expect_status, case.expect_code),
            "{}: {}",
            case.name,
            reply.text
        );
        assert!(!reply.instance.is_empty(), "{}: no X-Instance", case.name);
        assert!(
            reply.body["message"].is_string(),
            "{}: no message",
            case.name
        );
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
    let cases = vec![
        BadInput {
            name: "duplicate quantity",
            path: deduct.clone(),
            body: r#"{"quantity":1,"quantity":2}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "duplicate amount",
            path: "/balance/1/use".into(),
            body: r#"{"amount":1,"amount":1000}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_json",
        },
        BadInput {
            name: "text/plain body",
            path: deduct.clone(),
            body: r#"{"quantity":1}"#.into(),
            headers: &[("content-type", "text/plain")],
            expect_status: 415,
            expect_code: "unsupported_media_type",
        },
        BadInput {
            name: "body without a content type",
            path: deduct.clone(),
            body: r#"{"quantity":1}"#.into(),
            headers: &[],
            expect_status: 415,
            expect_code: "unsupported_media_type",
        },
        BadInput {
            name: "NUL in a product name",
            path: "/product".into(),
            body: r#"{"name":"a\u0000b","stock":5}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_name",
        },
        BadInput {
            name: "escape sequence in a product name",
            path: "/product".into(),
            body: r#"{"name":"\u001b[31mred","stock":5}"#.into(),
            headers: &json_type,
            expect_status: 400,
            expect_code: "invalid_name",
        },
    ];
    for case in cases {
        let reply = cluster.post_raw(&case.path, case.body, case.headers).await;
        assert_eq!(
            (reply.status, reply.code()),
            (case.expect_status, case.expect_code),
            "{}: {}",
            case.name,
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
