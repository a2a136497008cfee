//! One test per defect found in the runtime under faults (see the commit that fixed each).
//! Real redis-server processes, `CLIENT PAUSE` (commands queue, then run), SIGSTOP (a hung
//! node) and MONITOR; nothing is mocked. Each test starts its own servers: pausing a shared
//! one would stall the other tests.

mod common;

use common::{connection, lock_key, unique};
use fencelock::{distributed_lock, LockError, LockOptions, Locker, LockerConfig};
use fencelock_testkit::{Fault, FaultProxy, RedisServer};
use redis::AsyncCommands;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn locker_with_timeout(urls: &[String], node_timeout: Duration) -> Locker {
    Locker::new(LockerConfig::new(urls.to_vec()).node_timeout(node_timeout)).unwrap()
}

/// A redis-server of the test's own and a locker on it with `node_timeout`.
fn single_node(node_timeout: Duration) -> (RedisServer, String, Locker) {
    let redis = RedisServer::start();
    let url = redis.url();
    let locker = locker_with_timeout(std::slice::from_ref(&url), node_timeout);
    (redis, url, locker)
}

/// `count` redis-servers of the test's own, and their URLs.
fn start_nodes(count: usize) -> (Vec<RedisServer>, Vec<String>) {
    let nodes: Vec<RedisServer> = (0..count).map(|_| RedisServer::start()).collect();
    let urls = nodes.iter().map(RedisServer::url).collect();
    (nodes, urls)
}

