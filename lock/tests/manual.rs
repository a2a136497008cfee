//! Calls made by hand: `Guard::extend`, `Locker::inspect` and the operator's
//! `Locker::force_unlock`, single node and quorum.

mod common;

use common::nodes::start_nodes;
use common::{connection, lock_key, locker, unique};
use fencelock::{LockOptions, Locker};
use fencelock_testkit::shared_redis;
use redis::AsyncCommands;
use std::time::Duration;

async fn pttl(url: &str, resource: &str) -> i64 {
    connection(url)
        .await
        .pttl(lock_key(resource))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_lengthens_never_shortens_and_moves_the_validity() {
    let url = shared_redis().url();
    let locker = locker(&[&url]);
    let resource = unique("extend");
    let guard = locker
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    let before = guard.valid_until();
    assert!(guard.extend(Duration::from_secs(30)).await.unwrap());
    assert!(
        pttl(&url, &resource).await > 20_000,
        "the key lives ~30 s now"
    );
    assert!(guard.valid_until() > before + Duration::from_secs(20));
    // Asking for less than it has left changes nothing.
    assert!(guard.extend(Duration::from_secs(1)).await.unwrap());
    assert!(pttl(&url, &resource).await > 20_000, "never shortened");
    assert!(
        guard.extend(Duration::from_millis(1)).await.is_err(),
        "under 10 ms is refused"
    );
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_reports_the_holder_state_without_touching_it() {
    let url = shared_redis().url();
    let locker = locker(&[&url]);
    let resource = unique("inspect");
    let free = locker.inspect(&resource).await.unwrap();
    assert!(
        !free.locked && free.remaining.is_none() && free.last_fence.is_none(),
        "{free:?}"
    );

    let guard = locker
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let held = locker.inspect(&resource).await.unwrap();
    assert!(held.locked);
    let remaining = held.remaining.unwrap();
    assert!(
        remaining > Duration::from_secs(4) && remaining <= Duration::from_secs(5),
        "{remaining:?}"
    );
    let last_fence = held.last_fence.unwrap();
    assert!(
        last_fence >= guard.fence(),
        "{last_fence} vs {}",
        guard.fence()
    );
    assert!(
        guard.release().await.unwrap(),
        "inspect did not disturb the holder"
    );
    let after = locker.inspect(&resource).await.unwrap();
    assert!(!after.locked);
    assert_eq!(
        after.last_fence, held.last_fence,
        "the counter outlives the lock"
    );
    let next = locker
        .acquire(&resource, &LockOptions::new())
        .await
        .unwrap();
    assert!(next.fence() > last_fence, "the next holder is above it");
    next.release().await.unwrap();
}

/// The operator removes a lock: a waiter gets it at once (woken, not by its timer), with a
/// greater fence; the evicted guard's next extension says it is no longer ours.
#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_frees_the_lock_for_waiters_and_the_evicted_holder_finds_out() {
    let url = shared_redis().url();
    let resource = unique("force");
    let holder = locker(&[&url]);
    let guard = holder
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    // A waiter that hears nothing would sleep 30 s: only the unlock's message can wake it.
    let mut quiet = fencelock::LockerConfig::new([url.clone()]);
    quiet.retry_min_delay = Duration::from_secs(30);
    quiet.retry_max_delay = Duration::from_secs(30);
    let waiter_locker = Locker::new(quiet).unwrap();
    let waiter = {
        let resource = resource.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let guard = waiter_locker
                .acquire(&resource, &LockOptions::new().wait(Duration::from_secs(30)))
                .await
                .unwrap();
            (
                guard.fence(),
                started.elapsed(),
                guard.release().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let operator = locker(&[&url]);
    assert!(
        operator.force_unlock(&resource).await.unwrap(),
        "a lock was there"
    );
    let (fence, waited, _) = waiter.await.unwrap();
    assert!(
        fence > guard.fence(),
        "the next holder is fenced above the evicted one"
    );
    assert!(
        waited < Duration::from_secs(5),
        "woken by the unlock's message, not a 30 s timer or the 60 s TTL: {waited:?}"
    );
    assert!(
        !guard.extend(Duration::from_secs(5)).await.unwrap(),
        "no longer ours"
    );
    assert!(guard.is_lost());
    assert!(!guard.release().await.unwrap());
    assert!(
        !operator.force_unlock(&resource).await.unwrap(),
        "nothing left to remove"
    );
}

/// Quorum mode: inspect needs a majority; with one of three nodes down it still answers, with
/// two down it is `Unavailable`; `extend` and `force_unlock` act on the majority.
#[tokio::test(flavor = "multi_thread")]
async fn in_quorum_mode_they_answer_for_the_majority() {
    let (mut servers, urls) = start_nodes(3);
    let locker: Locker = locker(&urls);
    let resource = unique("quorum-manual");
    let guard = locker
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(guard.extend(Duration::from_secs(30)).await.unwrap());
    servers[0].kill();
    let state = locker.inspect(&resource).await.unwrap();
    assert!(
        state.locked && state.remaining.unwrap() > Duration::from_secs(20),
        "{state:?}"
    );
    assert!(state.last_fence.unwrap() >= guard.fence());
    assert!(locker.force_unlock(&resource).await.unwrap());
    assert!(!locker.inspect(&resource).await.unwrap().locked);
    servers[1].kill();
    assert!(
        locker.inspect(&resource).await.is_err(),
        "one node of three cannot answer"
    );
    drop(guard);
}

/// #18.9, refuted: `force_unlock` says `Ok` only when a majority is known clear of the holder
/// — nodes that answered the inspection with no holder, or answered the unlock. Here node 3 is
/// silent throughout and node 2 answers the inspection (held) but dies before the unlock: only
/// node 1 is known clear, a minority, so the answer is `Unavailable`, never `Ok(true)`.
#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_with_only_a_minority_known_clear_is_unavailable() {
    let (mut servers, urls) = start_nodes(3);
    let holder: Locker = locker(&urls);
    let resource = unique("force-minority");
    let guard = holder
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    // A fresh operator: node 3 is not yet suspected, so its inspection waits the node timeout
    // for an answer, and node 2 dies in that time, after answering its own.
    let operator = Locker::new(
        fencelock::LockerConfig::new(urls.clone()).node_timeout(Duration::from_millis(600)),
    )
    .unwrap();
    servers[2].pause();
    let forcing = {
        let (operator, resource) = (operator.clone(), resource.clone());
        tokio::spawn(async move { operator.force_unlock(&resource).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    servers[1].kill();
    let outcome = forcing.await.unwrap();
    assert!(
        matches!(outcome, Err(fencelock::LockError::Unavailable { .. })),
        "only node 1 is known clear: {outcome:?}"
    );
    servers[2].resume();
    drop(guard);
}
