//! The lost signal: a holder learns that its lock is lost when, and only when, it may be. The
//! defects pinned here: one slow extension declared a healthy lock lost (and stopped renewing
//! it); with extensions hanging, `is_lost`/`lost` fired only after the key had expired; a
//! `#[distributed_lock]` body never learned of a loss.

use crate::common::faults::pause_clients;
use crate::common::nodes::single_node;
use crate::common::{connection, lock_key, unique};
use fencelock::{distributed_lock, LockError, LockOptions, Locker};
use redis::AsyncCommands;
use std::time::Duration;

/// Defect 4: one extension that timed out marked the guard lost and ended the watchdog, so a
/// healthy lock then really expired under the running body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_extension_does_not_lose_the_lock() {
    let (_redis, url, locker) = single_node(Duration::from_millis(100));
    let resource = unique("slow-extension");
    let options = LockOptions::new()
        .ttl(Duration::from_millis(600))
        .auto_extend(true);
    let guard = locker.acquire(&resource, &options).await.unwrap();
    // The first extension goes out at ttl / 3 = 200 ms: make it wait 150 ms.
    tokio::time::sleep(Duration::from_millis(190)).await;
    pause_clients(&url, 150).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!guard.is_lost(), "one slow reply lost a healthy lock");
    let mut conn = connection(&url).await;
    let held: bool = conn.exists(lock_key(&resource)).await.unwrap();
    assert!(held, "the key expired under the running body");
    assert!(guard.release().await.unwrap());
}

/// Defect 4: `is_lost`/`lost` ignored the lock's own deadline under auto-extend, so a holder
/// whose extensions hang learned of the loss only after the key had expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_by_the_locks_own_deadline_when_extensions_hang() {
    let (redis, _url, locker) = single_node(Duration::from_secs(2));
    let ttl = Duration::from_millis(300);
    let guard = locker
        .acquire(
            &unique("hung-extension"),
            &LockOptions::new().ttl(ttl).auto_extend(true),
        )
        .await
        .unwrap();
    redis.pause();
    let deadline = guard.acquired_at() + ttl;
    tokio::time::sleep_until(deadline).await;
    let lost_by_then = guard.is_lost();
    let lost_in_time = tokio::time::timeout(Duration::from_millis(100), guard.lost())
        .await
        .is_ok();
    redis.resume();
    assert!(
        lost_by_then,
        "the key may have expired, yet is_lost() says held"
    );
    assert!(
        lost_in_time,
        "lost() had not fired 100 ms past the key's expiry"
    );
}

#[distributed_lock(
    resource = "{resource}",
    ttl_ms = 300,
    auto_extend,
    cancel_on_lost,
    locker = locker
)]
async fn long_work(locker: &Locker, resource: &str) -> Result<&'static str, LockError> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok("finished")
}

/// Defect 4: the attribute never let a body learn that its lock was lost; `cancel_on_lost`
/// stops the body and returns `LockError::Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_lost_stops_the_body_when_the_lock_is_lost() {
    let (_redis, url, locker) = single_node(Duration::from_secs(1));
    let resource = unique("cancel-on-lost");
    let work = tokio::spawn({
        let (locker, resource) = (locker.clone(), resource.clone());
        async move { long_work(&locker, &resource).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = connection(&url).await;
    let _: () = conn.del(lock_key(&resource)).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .expect("the body kept running after its lock was lost")
        .unwrap();
    assert!(
        matches!(outcome, Err(LockError::Lost { .. })),
        "{outcome:?}"
    );
}