/// Another owner holds `resource`'s lock on the nodes at `urls` for `px_ms`.
async fn held_by_someone_else(urls: &[String], resource: &str, px_ms: u64) {
    for url in urls {
        let mut conn = connection(url).await;
        let () = redis::cmd("SET")
            .arg(lock_key(resource))
            .arg("someone-else")
            .arg("PX")
            .arg(px_ms)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// `CLIENT PAUSE ms ALL` on the server at `url`: every client's commands queue until it ends.
async fn pause_clients(url: &str, ms: u64) {
    let mut conn = connection(url).await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// One lock taken and given back, so the locker has pooled connections before a fault: the
/// commands under test then really reach Redis (a connection being made during a pause would
/// stall in its handshake, before any lock command is sent).
/// (Fair locks run another script, which Redis must have loaded before the pause too.)
async fn warm_up(locker: &Locker) {
    let single = locker.mode() == fencelock::Mode::Single;
    for fair in [false, single] {
        let guard = locker
            .acquire(&unique("warm-up"), &LockOptions::new().fair(fair))
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
}

/// Polls until `key` is gone, for at most `within`; returns whether it went.
async fn gone_within(url: &str, key: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut conn = connection(url).await;
    loop {
        let exists: bool = conn.exists(key).await.unwrap();
        if !exists {
            return true;
        }
        if Instant::now() >= deadline {
            let pttl: i64 = conn.pttl(key).await.unwrap();
            eprintln!("{key} still there, PTTL {pttl} ms");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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

/// Defect 2: an acquire that timed out with its command still queued left the lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_acquire_is_undone_when_its_command_lands() {
    let (_redis, url, locker) = single_node(Duration::from_millis(100));
    let resource = unique("timed-out-acquire");
    warm_up(&locker).await;
    pause_clients(&url, 300).await;
    let outcome = locker
        .try_acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(8)))
        .await;
    assert!(
        matches!(outcome, Err(LockError::Unavailable { .. })),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        gone_within(&url, &lock_key(&resource), Duration::from_millis(300)).await,
        "the timed-out acquisition's key outlived it"
    );
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

/// Defect 5: one hung node (of five) cost every acquisition its full timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_node_of_five_costs_no_timeouts() {
    let (nodes, urls) = start_nodes(5);
    let node_timeout = Duration::from_secs(3);
    let locker = locker_with_timeout(&urls, node_timeout);
    let resource = unique("hung-node");
    let options = LockOptions::new().ttl(Duration::from_secs(60));
    nodes[2].pause();
    let started = Instant::now();
    for _ in 0..20 {
        let guard = locker.acquire(&resource, &options).await.unwrap();
        assert!(guard.release().await.unwrap());
    }
    let took = started.elapsed();
    nodes[2].resume();
    assert!(
        took < node_timeout,
        "20 cycles took {took:?}: rounds waited for the hung node"
    );
}

/// Defect 5 (found by the hung-node benchmark): a round that carried the periodic probe of a
/// node suspected hung waited its full timeout whenever the live nodes split 2–2, holding its
/// two nodes all the while; under contention that livelocked the hot key for seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_a_hung_node_never_holds_a_round() {
    let (nodes, urls) = start_nodes(5);
    let node_timeout = Duration::from_secs(1);
    let locker = locker_with_timeout(&urls, node_timeout);
    let resource = unique("probe-split");
    warm_up(&locker).await;
    // Someone else holds nodes 3 and 4: our rounds win 0 and 1, lose 3 and 4, and only the hung
    // node 2 could decide them.
    held_by_someone_else(&urls[3..], &resource, 60_000).await;
    nodes[2].pause();
    let options = LockOptions::new()
        .ttl(Duration::from_secs(30))
        .wait(Duration::ZERO);
    // The first round meets the hang and marks node 2 suspect.
    let _ = locker.acquire(&resource, &options).await;
    let started = Instant::now();
    for _ in 0..10 {
        // Past the probe interval: each round is due to probe node 2.
        tokio::time::sleep(Duration::from_millis(120)).await;
        let outcome = locker.acquire(&resource, &options).await;
        assert!(
            matches!(outcome, Err(LockError::Busy { .. })),
            "{outcome:?}"
        );
    }
    let waited = started.elapsed() - Duration::from_millis(1200);
    nodes[2].resume();
    assert!(
        waited < node_timeout,
        "10 rounds spent {waited:?} waiting: probes of the hung node held them"
    );
}

/// Defect 5: a waiter subscribing to releases waited for every node to confirm, so a hung node
/// (not yet known as such) cost each new waiter the whole node timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_does_not_wait_for_a_hung_node_to_confirm_its_subscription() {
    let (nodes, urls) = start_nodes(5);
    let node_timeout = Duration::from_secs(2);
    let (holder, waiter) = (
        locker_with_timeout(&urls, node_timeout),
        locker_with_timeout(&urls, node_timeout),
    );
    let options = LockOptions::new()
        .ttl(Duration::from_secs(30))
        .wait(Duration::from_secs(10));
    // Hold, wait, release: measures how long the waiter took after the release.
    let handover = |resource: String| {
        let (holder, waiter, options) = (holder.clone(), waiter.clone(), options.clone());
        async move {
            let guard = holder.acquire(&resource, &options).await.unwrap();
            let waiting = tokio::spawn(async move {
                let guard = waiter.acquire(&resource, &options).await.unwrap();
                let acquired = Instant::now();
                guard.release().await.unwrap();
                acquired
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let released = Instant::now();
            guard.release().await.unwrap();
            waiting.await.unwrap() - released
        }
    };
    // Once healthy, so that every pub/sub connection is up before the hang.
    handover(unique("warm")).await;
    nodes[2].pause();
    let took = handover(unique("hung-subscribe")).await;
    nodes[2].resume();
    assert!(
        took < node_timeout / 2,
        "the waiter took {took:?} after the release: it waited on the hung node's SUBSCRIBE"
    );
}

/// Defect 5: when hung nodes resumed, the acquisitions queued on them ran and left keys that
/// nobody owned for a whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_land_after_a_hang_leave_no_lock_behind() {
    let (nodes, urls) = start_nodes(5);
    let locker = locker_with_timeout(&urls, Duration::from_millis(200));
    let resource = unique("resumed-nodes");
    warm_up(&locker).await;
    // The two healthy nodes are held by someone else for a moment, so our attempts win nothing
    // there and have nothing to give back: only the hung nodes can end up with our key.
    held_by_someone_else(&urls[3..], &resource, 300).await;
    for node in &nodes[..3] {
        node.pause();
    }
    let options = LockOptions::new()
        .ttl(Duration::from_secs(8))
        .wait(Duration::ZERO);
    for _ in 0..3 {
        let outcome = locker.acquire(&resource, &options).await;
        assert!(
            matches!(outcome, Err(LockError::Unavailable { .. })),
            "{outcome:?}"
        );
    }
    for node in &nodes[..3] {
        node.resume();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for url in &urls {
        assert!(
            gone_within(url, &lock_key(&resource), Duration::from_millis(500)).await,
            "a node that resumed kept a lock nobody holds"
        );
    }
}

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

/// Defect 6: a release with `min_hold` left the holder's token in place, so an extension in
/// flight could re-arm the full TTL. The key must stay, owned by nobody.
#[tokio::test]
async fn a_min_hold_release_leaves_a_key_nobody_owns() {
    let (_redis, url, locker) = single_node(Duration::from_secs(1));
    let resource = unique("min-hold-owner");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .min_hold(Duration::from_secs(2));
    let guard = locker.acquire(&resource, &options).await.unwrap();
    let mut conn = connection(&url).await;
    let token: String = conn.get(lock_key(&resource)).await.unwrap();
    assert!(guard.release().await.unwrap());
    let after: Option<String> = conn.get(lock_key(&resource)).await.unwrap();
    assert!(after.is_some(), "min_hold must keep the key");
    assert_ne!(
        after.as_deref(),
        Some(token.as_str()),
        "the holder still owns it"
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

/// Defect 8: fence counters never expired: one key per resource ever locked.
#[tokio::test]
async fn fence_counters_expire() {
    let (_redis, url, locker) = single_node(Duration::from_secs(1));
    for n in 0..50 {
        let guard = locker
            .acquire(&format!("fence-expiry:{n}"), &LockOptions::new())
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    let mut conn = connection(&url).await;
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let pttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(pttl > 0, "{key} never expires (PTTL {pttl})");
    }
}

/// Defect 9: quorum mode reused one token across attempts, so a delayed undo of one attempt
/// could delete a later attempt's key. Every attempt must carry a token of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quorum_attempt_has_a_token_of_its_own() {
    let (nodes, urls) = start_nodes(3);
    let resource = unique("attempt-tokens");
    // Someone else holds nodes 1 and 2 for 400 ms: our attempts win node 0 alone, give it back
    // and try again, until the foreign hold expires.
    held_by_someone_else(&urls[1..], &resource, 400).await;
    let locker = locker_with_timeout(&urls, Duration::from_secs(1));
    // Scripts loaded first: a NOSCRIPT reply makes redis-rs send the same call again.
    warm_up(&locker).await;
    let monitor = monitor(nodes[0].port());
    let guard = locker
        .acquire(&resource, &LockOptions::new().wait(Duration::from_secs(3)))
        .await
        .unwrap();
    guard.release().await.unwrap();
    let lines = monitor.stop();
    let key = lock_key(&resource);
    // Acquisition calls carry `"<lock key>" "<fence key>" "<token>" "<ttl>"`.
    let tokens: Vec<String> = lines
        .iter()
        .filter(|line| line.contains("\"EVALSHA\"") && line.contains("\"2\""))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('"').collect();
            let at = fields.iter().position(|field| *field == key)?;
            Some(fields.get(at + 4)?.to_string())
        })
        .collect();
    assert!(
        tokens.len() >= 2,
        "expected several attempts, saw {tokens:?}"
    );
    let mut unique_tokens = tokens.clone();
    unique_tokens.sort();
    unique_tokens.dedup();
    assert_eq!(
        unique_tokens.len(),
        tokens.len(),
        "attempts shared tokens: {tokens:?}"
    );
}

/// Redis MONITOR on a thread of its own; `stop` returns the lines seen.
struct Monitor {
    stream: std::net::TcpStream,
    lines: std::thread::JoinHandle<Vec<String>>,
}

fn monitor(port: u16) -> Monitor {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"MONITOR\r\n").unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    let lines = std::thread::spawn(move || reader.lines().map_while(Result::ok).collect());
    // Wait for +OK so that nothing sent after this returns is missed.
    std::thread::sleep(Duration::from_millis(50));
    Monitor { stream, lines }
}

impl Monitor {
    fn stop(self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(50));
        self.stream.shutdown(std::net::Shutdown::Both).unwrap();
        self.lines.join().unwrap()
    }
}
