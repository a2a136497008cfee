//! Hung nodes: one node of five stops answering (SIGSTOP) while the others are healthy. The
//! defects pinned here: rounds, the probes of the suspect node, and a waiter's subscription
//! each waited the hung node's full timeout, every time, so one hang slowed or livelocked
//! every caller.

use crate::common::faults::held_by_someone_else;
use crate::common::nodes::{locker_with_timeout, start_nodes, warm_up};
use crate::common::unique;
use fencelock::{LockError, LockOptions};
use std::time::{Duration, Instant};

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
