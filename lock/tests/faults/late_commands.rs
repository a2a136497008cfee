//! Commands that land after their caller gave up: an acquisition that timed out, or that was
//! queued on a hung node, still runs when Redis gets to it. The defects pinned here: its key
//! stayed for a whole TTL with nobody holding it, or the delayed undo of one attempt deleted a
//! later attempt's key (one token shared by every attempt).

use crate::common::faults::{gone_within, held_by_someone_else, monitor, pause_clients};
use crate::common::nodes::{locker_with_timeout, single_node, start_nodes, warm_up};
use crate::common::{lock_key, unique};
use fencelock::{LockError, LockOptions};
use std::time::Duration;

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
