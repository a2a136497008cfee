//! The service under faults: writes of holders that lost their lock, outages, hang-ups.
//! Each test pins one defect of the fault drills (see the commit that added it).

use crate::helpers::deduct_one;
use crate::helpers::{postgres, spawn_cluster, spawn_cluster_with, Cluster, Options, Reply};
use actix_web::ResponseError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fencelock_app::db::Connection;
use fencelock_app::error::AppError;
use fencelock_app::routes::queue::take_token;
use fencelock_app::routes::seats::{reserve_seat, Seat};
use fencelock_testkit::{PostgresServer, RedisServer};
use futures_util::future::join_all;
use std::time::Duration;

/// The lock wait budget of `POST /product/{id}/deduct`: a 423 arrives only after it.
const WAIT_BUDGET: Duration = Duration::from_secs(20);

/// How many sessions of this test's database wait on a row lock.
fn waiting_on_locks(cluster: &Cluster) -> i64 {
    cluster.sql_i64(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
}

/// Polls (bounded: 10 s) until `count` sessions wait on a row lock.
async fn until_waiting(cluster: &Cluster, count: i64) {
    for _ in 0..200 {
        if waiting_on_locks(cluster) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} sessions never queued on the row lock");
}

async fn execute(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

/// `N` connections of the test's own to the cluster's database (not the instances' pools).
async fn connections<const N: usize>(cluster: &Cluster) -> [Connection<'static>; N] {
    let pool = fencelock_app::db::pool(&postgres().url(&cluster.database), N as u32);
    let mut connections = Vec::with_capacity(N);
    for _ in 0..N {
        connections.push(pool.get_owned().await.unwrap());
    }
    connections.try_into().ok().expect("N connections")
}

/// Opens a transaction on `conn` that takes a lock with `lock_sql` (a row's `FOR UPDATE`, a
/// table lock) and keeps it until `COMMIT` or `ROLLBACK`: what orders the writes under test.
async fn hold(conn: &mut AsyncPgConnection, lock_sql: &str) {
    execute(conn, "BEGIN").await;
    execute(conn, lock_sql).await;
}

/// Defect: `strategy=lock` wrote `WHERE fence <= $ours` only. A stale holder's UPDATE, queued on
/// the row, landed between the new holder's read and its write; the new holder then wrote
/// back its stale read (two sales in the ledger, stock down by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_write_landing_between_read_and_write_fences_out_the_newer_holder() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    let [mut blocker, mut stale_conn, mut new_conn] = connections(&cluster).await;
    // A second connection holds the row so the two writes queue on it in a known order.
    hold(
        &mut blocker,
        &format!("SELECT id FROM products WHERE id = {product} FOR UPDATE"),
    )
    .await;
    let held_since = tokio::time::Instant::now();
    let stale = tokio::spawn(async move {
        deduct_one(&mut stale_conn, "stale", product, 1, 100, held_since).await
    });
    until_waiting(&cluster, 1).await; // the stale holder read, its UPDATE waits
    let newer =
        tokio::spawn(
            async move { deduct_one(&mut new_conn, "new", product, 1, 200, held_since).await },
        );
    until_waiting(&cluster, 2).await; // the new holder read the same row, its UPDATE waits
    execute(&mut blocker, "COMMIT").await;

    let stale = stale.await.unwrap();
    let newer = newer.await.unwrap();
    assert!(
        stale.is_ok(),
        "the first write in fence order lands: {stale:?}"
    );
    assert!(
        matches!(newer, Err(AppError::FencedOut { .. })),
        "the holder that read before the stale write must be fenced out: {newer:?}"
    );
    let stock = cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}"));
    let sold = cluster.sql_i64(&format!(
        "SELECT coalesce(sum(quantity), 0) FROM stock_ledger WHERE product_id = {product}"
    ));
    assert_eq!(stock, 10 - sold, "stock = initial - Σ ledger");
    assert_eq!(sold, 1);
}

/// Defect: queue tokens were an unfenced read-then-insert. A stale holder and the new holder
/// both read the last position; the second insert hit the primary key and the client got
/// `503 database_unavailable`. Now the stale holder gets 409 `lock_lost` (or both succeed, in
/// fence order, with positions 1 and 2): never a 5xx, never a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_queue_token_holder_gets_409_never_a_5xx() {
    let cluster = spawn_cluster().await;
    let [mut blocker, mut stale_conn, mut new_conn] = connections(&cluster).await;
    // Reads pass this table lock, inserts queue on it: both holders read "no tokens yet".
    hold(
        &mut blocker,
        "LOCK TABLE queue_tokens IN SHARE ROW EXCLUSIVE MODE",
    )
    .await;
    let stale =
        tokio::spawn(
            async move { take_token(&mut stale_conn, "stale", "queue:7", 7, 1, 100).await },
        );
    until_waiting(&cluster, 1).await;
    let newer =
        tokio::spawn(async move { take_token(&mut new_conn, "new", "queue:7", 7, 2, 200).await });
    until_waiting(&cluster, 2).await;
    execute(&mut blocker, "COMMIT").await;
    let outcomes = [stale.await.unwrap(), newer.await.unwrap()];
    for outcome in &outcomes {
        if let Err(err) = outcome {
            assert_eq!(
                (err.status_code().as_u16(), err.code()),
                (409, "lock_lost"),
                "{err:?}"
            );
        }
    }
    // Once the newer holder has written, the stale one is refused.
    let [mut conn] = connections(&cluster).await;
    let late = take_token(&mut conn, "stale", "queue:7", 7, 3, 150).await;
    assert!(matches!(late, Err(AppError::FencedOut { .. })), "{late:?}");
    let positions =
        cluster.sql("SELECT string_agg(position::text, ',' ORDER BY position) FROM queue_tokens");
    let granted = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let expected: Vec<String> = (1..=granted).map(|n| n.to_string()).collect();
    assert_eq!(positions, expected.join(","));
}

