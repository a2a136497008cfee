//! The service under faults: writes of holders that lost their lock, outages, hang-ups.
//! Each test pins one defect of the fault drills (see the commit that added it).

use crate::helpers::{postgres, spawn_cluster, Cluster};
use actix_web::ResponseError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dlock_app::error::AppError;
use dlock_app::routes::product::fenced_deduct;
use dlock_app::routes::queue::take_token;
use dlock_app::routes::seats::{reserve_seat, Seat};
use std::time::Duration;

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

/// Defect: `strategy=lock` wrote `WHERE fence <= $ours` only. A stale holder's UPDATE, queued on
/// the row, landed between the new holder's read and its write; the new holder then wrote
/// back its stale read (two sales in the ledger, stock down by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_write_landing_between_read_and_write_fences_out_the_newer_holder() {
    let cluster = spawn_cluster().await;
    let product = cluster.reset(10).await;
    let pool = dlock_app::db::pool(&postgres().url(&cluster.database), 3);
    let (mut blocker, mut stale_conn, mut new_conn) = (
        pool.get_owned().await.unwrap(),
        pool.get_owned().await.unwrap(),
        pool.get_owned().await.unwrap(),
    );
    // A second connection holds the row so the two writes queue on it in a known order.
    execute(&mut blocker, "BEGIN").await;
    execute(
        &mut blocker,
        &format!("SELECT id FROM products WHERE id = {product} FOR UPDATE"),
    )
    .await;
    let held_since = tokio::time::Instant::now();
    let stale = tokio::spawn(async move {
        fenced_deduct(&mut stale_conn, "stale", product, 1, 100, held_since, None).await
    });
    until_waiting(&cluster, 1).await; // the stale holder read, its UPDATE waits
    let newer = tokio::spawn(async move {
        fenced_deduct(&mut new_conn, "new", product, 1, 200, held_since, None).await
    });
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
    let pool = dlock_app::db::pool(&postgres().url(&cluster.database), 3);
    let (mut blocker, mut stale_conn, mut new_conn) = (
        pool.get_owned().await.unwrap(),
        pool.get_owned().await.unwrap(),
        pool.get_owned().await.unwrap(),
    );
    // Reads pass this table lock, inserts queue on it: both holders read "no tokens yet".
    execute(&mut blocker, "BEGIN").await;
    execute(
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
    let mut conn = pool.get_owned().await.unwrap();
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
    let pool = dlock_app::db::pool(&postgres().url(&cluster.database), 3);
    let (mut blocker, mut stale_conn, mut new_conn) = (
        pool.get_owned().await.unwrap(),
        pool.get_owned().await.unwrap(),
        pool.get_owned().await.unwrap(),
    );
    let seat = Seat {
        concert_id: 3,
        seat_no: 12,
    };
    execute(&mut blocker, "BEGIN").await;
    execute(
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
    let mut conn = pool.get_owned().await.unwrap();
    let late = reserve_seat(&mut conn, "stale", "seat:3:12", seat, 3, 150).await;
    let outcomes = [stale.await.unwrap(), newer.await.unwrap(), late];
    assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 1);
    for err in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert_eq!(err.status_code().as_u16(), 409, "{err:?}");
        assert!(["seat_taken", "lock_lost"].contains(&err.code()), "{err:?}");
    }
    assert_eq!(cluster.sql_i64("SELECT count(*) FROM seat_reservations"), 1);
}
