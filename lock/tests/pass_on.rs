//! The in-process pass-on (a lock handed to a waiter of the same process under the same token,
//! without a round trip) never hides a lost lock: the releaser's `Ok(true)` means Redis
//! confirmed that nobody else was granted the lock meanwhile, and a recipient of a lock that
//! turns out lost hears so. Real redis-server processes.

mod common;

use common::faults::command;
use common::unique;
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use std::time::{Duration, Instant};

/// #18.3: Redis loses the key (FLUSHALL) while A holds it and B, in the same process, waits;
/// another process takes the lock. A's release passes the lock on to B: A must hear
/// `Ok(false)`, and B must learn that its lock is lost — before, A got `Ok(true)` and B worked
/// on with `is_lost() == false` while the other process held the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_lost_in_redis_is_not_passed_on_as_held() {
    let redis = RedisServer::start();
    let url = redis.url();
    // B's timer must not fire during the test: it would take the lock itself right after the
    // FLUSHALL (which announces nothing), before the other process can.
    let mut config = LockerConfig::new([url.clone()]);
    config.retry_min_delay = Duration::from_secs(5);
    config.retry_max_delay = Duration::from_secs(5);
    let ours = Locker::new(config).unwrap();
    let theirs = Locker::new(LockerConfig::new([url.clone()])).unwrap();
    let resource = unique("pass-on-lost");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(5));
    let holder = ours.acquire(&resource, &options).await.unwrap();
    let waiter = tokio::spawn({
        let (ours, resource, options) = (ours.clone(), resource.clone(), options.clone());
        async move { ours.acquire(&resource, &options).await }
    });
    // B has made its attempt and queued for the handoff.
    tokio::time::sleep(Duration::from_millis(200)).await;
    command(&url, &["FLUSHALL"]).await;
    let other = theirs
        .acquire(&resource, &options.clone().wait(Duration::ZERO))
        .await
        .expect("the key is gone: another process takes the lock");

    let released = holder.release().await;
    assert!(
        matches!(released, Ok(false)),
        "the releaser's lock was lost, yet release said {released:?}"
    );
    // B got the lock passed on (and must learn it is lost), or asked Redis and waits behind the
    // other process (and must get it only after that one released it).
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut waiter = waiter;
    match tokio::time::timeout(Duration::from_millis(500), &mut waiter).await {
        Ok(passed_on) => {
            let guard = passed_on.unwrap().expect("B's acquire");
            while !guard.is_lost() {
                assert!(
                    Instant::now() < deadline,
                    "B holds a lock another process holds, and does not know it"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other.release().await.unwrap();
        }
        Err(_) => {
            let their_fence = other.fence();
            assert!(other.release().await.unwrap());
            let guard = waiter
                .await
                .unwrap()
                .expect("B gets the lock once it is free");
            assert!(guard.fence() > their_fence && !guard.is_lost());
            guard.release().await.unwrap();
        }
    }
}
