//! Quorum rounds say "refused" and "lost" only on evidence, and a release reaches every node
//! that may hold the lock. Real redis-server processes; `FLUSHALL` (a node that lost the key),
//! `CLIENT PAUSE` (a node a few milliseconds late) and SIGSTOP (a node suspected hung).

mod common;

use common::faults::command;
use common::nodes::start_nodes;
use common::{exists, lock_key, unique};
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::{Fault, FaultProxy, RedisServer};
use std::time::{Duration, Instant};

/// #18.2: the lock is held on nodes 1 and 2; node 3 lost it (FLUSHALL). An extension gets
/// node 1's yes and node 3's no at once and node 2's yes 30 ms later (CLIENT PAUSE), well
/// within the per-node budget. A majority holds the lock all along: the extension must be
/// confirmed, not refused — before, the round stopped on the split and said "refused", and the
/// guard reported the lock lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_extension_with_a_late_yes_is_confirmed_not_refused() {
    let (_nodes, urls) = start_nodes(3);
    let locker = Locker::new(LockerConfig::new(urls.clone())).unwrap();
    let options = LockOptions::new().ttl(Duration::from_secs(3));
    for round in 0..5 {
        let resource = unique("split-extend");
        let guard = locker.acquire(&resource, &options).await.unwrap();
        command(&urls[2], &["FLUSHALL"]).await;
        command(&urls[1], &["CLIENT", "PAUSE", "30", "ALL"]).await;
        let extended = guard.extend(Duration::from_secs(3)).await;
        assert!(
            matches!(extended, Ok(true)),
            "round {round}: {extended:?}; a majority (nodes 1 and 2) held the lock"
        );
        assert!(!guard.is_lost(), "round {round}: reported lost while held");
        assert!(guard.release().await.unwrap());
    }
}

