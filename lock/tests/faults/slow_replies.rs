//! Replies that are slow but still answers. The defects pinned here: a stall shorter than the
//! node timeout was cut short by a lower timeout of redis-rs's own; a fair waiter whose round
//! won but came back with no validity left gave up its place in the queue along with the lock.

use crate::common::faults::pause_clients;
use crate::common::nodes::{single_node, warm_up};
use crate::common::unique;
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::{Fault, FaultProxy, RedisServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Found on the way: redis-rs's own 500 ms response timeout cut every call short, so a
/// `node_timeout` above half a second was silently not honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_timeout_above_half_a_second_is_honoured() {
    let (_redis, url, locker) = single_node(Duration::from_secs(3));
    warm_up(&locker).await;
    pause_clients(&url, 900).await;
    let outcome = locker
        .try_acquire(&unique("slow-redis"), &LockOptions::new())
        .await;
    assert!(
        outcome.is_ok(),
        "a 900 ms stall within a 3 s node timeout: {outcome:?}"
    );
}

/// Defect 7: a fair waiter whose winning round came back too late (its validity used up,
/// though the key still had a few ms to live) gave the lock back and left the queue: it lost
/// its place to the waiter behind it. It must give the lock back and stay at the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_waiter_whose_round_ran_out_of_validity_keeps_its_place() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port());
    // A long waiter lease: the slow waiter's place must not lapse while its replies crawl.
    let config = |url: String| {
        LockerConfig::new([url])
            .node_timeout(Duration::from_secs(3))
            .fair_waiter_lease(Duration::from_secs(10))
    };
    let direct = Locker::new(config(redis.url())).unwrap();
    let slow = Locker::new(config(proxy.redis_url())).unwrap();
    warm_up(&direct).await;
    warm_up(&slow).await;
    let resource = unique("fair-validity");
    let holder = direct
        .acquire(&resource, &LockOptions::new().fair(true))
        .await
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let queue = |locker: &Locker, name: &'static str| {
        let (locker, resource, order) = (locker.clone(), resource.clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let options = LockOptions::new()
                .fair(true)
                .ttl(Duration::from_secs(1))
                .wait(Duration::from_secs(8));
            let guard = locker.acquire(&resource, &options).await.unwrap();
            order.lock().unwrap().push(name);
            guard.release().await.unwrap();
        })
    };
    let first = queue(&slow, "first");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = queue(&direct, "second");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first waiter's replies now take 994 ms: its round wins the lock (1 s TTL) but comes
    // back with less than the drift allowance (12 ms) left, so it must give the lock back —
    // while the key still lives, so the waiter behind cannot have taken it.
    proxy.set(Fault::ReplyLatency(Duration::from_millis(994)));
    holder.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.set(Fault::None);
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
}
