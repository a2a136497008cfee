//! Fair mode: FIFO across processes, and a crashed waiter cannot stall the queue for long.

mod common;

use common::{locker, unique};
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::shared_redis;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_acquire_in_arrival_order() {
    let url = shared_redis().url();
    let resource = unique("fair");
    let fair = LockOptions::new().fair(true).wait(Duration::from_secs(10));
    let holder = locker(&[&url]);
    let guard = holder.acquire(&resource, &fair).await.unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for arrival in 0..6 {
        // Alternate between two lockers: order must hold across processes, not just within one.
        let locker = locker(&[&url]);
        let (resource, fair, order) = (resource.clone(), fair.clone(), Arc::clone(&order));
        waiters.push(tokio::spawn(async move {
            let guard = locker.acquire(&resource, &fair).await.unwrap();
            order.lock().unwrap().push(arrival);
            tokio::time::sleep(Duration::from_millis(5)).await;
            guard.release().await.unwrap();
        }));
        // Let this waiter take its place in the queue before the next one arrives.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    guard.release().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_waiter_stalls_the_queue_at_most_one_lease() {
    let url = shared_redis().url();
    let resource = unique("fair-crash");
    let lease = Duration::from_millis(600);
    let config = |url: &str| LockerConfig::new([url]).fair_waiter_lease(lease);
    let fair = LockOptions::new().fair(true).wait(Duration::from_secs(10));
    let holder = Locker::new(config(&url)).unwrap();
    let guard = holder.acquire(&resource, &fair).await.unwrap();

    // A waiter queues, then its process "crashes": the future is leaked, so nothing it owns
    // (its place in the queue included) is ever cleaned up.
    let crashed = Locker::new(config(&url)).unwrap();
    let mut doomed = Box::pin(crashed.acquire(&resource, &fair));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut doomed)
            .await
            .is_err()
    );
    std::mem::forget(doomed);

    let survivor = Locker::new(config(&url)).unwrap();
    let (resource2, fair2) = (resource.clone(), fair.clone());
    let next = tokio::spawn(async move {
        let guard = survivor.acquire(&resource2, &fair2).await.unwrap();
        let at = Instant::now();
        guard.release().await.unwrap();
        at
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let stalled = next.await.unwrap() - released;
    // Documented bound: the dead waiter's lease (renewed at most `lease/3` before it died)
    // plus one retry delay of the survivor (≤ lease/3).
    assert!(
        stalled < lease + lease / 3 + Duration::from_millis(150),
        "stalled {stalled:?}"
    );
    assert!(
        stalled > Duration::from_millis(100),
        "the dead waiter was head: it should cost something ({stalled:?})"
    );
}

#[tokio::test]
async fn fair_mode_is_refused_in_quorum_mode() {
    let urls: Vec<String> = (0..3)
        .map(|i| format!("redis://127.0.0.1:{}/", 1 + i))
        .collect();
    let quorum = locker(&urls);
    let err = quorum
        .acquire("x", &LockOptions::new().fair(true))
        .await
        .unwrap_err();
    assert!(
        matches!(err, fencelock::LockError::InvalidOptions(_)),
        "{err:?}"
    );
}