/// #18.7: a node suspected hung when the lock is released is skipped by the release round;
/// once it answers again the release must reach it, soon, rather than leave the key there for
/// the whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_reaches_a_node_that_was_skipped_as_suspect() {
    let (nodes, urls) = start_nodes(3);
    let locker =
        Locker::new(LockerConfig::new(urls.clone()).node_timeout(Duration::from_millis(100)))
            .unwrap();
    let resource = unique("suspect-release");
    let options = LockOptions::new().ttl(Duration::from_secs(8));
    let guard = locker.acquire(&resource, &options).await.unwrap();
    assert!(exists(&urls[2], &lock_key(&resource)).await);
    // Node 3 stops answering; a round on another resource leaves a call on it, which gets no
    // answer within the node timeout: node 3 is suspected hung.
    nodes[2].pause();
    let other = locker
        .acquire(&unique("suspect-other"), &options)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(guard.release().await.unwrap());
    nodes[2].resume();
    let deadline = Instant::now() + Duration::from_secs(3);
    while exists(&urls[2], &lock_key(&resource)).await {
        assert!(
            Instant::now() < deadline,
            "node 3 still holds the released lock 3 s later (TTL 8 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.release().await.unwrap();
}

/// #18.12: once a guard's validity has run out it stays lost, even if its key happens to
/// live on in Redis and a later extension is confirmed: the work done meanwhile was not safe.
/// (The test's clock jumps past the validity; Redis's keeps the key alive.)
#[tokio::test]
async fn a_guard_whose_validity_ran_out_stays_lost() {
    let redis = RedisServer::start();
    let locker = Locker::new(LockerConfig::new([redis.url()])).unwrap();
    let guard = locker
        .acquire(
            &unique("stays-lost"),
            &LockOptions::new().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(31)).await;
    tokio::time::resume();
    assert!(guard.is_lost());
    let extended = guard.extend(Duration::from_secs(30)).await;
    assert!(matches!(extended, Ok(false)), "{extended:?}");
    assert!(guard.is_lost(), "an extension revived a lost guard");
    assert!(guard.lost_token().is_cancelled());
}

/// #18.11: the pool's only connection goes half-open (the peer vanished without a FIN or RST).
/// A call on it times out; that must retire it, so the next call gets a fresh connection —
/// before, the timed-out connection went back to the pool and every later call on it timed out
/// too, until the kernel gave up on it (minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_call_timed_out_is_not_used_again() {
    let redis = RedisServer::start();
    let proxy = fencelock_testkit::FaultProxy::start(redis.port());
    let locker = Locker::new(
        LockerConfig::new([proxy.redis_url()])
            .pool_size(1)
            .node_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let options = LockOptions::new().wait(Duration::ZERO);
    let warm = locker
        .acquire(&unique("half-open"), &options)
        .await
        .unwrap();
    assert!(warm.release().await.unwrap());
    proxy.hang_open_connections();
    let timed_out = locker.acquire(&unique("half-open"), &options).await;
    assert!(
        matches!(timed_out, Err(fencelock::LockError::Unavailable { .. })),
        "{timed_out:?}"
    );
    for attempt in 0..3 {
        let next = locker.acquire(&unique("half-open"), &options).await;
        let guard = next.unwrap_or_else(|err| panic!("attempt {attempt} after the timeout: {err}"));
        assert!(guard.release().await.unwrap());
    }
}

/// #18.10 and review: a handoff through Redis (the waiter asks for a `min_hold`, so no
/// in-process pass-on) finds the lock on nodes 1 and 2 — node 3 lost it — with node 2's yes
/// 30 ms late. A majority held the lock all along: the handoff must go through, not stop on
/// the split and undo it (which answered `Ok(false)`, later `Unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_handoff_with_a_late_yes_goes_through() {
    let (_nodes, urls) = start_nodes(3);
    let locker = Locker::new(LockerConfig::new(urls.clone())).unwrap();
    let resource = unique("split-handoff");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(3))
        .wait(Duration::from_secs(5))
        .min_hold(Duration::from_millis(1));
    let holder = locker.acquire(&resource, &options).await.unwrap();
    let waiter = tokio::spawn({
        let (locker, resource, options) = (locker.clone(), resource.clone(), options.clone());
        async move { locker.acquire(&resource, &options).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    command(&urls[2], &["FLUSHALL"]).await;
    command(&urls[1], &["CLIENT", "PAUSE", "30", "ALL"]).await;
    let released = holder.release().await;
    assert!(matches!(released, Ok(true)), "{released:?}");
    let next = waiter.await.unwrap().expect("the waiter gets the lock");
    assert!(!next.is_lost());
    assert!(next.release().await.unwrap());
}

/// Found by the soak: a release runs in Redis, then the connection dies before the reply; the
/// retry on a fresh connection finds nothing to release. That "no" only means the first try
/// did it — before, `release()` answered `Ok(false)` ("it had expired or been taken over")
/// for a lock that was ours to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_retried_after_its_connection_died_does_not_say_not_ours() {
    use fencelock_testkit::Fault;
    let redis = RedisServer::start();
    let proxy = fencelock_testkit::FaultProxy::start(redis.port());
    let locker = Locker::new(LockerConfig::new([proxy.redis_url()])).unwrap();
    let resource = unique("release-retried");
    let guard = locker
        .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    // Requests go through at once, replies are held back: the release runs, its reply waits.
    proxy.set(Fault::ReplyLatency(Duration::from_millis(300)));
    let release = tokio::spawn(guard.release());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !exists(&redis.url(), &lock_key(&resource)).await,
        "the release ran"
    );
    proxy.reset_connections();
    proxy.set(Fault::None);
    let released = release.await.unwrap();
    assert!(
        !matches!(released, Ok(false)),
        "a release that ran was answered 'not ours'"
    );
}