/// Seats: a stale holder racing the new one, or arriving after it, gets a 409 (`seat_taken`
/// or `lock_lost`), never a 5xx, and the seat has one reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_seat_holder_gets_409_never_a_5xx() {
    let cluster = spawn_cluster().await;
    let [mut blocker, mut stale_conn, mut new_conn] = connections(&cluster).await;
    let seat = Seat {
        concert_id: 3,
        seat_no: 12,
    };
    hold(
        &mut blocker,
        "LOCK TABLE seat_reservations IN SHARE ROW EXCLUSIVE MODE",
    )
    .await;
    let stale = tokio::spawn(async move {
        reserve_seat(&mut stale_conn, "stale", "seat:3:12", seat, 1, 100).await
    });
    until_waiting(&cluster, 1).await;
    let newer =
        tokio::spawn(
            async move { reserve_seat(&mut new_conn, "new", "seat:3:12", seat, 2, 200).await },
        );
    until_waiting(&cluster, 2).await;
    execute(&mut blocker, "COMMIT").await;
    let [mut conn] = connections(&cluster).await;
    let late = reserve_seat(&mut conn, "stale", "seat:3:12", seat, 3, 150).await;
    let outcomes = [stale.await.unwrap(), newer.await.unwrap(), late];
    assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 1);
    for err in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert_eq!(err.status_code().as_u16(), 409, "{err:?}");
        assert!(["seat_taken", "lock_lost"].contains(&err.code()), "{err:?}");
    }
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM seat_reservations"), 1);
}

/// Sends `count` deductions at once (strategy=lock) and returns the replies with how long the
/// slowest took.
async fn deduct_burst(cluster: &Cluster, product: i64, count: usize) -> (Vec<Reply>, Duration) {
    let started = std::time::Instant::now();
    let path = format!("/product/{product}/deduct");
    let replies = join_all((0..count).map(|_| cluster.post(&path, None))).await;
    (replies, started.elapsed())
}

