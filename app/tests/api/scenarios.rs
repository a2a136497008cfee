//! The original demos' scenarios over three instances, plus fencing, idempotency and the job.

use crate::helpers::deduct_one;
use crate::helpers::{by_status, spawn_cluster, spawn_cluster_with, Options};
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_app::error::AppError;
use fencelock_testkit::shared_redis;
use futures_util::future::join_all;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_1050_deducts_sell_exactly_1000() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(1000).await;
    let path = format!("/product/{product}/deduct");
    let replies = join_all((0..1050).map(|_| cluster.post(&path, None))).await;
    let counts = by_status(&replies);
    let unexpected: Vec<&str> = replies
        .iter()
        .filter(|r| r.status != 200 && r.status != 409)
        .take(3)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(counts.get(&200), Some(&1000), "{counts:?} {unexpected:?}");
    assert_eq!(counts.get(&409), Some(&50), "{counts:?}");
    assert!(replies
        .iter()
        .filter(|r| r.status == 409)
        .all(|r| r.code() == "out_of_stock"));
    assert_eq!(
        cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}")),
        0
    );
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 1000);
    // Requests were spread: every instance served some, and every response says which.
    let served: HashSet<&str> = replies.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(served.len(), 3, "{served:?}");
    // Fences never go back in the order the writes committed; a fence's rows (one hold, which
    // served a batch of queued requests) are written together, and fences differ between holds.
    let fences_in_order = cluster.sql("SELECT bool_and(fence >= prev) FROM (SELECT fence, lag(fence) OVER (ORDER BY id) AS prev FROM stock_ledger) t WHERE prev IS NOT NULL");
    assert_eq!(fences_in_order, "t");
    let holds = cluster.sql_i64("SELECT count(DISTINCT fence) FROM stock_ledger");
    let runs = cluster.sql_i64("SELECT count(*) FROM (SELECT fence, lag(fence) OVER (ORDER BY id) AS prev FROM stock_ledger) t WHERE prev IS DISTINCT FROM fence");
    assert_eq!(holds, runs, "each hold's rows are contiguous");
    // Holds served several queued requests at once (1000 sales in fewer holds).
    assert!(
        holds < 1000,
        "{holds} holds for 1000 sales: nothing was batched"
    );
    // Every answer reports the stock left after its own sale: all different, 0..=999.
    let mut left: Vec<i64> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["stock"].as_i64().unwrap())
        .collect();
    left.sort_unstable();
    assert_eq!(left, (0..1000).collect::<Vec<_>>(), "each answer is exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balance_charge_50_then_70_uses_of_1() {
    let cluster = spawn_cluster().await;
    let charged = cluster
        .post("/balance/7/charge", Some(json!({"amount": 50})))
        .await;
    assert_eq!(
        (charged.status, charged.body["balance"].as_i64()),
        (200, Some(50)),
        "{}",
        charged.text
    );
    let replies =
        join_all((0..70).map(|_| cluster.post("/balance/7/use", Some(json!({"amount": 1}))))).await;
    let counts = by_status(&replies);
    assert_eq!(
        (counts.get(&200), counts.get(&409)),
        (Some(&50), Some(&20)),
        "{counts:?}"
    );
    assert!(replies
        .iter()
        .filter(|r| r.status == 409)
        .all(|r| r.code() == "insufficient_balance"));
    let balance = cluster.get("/balance/7").await;
    assert_eq!(balance.body["balance"], 0);
    assert_eq!(cluster.ledger_balance(7), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_reservations_of_one_seat_have_one_winner() {
    let cluster = spawn_cluster().await;
    let replies = join_all((1..=10).map(|user| {
        cluster.post(
            "/concerts/3/seats/12/reserve",
            Some(json!({"user_id": user})),
        )
    }))
    .await;
    let counts = by_status(&replies);
    assert_eq!(
        (counts.get(&201), counts.get(&409)),
        (Some(&1), Some(&9)),
        "{counts:?}"
    );
    assert!(replies
        .iter()
        .filter(|r| r.status == 409)
        .all(|r| r.code() == "seat_taken"));
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM seat_reservations"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_queue_tokens_get_positions_1_to_100() {
    let cluster = spawn_cluster().await;
    let replies = join_all(
        (1..=100).map(|user| cluster.post("/queue/9/tokens", Some(json!({"user_id": user})))),
    )
    .await;
    assert!(
        replies.iter().all(|r| r.status == 201),
        "{:?}",
        by_status(&replies)
    );
    let mut positions: Vec<i64> = replies
        .iter()
        .map(|r| r.body["position"].as_i64().unwrap())
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=100).collect::<Vec<_>>());
    let tokens: HashSet<&str> = replies
        .iter()
        .map(|r| r.body["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_job_runs_exactly_once_per_tick_across_three_instances() {
    let cluster = spawn_cluster_with(Options {
        job_interval_ms: 250,
        ..Options::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let ticks = cluster.sql_i64("SELECT count(DISTINCT tick) FROM job_runs");
    assert!(ticks >= 5, "only {ticks} ticks ran");
    let doubled = cluster.sql_i64(
        "SELECT count(*) FROM (SELECT tick FROM job_runs GROUP BY tick HAVING count(*) > 1) t",
    );
    assert_eq!(
        doubled,
        0,
        "some tick ran more than once: {}",
        cluster.sql(
            "SELECT tick, string_agg(instance, ',') FROM job_runs GROUP BY tick ORDER BY tick"
        )
    );
    let missing =
        cluster.sql_i64("SELECT (max(tick) - min(tick) + 1) - count(DISTINCT tick) FROM job_runs");
    assert_eq!(missing, 0, "a tick was skipped");
}

/// Issue 19, finding 16: the tick's winner kept its lock for the whole tick (`min_hold`) even
/// when its run failed, so nobody ran that tick. Now the lock is given back on failure and the
/// instances still waiting for it run the tick (a run already recorded is not repeated).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tick_whose_winner_fails_is_run_by_another_instance() {
    let cluster = spawn_cluster_with(Options {
        job_interval_ms: 250,
        ..Options::default()
    })
    .await;
    // Runs by app1 and app2 fail: every tick must be run by app3.
    cluster.sql(
        "CREATE FUNCTION only_app3() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.instance <> 'app3' THEN RAISE EXCEPTION 'this run fails'; END IF; \
         RETURN NEW; END $$",
    );
    cluster.sql(
        "CREATE TRIGGER only_app3 BEFORE INSERT ON job_runs \
         FOR EACH ROW EXECUTE FUNCTION only_app3()",
    );
    let since = cluster.sql_i64("SELECT coalesce(max(tick), 0) FROM job_runs");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let runs = format!("FROM job_runs WHERE tick > {since} + 1");
    let ticks = cluster.sql_i64(&format!("SELECT count(DISTINCT tick) {runs}"));
    assert!(ticks >= 5, "only {ticks} ticks ran");
    let missing = cluster.sql_i64(&format!(
        "SELECT (max(tick) - min(tick) + 1) - count(DISTINCT tick) {runs}"
    ));
    assert_eq!(
        missing,
        0,
        "a tick whose winner failed was not run: {}",
        cluster.sql(&format!(
            "SELECT string_agg(tick::text, ',' ORDER BY tick) {runs}"
        ))
    );
    let doubled = cluster.sql_i64(&format!(
        "SELECT count(*) FROM (SELECT tick {runs} GROUP BY tick HAVING count(*) > 1) t"
    ));
    assert_eq!(doubled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_that_lost_its_lock_cannot_write() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    let locker =
        Locker::new(LockerConfig::new([shared_redis().url()]).prefix("fencing-test")).unwrap();
    let resource = format!("product:{product}");
    let stale = locker
        .acquire(
            &resource,
            &LockOptions::new().ttl(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // expired…
    let fresh = locker
        .acquire(&resource, &LockOptions::new())
        .await
        .unwrap(); // …and taken over
    let pool = fencelock_app::db::pool(&crate::helpers::postgres().url(&cluster.database), 2);
    let mut conn = pool.get().await.unwrap();
    let fence = |guard: &fencelock::Guard| i64::try_from(guard.fence()).unwrap();
    deduct_one(
        &mut conn,
        "new",
        product,
        1,
        fence(&fresh),
        fresh.acquired_at(),
    )
    .await
    .expect("the new holder writes");
    let stale_write = deduct_one(
        &mut conn,
        "stale",
        product,
        1,
        fence(&stale),
        stale.acquired_at(),
    )
    .await;
    assert!(
        matches!(stale_write, Err(AppError::FencedOut { .. })),
        "{stale_write:?}"
    );
    assert_eq!(
        cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}")),
        9
    );
    assert_eq!(
        cluster.sql("SELECT string_agg(instance, ',') FROM stock_ledger"),
        "new"
    );
    assert!(!stale.release().await.unwrap());
    fresh.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_20_times_at_once_applies_once() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(100).await;
    for strategy in ["lock", "atomic"] {
        let path = format!("/product/{product}/deduct?strategy={strategy}");
        let key = format!("key-{strategy}");
        let headers = [
            ("idempotency-key", key.as_str()),
            ("content-type", "application/json"),
        ];
        let replies =
            join_all((0..20).map(|_| cluster.post_raw(&path, r#"{"quantity": 3}"#, &headers)))
                .await;
        // Each copy is applied (once), replayed, or refused as still in flight.
        let applied: Vec<_> = replies
            .iter()
            .filter(|r| r.status == 200 && !r.headers.contains_key("idempotent-replayed"))
            .collect();
        assert_eq!(
            applied.len(),
            1,
            "{:?}",
            replies.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        for reply in &replies {
            match reply.status {
                200 => assert_eq!(
                    reply.text, applied[0].text,
                    "repeats get the first response"
                ),
                409 => assert_eq!(reply.code(), "idempotency_key_in_flight"),
                _ => panic!("{}: {}", reply.status, reply.text),
            }
        }
    }
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 2);
    assert_eq!(
        cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}")),
        94
    );
    // Charges too.
    let replies = join_all((0..20).map(|_| {
        cluster.post_raw(
            "/balance/5/charge",
            r#"{"amount": 10}"#,
            &[
                ("idempotency-key", "charge-1"),
                ("content-type", "application/json"),
            ],
        )
    }))
    .await;
    assert!(replies
        .iter()
        .all(|r| r.status == 200 || r.code() == "idempotency_key_in_flight"));
    assert_eq!(cluster.get("/balance/5").await.body["balance"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_charge_or_use_is_answered_without_waiting_for_the_lock() {
    let cluster = spawn_cluster().await;
    let send = async |path: &str, key: &str| {
        let headers = [
            ("idempotency-key", key),
            ("content-type", "application/json"),
        ];
        cluster.post_raw(path, r#"{"amount": 10}"#, &headers).await
    };
    let first_charge = send("/balance/9/charge", "charge-9").await;
    let first_use = send("/balance/9/use", "use-9").await;
    assert_eq!((first_charge.status, first_use.status), (200, 200));

    // Someone else holds the user's lock, far longer than the handlers' 10 s wait budget.
    let held = cluster
        .hold_lock("balance:9", Duration::from_secs(60))
        .await;
    for (path, key, first) in [
        ("/balance/9/charge", "charge-9", &first_charge),
        ("/balance/9/use", "use-9", &first_use),
    ] {
        let repeat = tokio::time::timeout(Duration::from_secs(5), send(path, key))
            .await
            .unwrap_or_else(|_| panic!("the repeat of {path} waited for the lock"));
        assert_eq!(repeat.status, 200, "{}", repeat.text);
        assert!(repeat.headers.contains_key("idempotent-replayed"));
        assert_eq!(repeat.text, first.text);
    }
    held.release().await.unwrap();
    assert_eq!(cluster.get("/balance/9").await.body["balance"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_metrics_report_the_instance() {
    let cluster = spawn_cluster().await;
    let health = cluster.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.body["db"], "ok");
    assert_eq!(
        health.body["redis"],
        json!({"nodes": 1, "up": 1, "quorum": true})
    );
    assert!(cluster
        .instances
        .contains(&health.body["instance"].as_str().unwrap().to_string()));
    let product = cluster.reset(5).await;
    cluster
        .post(&format!("/product/{product}/deduct"), None)
        .await;
    let metrics = cluster.get("/metrics").await;
    assert!(
        metrics.text.contains("fencelock_acquired_total"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("http_requests_total"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("/product/{id}/deduct"),
        "routes are labelled by pattern"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategies_all_sell_within_stock_when_serial() {
    let cluster = spawn_cluster_with(Options {
        instances: 1,
        ..Options::default()
    })
    .await;
    let product = cluster.reset(8).await;
    for strategy in ["lock", "none", "db-row", "atomic"] {
        for _ in 0..2 {
            let reply = cluster
                .post(
                    &format!("/product/{product}/deduct?strategy={strategy}"),
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{strategy}: {}", reply.text);
        }
    }
    let reply = cluster
        .post(&format!("/product/{product}/deduct?strategy=atomic"), None)
        .await;
    assert_eq!((reply.status, reply.code()), (409, "out_of_stock"));
    let strategies = cluster
        .sql("SELECT string_agg(DISTINCT strategy, ',' ORDER BY strategy) FROM stock_ledger");
    assert_eq!(strategies, "atomic,db-row,lock,none");
}

/// Defect: an Idempotency-Key reused with a different request replayed the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_reused_for_a_different_request_is_422() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(100).await;
    let other = cluster
        .post("/product", Some(json!({"name": "other", "stock": 100})))
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let headers = [
        ("idempotency-key", "reused-1"),
        ("content-type", "application/json"),
    ];
    let deduct = format!("/product/{product}/deduct");
    let first = cluster
        .post_raw(&deduct, r#"{"quantity": 2}"#, &headers)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let repeat = cluster
        .post_raw(&deduct, r#"{"quantity": 2}"#, &headers)
        .await;
    assert_eq!(repeat.text, first.text);
    for (what, path, body) in [
        ("another body", deduct.clone(), r#"{"quantity": 5}"#),
        (
            "another path",
            format!("/product/{other}/deduct"),
            r#"{"quantity": 2}"#,
        ),
        (
            "another query",
            format!("{deduct}?strategy=atomic"),
            r#"{"quantity": 2}"#,
        ),
        (
            "another operation",
            "/balance/4/charge".into(),
            r#"{"amount": 2}"#,
        ),
    ] {
        let reply = cluster.post_raw(&path, body, &headers).await;
        assert_eq!(
            (reply.status, reply.code()),
            (422, "idempotency_key_reused"),
            "{what}: {}",
            reply.text
        );
    }
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 1);
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM balance_ledger"), 0);
}

/// The IETF draft's other half: a repeat while the first request is still being handled is a
/// 409 `idempotency_key_in_flight`, not a second execution and not a wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_while_the_first_is_in_flight_is_409() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(100).await;
    // The product's lock is held elsewhere: the first request waits in its handler.
    let held = cluster
        .hold_lock(&format!("product:{product}"), Duration::from_secs(30))
        .await;
    let headers = [
        ("idempotency-key", "in-flight-1"),
        ("content-type", "application/json"),
    ];
    let path = format!("/product/{product}/deduct");
    let first = cluster.post_raw(&path, r#"{"quantity": 1}"#, &headers);
    let repeat = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let repeat = cluster
            .post_raw(&path, r#"{"quantity": 1}"#, &headers)
            .await;
        held.release().await.unwrap();
        repeat
    };
    let (first, repeat) = tokio::join!(first, repeat);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        (repeat.status, repeat.code()),
        (409, "idempotency_key_in_flight"),
        "{}",
        repeat.text
    );
    let after = cluster
        .post_raw(&path, r#"{"quantity": 1}"#, &headers)
        .await;
    assert_eq!(after.text, first.text);
    assert!(after.headers.contains_key("idempotent-replayed"));
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 1);
}

/// A batch can hold a request whose key was already answered (a retry whose first attempt
/// committed after its client hung up) and a key twice. Before: the key's unique violation
/// rolled the whole batch back, and every request in it was told `AlreadyApplied` for a sale
/// that never happened. Now only those requests are repeats (replayed by the caller); the rest
/// of the batch sells.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_an_answered_key_sells_the_rest() {
    use fencelock_app::idempotency::{save, IdempotencyKey, Stored};
    use fencelock_app::routes::product::{fenced_deduct, Requested};
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    let keyed = |key: &str| {
        let request = actix_web::test::TestRequest::post()
            .uri(&format!("/product/{product}/deduct"))
            .insert_header(("idempotency-key", key))
            .to_http_request();
        let input = json!({"product": product, "strategy": "lock", "quantity": 1});
        IdempotencyKey::from_request(&request, "deduct", &input)
            .unwrap()
            .unwrap()
    };
    let (answered, twice) = (keyed("answered-before"), keyed("sent-twice"));
    let pool = fencelock_app::db::pool(&crate::helpers::postgres().url(&cluster.database), 2);
    let mut conn = pool.get().await.unwrap();
    let first = Stored::new(
        actix_web::http::StatusCode::OK,
        &json!({"id": product, "stock": 9}),
    );
    save(&mut conn, &answered, &first).await.unwrap();
    let one = |key| Requested { quantity: 1, key };
    let batch = [
        one(Some(&answered)),
        one(None),
        one(Some(&twice)),
        one(Some(&twice)),
    ];
    let answers = fenced_deduct(
        &mut conn,
        "test",
        product,
        &batch,
        1_000,
        tokio::time::Instant::now(),
    )
    .await
    .expect("the batch is not failed as a whole");
    let shapes: Vec<&str> = answers
        .iter()
        .map(|answer| match answer {
            Ok(_) => "sold",
            Err(AppError::AlreadyApplied) => "repeat",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(shapes, ["repeat", "sold", "sold", "repeat"]);
    assert_eq!(
        cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}")),
        8
    );
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM stock_ledger"), 2);
}