/// Found by review: a take round refused by a majority (the lock held on nodes 1 and 2) but
/// answered yes by node 3 (which the holder never won) was treated as a split vote, so the
/// waiter retried every 0–3 ms, never stopping at the wait where a local handoff is received:
/// it hammered every node, and took the lock its own process handed it only at its deadline.
/// A majority's refusal is "busy": the waiter backs off and takes the handoff at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_refused_by_a_majority_is_busy_not_a_split_vote() {
    let (_nodes, urls) = start_nodes(3);
    let locker = Locker::new(LockerConfig::new(urls.clone())).unwrap();
    let resource = unique("refused-not-split");
    // Node 3 is taken by someone else for a moment: the holder wins nodes 1 and 2 only.
    command(
        &urls[2],
        &["SET", &lock_key(&resource), "foreign", "PX", "200"],
    )
    .await;
    let options = LockOptions::new()
        .ttl(Duration::from_secs(3))
        .wait(Duration::from_secs(4));
    let holder = locker.acquire(&resource, &options).await.unwrap();
    // The foreign key expires: node 3 is free, nodes 1 and 2 are the holder's.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!exists(&urls[2], &lock_key(&resource)).await);
    let waiter = {
        let (locker, resource, options) = (locker.clone(), resource.clone(), options.clone());
        tokio::spawn(async move { locker.acquire(&resource, &options).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls_before = common::script_calls(&urls[0]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = common::script_calls(&urls[0]).await - calls_before;
    assert!(
        calls < 40,
        "{calls} script calls on node 1 in 500 ms from one waiter refused by a majority"
    );
    let released = Instant::now();
    assert!(holder.release().await.unwrap());
    let taken = waiter.await.unwrap().unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(1),
        "the waiter took the lock {:?} after its process handed it over",
        released.elapsed()
    );
    assert!(taken.release().await.unwrap());
}

/// Found by review: a node that answered yes in a lost take round gets the give-back at once;
/// if that give-back went unanswered (the link to the node hung right after its yes), it was
/// never sent again, and our dead token kept the node for the whole TTL, refusing everyone
/// there. It must be resent, like an undo or a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_that_went_unanswered_is_sent_again() {
    let (nodes, urls) = start_nodes(3);
    let proxy = FaultProxy::start(nodes[2].port());
    let through_proxy = vec![urls[0].clone(), urls[1].clone(), proxy.redis_url()];
    let locker =
        Locker::new(LockerConfig::new(through_proxy).node_timeout(Duration::from_millis(300)))
            .unwrap();
    let resource = unique("give-back");
    let key = lock_key(&resource);
    // Nodes 1 and 2 are someone else's, and answer late; node 3 is free and answers at once.
    for url in &urls[..2] {
        command(url, &["SET", &key, "foreign", "PX", "10000"]).await;
    }
    for url in &urls[..2] {
        command(url, &["CLIENT", "PAUSE", "150", "ALL"]).await;
    }
    let attempt = {
        let (locker, resource) = (locker.clone(), resource.clone());
        tokio::spawn(async move {
            let options = LockOptions::new()
                .ttl(Duration::from_secs(6))
                .wait(Duration::ZERO);
            locker.acquire(&resource, &options).await
        })
    };
    // Node 3 said yes; its link hangs before the round is lost (nodes 1 and 2 refuse at 150 ms).
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(exists(&urls[2], &key).await, "node 3 said yes");
    proxy.hang_open_connections();
    assert!(attempt.await.unwrap().is_err(), "the round must be lost");
    let lost = Instant::now();
    while exists(&urls[2], &key).await {
        assert!(
            lost.elapsed() < Duration::from_secs(2),
            "node 3 still holds the lost round's token 2 s later (TTL 6 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Found by review: a waiter whose attempt ran into an outage answered `Unavailable` though a
/// holder of its own process had handed it the lock meanwhile (a pass-on needs no Redis); the
/// lock then went on to nobody. It must take what it was handed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_handed_the_lock_during_an_outage_takes_it() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port());
    let locker = Locker::new(
        LockerConfig::new([proxy.redis_url()])
            .node_timeout(Duration::from_millis(400))
            .retry_min_delay(Duration::from_millis(5))
            .retry_max_delay(Duration::from_millis(20)),
    )
    .unwrap();
    let resource = unique("handed-in-outage");
    let holder_options = LockOptions::new().ttl(Duration::from_millis(3200));
    let waiter_options = LockOptions::new()
        .ttl(Duration::from_secs(3))
        .wait(Duration::from_secs(5));
    let holder = locker.acquire(&resource, &holder_options).await.unwrap();
    let waiter = {
        let (locker, resource) = (locker.clone(), resource.clone());
        tokio::spawn(async move { locker.acquire(&resource, &waiter_options).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The link hangs: the waiter's next attempt (within 20 ms) waits 400 ms for nothing, and
    // meanwhile the holder passes the lock on, without a round trip.
    proxy.set(Fault::Blackhole);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let releasing = tokio::spawn(holder.release());
    let taken = waiter.await.unwrap();
    proxy.set(Fault::None);
    let taken = taken.expect("the waiter was handed the lock; it must not say Redis is down");
    let _ = releasing.await.unwrap();
    let _ = taken.release().await;
}