/// Whether three deductions at once all succeed within 10 s (bounded: 100 tries).
async fn recovers(cluster: &Cluster, product: i64) -> bool {
    for _ in 0..100 {
        let (replies, _) = deduct_burst(cluster, product, 3).await;
        if replies.iter().all(|reply| reply.status == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Every reply is a JSON 503 with `code` and a `Retry-After`.
fn assert_outage_answers(replies: &[Reply], code: &str) {
    for reply in replies {
        assert_eq!((reply.status, reply.code()), (503, code), "{}", reply.text);
        assert!(
            reply.headers.contains_key("retry-after"),
            "no Retry-After: {:?}",
            reply.headers
        );
    }
}

/// Defect: with PostgreSQL down each lock holder waited the pool's 5 s connection timeout while
/// holding a 5 s lock, so the clients queued behind got `423 lock_busy` after their whole 20 s
/// wait; `/health` (the load balancer's check) failed on every instance at once. Now the first
/// holder notes the outage and everyone gets `503 database_unavailable` with `Retry-After`
/// (the wait budget is never reached), liveness stays 200, readiness says 503, and the service
/// recovers when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgres_down_every_client_gets_a_prompt_json_503() {
    let mut server = PostgresServer::start();
    server.create_database("outage");
    let cluster = spawn_cluster_with(Options {
        database_url: Some(server.url("outage")),
        ..Options::default()
    })
    .await;
    let product = cluster.reset(1000).await;
    let (warm, _) = deduct_burst(&cluster, product, 5).await;
    assert!(warm.iter().all(|reply| reply.status == 200));

    // The test server runs with synchronous_commit off: make the set-up survive the kill.
    server.psql("outage", "CHECKPOINT");
    server.kill();
    let (replies, slowest) = deduct_burst(&cluster, product, 40).await;
    assert_outage_answers(&replies, "database_unavailable");
    assert!(
        slowest < WAIT_BUDGET,
        "answers must not wait out the lock wait budget: {slowest:?}"
    );
    println!("PostgreSQL down: 40 clients answered 503 within {slowest:?}");
    for port in &cluster.ports {
        let get = |path: &str| {
            cluster
                .client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
        };
        assert_eq!(get("/health/live").await.unwrap().status(), 200);
        assert_eq!(get("/health/ready").await.unwrap().status(), 503);
        assert_eq!(get("/health").await.unwrap().status(), 503);
    }

    server.restart();
    let restarted = std::time::Instant::now();
    assert!(
        recovers(&cluster, product).await,
        "the service did not recover after PostgreSQL came back"
    );
    // A figure for the README (not asserted: this machine's timing is noisy).
    println!(
        "PostgreSQL back: served again {:?} after its restart",
        restarted.elapsed()
    );
    let stock = server.psql(
        "outage",
        &format!("SELECT stock FROM products WHERE id = {product}"),
    );
    let sold = server.psql(
        "outage",
        &format!("SELECT sum(quantity) FROM stock_ledger WHERE product_id = {product}"),
    );
    assert_eq!(
        stock.parse::<i64>().unwrap(),
        1000 - sold.parse::<i64>().unwrap()
    );
}

/// With the only Redis down: every client gets `503 lock_unavailable` with `Retry-After`,
/// never a 423 after the wait budget; liveness stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_every_client_gets_a_prompt_json_503() {
    let mut redis = RedisServer::start();
    let cluster = spawn_cluster_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let product = cluster.reset(1000).await;
    redis.kill();
    let (replies, slowest) = deduct_burst(&cluster, product, 40).await;
    assert_outage_answers(&replies, "lock_unavailable");
    assert!(slowest < WAIT_BUDGET, "{slowest:?}");
    println!("Redis down: 40 clients answered 503 within {slowest:?}");
    let live = cluster.get("/health/live").await;
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(cluster.get("/health/ready").await.status, 503);
    redis.restart();
    assert!(
        recovers(&cluster, product).await,
        "the service did not recover after Redis came back"
    );
}

/// Found in review: the lock strategy's compare-and-set compared only the fence, which the
/// strategies without a lock leave as it is. An `atomic` deduction landing between a lock
/// holder's read and its write was overwritten (two sales, stock down by one). Then (issue 19,
/// finding 3) the holder was refused as a whole, though its lock still held: now its
/// compare-and-set fails, it reads again inside its hold and sells from the new stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_without_the_lock_between_read_and_write_costs_the_holder_a_re_read() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    let [mut blocker, mut holder_conn] = connections(&cluster).await;
    hold(
        &mut blocker,
        &format!("SELECT id FROM products WHERE id = {product} FOR UPDATE"),
    )
    .await;
    // The atomic deduction queues on the row first…
    let atomic = {
        let url = cluster.url(&format!("/product/{product}/deduct?strategy=atomic"));
        let client = cluster.client.clone();
        tokio::spawn(async move { client.post(url).send().await.unwrap().status() })
    };
    until_waiting(&cluster, 1).await;
    // …the lock holder reads the old stock, and its write queues behind.
    let held_since = tokio::time::Instant::now();
    let holder = tokio::spawn(async move {
        deduct_one(&mut holder_conn, "holder", product, 1, 100, held_since).await
    });
    until_waiting(&cluster, 2).await;
    execute(&mut blocker, "COMMIT").await;
    assert_eq!(atomic.await.unwrap(), 200);
    let holder = holder
        .await
        .unwrap()
        .expect("the holder sells after a re-read");
    let answer: serde_json::Value = serde_json::from_str(&holder.body).unwrap();
    assert_eq!(
        answer["stock"], 8,
        "sold from the stock the atomic write left"
    );
    let stock = cluster.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}"));
    let sold = cluster.sql_i64(&format!(
        "SELECT coalesce(sum(quantity), 0) FROM stock_ledger WHERE product_id = {product}"
    ));
    assert_eq!(stock, 10 - sold, "stock = initial - Σ ledger");
    assert_eq!(sold, 2);
}

/// Found in review: a request whose statement waited on a row lock past the 2 s budget (say,
/// behind a paused instance's open transaction) noted a database outage, and its instance
/// answered every request 503 for a while. Now the wait ends with PostgreSQL's lock timeout,
/// that request alone gets a `503 overloaded` (the database answered: not an outage), and the
/// instance goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_stuck_behind_a_row_lock_is_not_an_outage() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    let [mut blocker] = connections(&cluster).await;
    hold(
        &mut blocker,
        &format!("SELECT id FROM products WHERE id = {product} FOR UPDATE"),
    )
    .await;
    let path = format!("/product/{product}/deduct");
    let stuck = join_all((0..cluster.ports.len()).map(|_| cluster.post(&path, None))).await;
    for reply in &stuck {
        assert_eq!(
            (reply.status, reply.code()),
            (503, "overloaded"),
            "{}",
            reply.text
        );
        assert!(reply.headers.contains_key("retry-after"));
    }
    // Every instance still serves what the row lock does not block.
    for _ in 0..cluster.ports.len() {
        let read = cluster.get(&format!("/product/{product}")).await;
        assert_eq!(read.status, 200, "{}", read.text);
    }
    execute(&mut blocker, "ROLLBACK").await;
    let after = cluster.post(&path, None).await;
    assert_eq!(after.status, 200, "{}", after.text);
}
