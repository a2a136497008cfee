//! `POST /balance/transfer`: both users' locks, both rows fenced, both ledger rows, and no
//! deadlock between transfers in opposite directions.

use crate::helpers::{spawn_cluster, Cluster, Reply};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;

async fn charge(cluster: &Cluster, user: i64, amount: i64) {
    let reply = cluster
        .post(
            &format!("/balance/{user}/charge"),
            Some(json!({"amount": amount})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

async fn transfer(cluster: &Cluster, body: Value) -> Reply {
    cluster.post("/balance/transfer", Some(body)).await
}

fn balance(cluster: &Cluster, user: i64) -> i64 {
    cluster.sql_i64(&format!(
        "SELECT balance FROM balances WHERE user_id = {user}"
    ))
}

/// Everything a refused transfer must leave alone, in one snapshot.
fn written(cluster: &Cluster) -> String {
    cluster.sql(
        "SELECT (SELECT count(*) FROM balance_ledger) || '/' || \
                (SELECT string_agg(user_id || ':' || balance || ':' || fence, ',' ORDER BY user_id) FROM balances) || '/' || \
                (SELECT count(*) FROM idempotency_keys)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_moves_the_amount_under_each_users_own_fence() {
    let cluster = spawn_cluster().await;
    charge(&cluster, 1, 100).await;
    charge(&cluster, 2, 10).await;

    let reply = transfer(&cluster, json!({"from": 1, "to": 2, "amount": 30})).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({"from": {"user_id": 1, "balance": 70}, "to": {"user_id": 2, "balance": 40}, "amount": 30})
    );
    assert_eq!((balance(&cluster, 1), balance(&cluster, 2)), (70, 40));
    assert_eq!(
        (cluster.ledger_balance(1), cluster.ledger_balance(2)),
        (70, 40)
    );
    // One row per side, each carrying the fence its own row was written with.
    for (user, kind) in [(1, "transfer_out"), (2, "transfer_in")] {
        assert_eq!(
            cluster.sql(&format!(
                "SELECT l.amount = 30 AND l.fence = b.fence FROM balance_ledger l \
                 JOIN balances b USING (user_id) WHERE l.user_id = {user} AND l.kind = '{kind}'"
            )),
            "t",
            "{kind} row of user {user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_transfers_write_nothing() {
    let cluster = spawn_cluster().await;
    charge(&cluster, 1, 20).await;
    charge(&cluster, 2, 5).await;
    let before = written(&cluster);

    let cases = [
        (json!({"from": 1, "to": 1, "amount": 5}), 422, "same_user"),
        (
            json!({"from": 1, "to": 99, "amount": 5}),
            404,
            "user_not_found",
        ),
        (
            json!({"from": 99, "to": 1, "amount": 5}),
            404,
            "user_not_found",
        ),
        (
            json!({"from": 2, "to": 1, "amount": 6}),
            409,
            "insufficient_balance",
        ),
        (
            json!({"from": 1, "to": 2, "amount": 0}),
            400,
            "invalid_json",
        ),
        (
            json!({"from": 0, "to": 2, "amount": 1}),
            400,
            "invalid_json",
        ),
        (json!({"from": 1, "to": 2}), 400, "invalid_json"),
        (
            json!({"from": 1, "to": 2, "amount": 1, "note": "x"}),
            400,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let reply = transfer(&cluster, body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{body}: {}",
            reply.text
        );
    }
    // With an Idempotency-Key too: the same refusals, and a 400 is not stored for the key.
    let reply = cluster
        .post_raw(
            "/balance/transfer",
            json!({"from": 2, "to": 2, "amount": 1}).to_string(),
            &[
                ("content-type", "application/json"),
                ("idempotency-key", "same-user"),
            ],
        )
        .await;
    assert_eq!((reply.status, reply.code()), (422, "same_user"));

    assert_eq!(written(&cluster), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_transfer_is_applied_once() {
    let cluster = spawn_cluster().await;
    charge(&cluster, 1, 50).await;
    charge(&cluster, 2, 1).await;
    let send = |key: &'static str, amount: i64| {
        let cluster = &cluster;
        async move {
            cluster
                .post_raw(
                    "/balance/transfer",
                    json!({"from": 1, "to": 2, "amount": amount}).to_string(),
                    &[
                        ("content-type", "application/json"),
                        ("idempotency-key", key),
                    ],
                )
                .await
        }
    };

    let first = send("transfer-1", 20).await;
    let repeat = send("transfer-1", 20).await;
    let reused = send("transfer-1", 21).await;

    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!((repeat.status, &repeat.text), (200, &first.text));
    assert_eq!(
        repeat
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(first.headers.get("idempotent-replayed"), None);
    assert_eq!(
        (reused.status, reused.code()),
        (422, "idempotency_key_reused")
    );
    assert_eq!((balance(&cluster, 1), balance(&cluster, 2)), (30, 21));
    assert_eq!(
        cluster.sql_i64("SELECT count(*) FROM balance_ledger WHERE kind LIKE 'transfer_%'"),
        2
    );

    // A final refusal is stored for its key as well: the repeat gets the same 409, even after
    // the balance would allow it.
    let short = send("transfer-2", 31).await;
    assert_eq!((short.status, short.code()), (409, "insufficient_balance"));
    charge(&cluster, 1, 10).await;
    let again = send("transfer-2", 31).await;
    assert_eq!((again.status, &again.text), (409, &short.text));
    assert_eq!(balance(&cluster, 1), 40);
}

/// The adversarial case: 60 transfers at once among three users, in all six directions, with
/// balances small enough that some are refused. Taking the two locks in the order of each
/// request (from, then to) would deadlock A→B against B→A until both waits ran out; the
/// runtime's one global order must make every request finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_in_both_directions_neither_deadlock_nor_lose_money() {
    let cluster = spawn_cluster().await;
    let users = [11_i64, 12, 13];
    for user in users {
        charge(&cluster, user, 100).await;
    }
    let pairs: Vec<(i64, i64)> = users
        .iter()
        .flat_map(|&from| users.iter().map(move |&to| (from, to)))
        .filter(|(from, to)| from != to)
        .collect();
    let requests = (0..60).map(|i| {
        let (from, to) = pairs[i % pairs.len()];
        // 1 to 60: large enough that some transfers find their sender short.
        let amount = 1 + (i as i64 * 37) % 60;
        transfer(&cluster, json!({"from": from, "to": to, "amount": amount}))
    });

    let replies = tokio::time::timeout(Duration::from_secs(40), join_all(requests))
        .await
        .expect("every transfer is answered: no deadlock");

    let unexpected: Vec<String> = replies
        .iter()
        .filter(|r| !(r.status == 200 || (r.status == 409 && r.code() == "insufficient_balance")))
        .map(|r| format!("{} {}", r.status, r.text))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    let succeeded = replies.iter().filter(|r| r.status == 200).count() as i64;
    assert!(succeeded > 0, "no transfer succeeded");
    let list = "11, 12, 13";
    assert_eq!(
        cluster.sql_i64(&format!(
            "SELECT sum(balance) FROM balances WHERE user_id IN ({list})"
        )),
        300,
        "Σ balances unchanged"
    );
    for user in users {
        let balance = balance(&cluster, user);
        assert!(balance >= 0, "user {user} went below zero: {balance}");
        assert_eq!(cluster.ledger_balance(user), balance, "user {user}");
    }
    for kind in ["transfer_out", "transfer_in"] {
        assert_eq!(
            cluster.sql_i64(&format!(
                "SELECT count(*) FROM balance_ledger WHERE kind = '{kind}'"
            )),
            succeeded,
            "one {kind} row per 200"
        );
    }
    // Per user, fences strictly increase in write order: every hold wrote once.
    assert_eq!(
        cluster.sql(
            "SELECT bool_and(fence > prev) FROM (SELECT fence, lag(fence) OVER \
             (PARTITION BY user_id ORDER BY id) AS prev FROM balance_ledger) t \
             WHERE prev IS NOT NULL"
        ),
        "t"
    );
}
