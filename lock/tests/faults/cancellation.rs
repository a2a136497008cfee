//! Cancellation: a future dropped, or cut short by a timeout, at an await point — an
//! acquisition, a release, a waiter, a hand-over half done. The defects pinned here: what it
//! had started stayed half done (a key nobody owns, a lock never released, a dead waiter at the
//! head of a queue), or the others tripped over it (a panic, a process locked out). Each test
//! drops or times out a future while `CLIENT PAUSE` holds its command in Redis.

use crate::common::faults::{gone_within, pause_clients};
use crate::common::nodes::{locker_with_timeout, single_node, warm_up};
use crate::common::{lock_key, unique};
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use std::time::{Duration, Instant};

/// Defect 1: a local waiter whose handoff failed was put back at the head of the local queue
/// even though its future had been dropped; every later waiter of that process then deferred to
/// it and never asked Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_local_waiter_does_not_lock_its_process_out() {
    let (_redis, url, locker) = single_node(Duration::from_millis(200));
    let resource = unique("dead-waiter");
    let short = LockOptions::new()
        .ttl(Duration::from_secs(1))
        .wait(Duration::from_secs(5));
    let holder = locker.acquire(&resource, &short).await.unwrap();
    let waiter = {
        let (locker, resource, short) = (locker.clone(), resource.clone(), short.clone());
        tokio::spawn(async move { locker.acquire(&resource, &short).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    pause_clients(&url, 400).await;
    // The handoff to the waiter times out (node timeout 200 ms) while Redis is paused…
    let release = tokio::spawn(holder.release());
    // …and the waiter's future is dropped meanwhile.
    tokio::time::sleep(Duration::from_millis(20)).await;
    waiter.abort();
    let _ = release.await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = locker
        .acquire(&resource, &short.clone().wait(Duration::from_secs(2)))
        .await;
    assert!(
        again.is_ok(),
        "this process can no longer take the lock: {again:?}"
    );
}

/// Defect 2: an acquire dropped after its `SET NX` was sent left a lock nobody owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_acquire_leaves_no_lock_behind() {
    let (_redis, url, locker) = single_node(Duration::from_secs(2));
    let resource = unique("dropped-acquire");
    let options = LockOptions::new().ttl(Duration::from_secs(8));
    warm_up(&locker).await;
    pause_clients(&url, 300).await;
    let acquire = {
        let (locker, resource, options) = (locker.clone(), resource.clone(), options.clone());
        tokio::spawn(async move { locker.acquire(&resource, &options).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    acquire.abort();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        gone_within(&url, &lock_key(&resource), Duration::from_millis(300)).await,
        "the dropped acquisition's key outlived it"
    );
    let other = locker_with_timeout(std::slice::from_ref(&url), Duration::from_secs(2));
    let guard = other.try_acquire(&resource, &options).await.unwrap();
    assert!(guard.release().await.unwrap());
}

/// Defect 2: a `release` cancelled at an await point released nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_release_still_releases() {
    let (_redis, url, locker) = single_node(Duration::from_secs(2));
    let resource = unique("cancelled-release");
    let guard = locker
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(8)))
        .await
        .unwrap();
    pause_clients(&url, 300).await;
    let cut_short = tokio::time::timeout(Duration::from_millis(50), guard.release()).await;
    assert!(
        cut_short.is_err(),
        "the release should still be waiting on Redis"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        gone_within(&url, &lock_key(&resource), Duration::from_millis(300)).await,
        "a cancelled release left the lock held"
    );
}

/// Defect 3: a waiter whose handoff was abandoned half-way (the releasing future dropped)
/// polled a completed oneshot again and panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_survives_a_handoff_abandoned_half_way() {
    let (_redis, url, locker) = single_node(Duration::from_secs(2));
    let resource = unique("abandoned-handoff");
    let options = LockOptions::new()
        .ttl(Duration::from_millis(800))
        .wait(Duration::from_secs(4));
    let holder = locker.acquire(&resource, &options).await.unwrap();
    let waiter = {
        let (locker, resource, options) = (locker.clone(), resource.clone(), options.clone());
        tokio::spawn(async move {
            let guard = locker.acquire(&resource, &options).await?;
            guard.release().await
        })
    };
    // Long enough that the hold has less than 90% of its TTL left: the handoff cannot pass the
    // lock on in-process and must go through Redis, where the pause catches it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    pause_clients(&url, 300).await;
    let cut_short = tokio::time::timeout(Duration::from_millis(50), holder.release()).await;
    assert!(cut_short.is_err());
    let outcome = waiter.await;
    assert!(
        matches!(outcome, Ok(Ok(true))),
        "the waiter panicked or failed: {outcome:?}"
    );
}

/// Defect 7: a fair waiter dropped during its first `FAIR_ACQUIRE` stayed at the head of the
/// queue until its lease ran out, blocking a free lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_waiter_dropped_mid_attempt_leaves_the_queue() {
    let redis = RedisServer::start();
    let url = redis.url();
    let config = || {
        LockerConfig::new([url.clone()])
            .node_timeout(Duration::from_secs(2))
            .fair_waiter_lease(Duration::from_secs(5))
    };
    let resource = unique("fair-drop");
    let fair = LockOptions::new().fair(true).wait(Duration::from_secs(3));
    let holder = Locker::new(config()).unwrap();
    let guard = holder.acquire(&resource, &fair).await.unwrap();
    let dropped = Locker::new(config()).unwrap();
    warm_up(&dropped).await;
    pause_clients(&url, 200).await;
    let attempt = {
        let (resource, fair) = (resource.clone(), fair.clone());
        tokio::spawn(async move { dropped.acquire(&resource, &fair).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    attempt.abort();
    tokio::time::sleep(Duration::from_millis(250)).await;
    guard.release().await.unwrap();
    let next = Locker::new(config()).unwrap();
    let started = Instant::now();
    let outcome = next.acquire(&resource, &fair).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a free lock waited {:?} for a waiter that was gone",
        started.elapsed()
    );
}
