//! Quorum (Redlock) mode over 3 and 5 independent redis-server processes, with node faults.

mod common;

use common::nodes::start_nodes;
use common::{connection, lock_key, locker, racy_increment, unique};
use fencelock::{LockError, LockOptions, Locker};
use fencelock_testkit::shared_redis;
use redis::AsyncCommands;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Three lockers hammer one resource while, after `kill_after` holds, one node is killed.
/// Checks exclusion (no lost increment, no overlap) and fence order, and that no call failed.
async fn stress_through_a_node_kill(node_count: usize) {
    let (nodes, urls) = start_nodes(node_count);
    let nodes = Arc::new(Mutex::new(nodes));
    let resource = unique("quorum-stress");
    let counter_key = format!("test:{resource}:counter");
    let counter_url = shared_redis().url();
    let lockers: Vec<Locker> = (0..3).map(|_| locker(&urls)).collect();
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(30));
    let holds = Arc::new(AtomicUsize::new(0));
    let records = Arc::new(Mutex::new(Vec::new()));
    let (tasks_per_locker, iterations) = (8, 25);
    let kill_after = 3 * tasks_per_locker * iterations / 3;

    let mut tasks = Vec::new();
    for locker in &lockers {
        for _ in 0..tasks_per_locker {
            let (locker, resource, counter_key) =
                (locker.clone(), resource.clone(), counter_key.clone());
            let (options, counter_url, holds, records, nodes) = (
                options.clone(),
                counter_url.clone(),
                Arc::clone(&holds),
                Arc::clone(&records),
                Arc::clone(&nodes),
            );
            tasks.push(tokio::spawn(async move {
                let mut redis = connection(&counter_url).await;
                for _ in 0..iterations {
                    let guard = locker
                        .acquire(&resource, &options)
                        .await
                        .expect("acquire with one node down");
                    let (start, end) = racy_increment(&mut redis, &counter_key).await;
                    records.lock().unwrap().push((start, end, guard.fence()));
                    if holds.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                        // Kill node 0 while this task still holds the lock.
                        tokio::task::block_in_place(|| nodes.lock().unwrap()[0].kill());
                    }
                    guard.release().await.expect("release with one node down");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task failed");
    }
    assert!(!nodes.lock().unwrap()[0].is_running());
    let expected = 3 * tasks_per_locker * iterations;
    let mut redis = connection(&counter_url).await;
    let counter: usize = redis.get(&counter_key).await.unwrap();
    assert_eq!(counter, expected, "lost increments");
    let mut records = records.lock().unwrap().clone();
    records.sort_by_key(|record| record.0);
    for pair in records.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "holds overlapped: {pair:?}");
        assert!(pair[1].2 > pair[0].2, "fences not increasing: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_one_node_dying_mid_run() {
    stress_through_a_node_kill(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_survive_one_node_dying_mid_run() {
    stress_through_a_node_kill(5).await;
}

async fn majority_down_is_unavailable_and_leaves_no_keys(node_count: usize) {
    let (mut nodes, urls) = start_nodes(node_count);
    let locker = locker(&urls);
    let resource = unique("majority-down");
    for node in nodes.iter_mut().take(node_count / 2 + 1) {
        node.kill();
    }
    let started = Instant::now();
    let err = locker
        .acquire(&resource, &LockOptions::new().wait(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    for survivor in nodes.iter().filter(|node| node.is_running()) {
        let mut conn = connection(&survivor.url()).await;
        let lock: Option<String> = conn.get(lock_key(&resource)).await.unwrap();
        assert_eq!(
            lock,
            None,
            "partial acquisition left behind on {}",
            survivor.url()
        );
    }
    let health = locker.health().await;
    assert_eq!(
        (health.up, health.quorum),
        (node_count - (node_count / 2 + 1), false)
    );
}

#[tokio::test]
async fn three_nodes_with_two_down_are_unavailable() {
    majority_down_is_unavailable_and_leaves_no_keys(3).await;
}

#[tokio::test]
async fn five_nodes_with_three_down_are_unavailable() {
    majority_down_is_unavailable_and_leaves_no_keys(5).await;
}

#[tokio::test]
async fn fences_stay_increasing_across_node_restarts() {
    let (mut nodes, urls) = start_nodes(3);
    let locker = locker(&urls);
    let options = LockOptions::new().wait(Duration::from_secs(2));
    let mut last = 0;
    // Restart each node in turn (it comes back empty: persistence is off), taking locks between.
    for round in 0..6 {
        for _ in 0..3 {
            let guard = locker.acquire("restarts", &options).await.expect("acquire");
            assert!(
                guard.fence() > last,
                "round {round}: {} <= {last}",
                guard.fence()
            );
            last = guard.fence();
            guard.release().await.unwrap();
        }
        nodes[round % 3].restart();
    }
    assert_eq!(locker.health().await.up, 3);
}

#[tokio::test]
async fn quorum_lock_excludes_and_releases_on_all_nodes() {
    let (_nodes, urls) = start_nodes(3);
    let (first, second) = (locker(&urls), locker(&urls));
    let guard = first.acquire("q", &LockOptions::new()).await.unwrap();
    assert!(matches!(
        second.try_acquire("q", &LockOptions::new()).await,
        Err(LockError::Busy { .. })
    ));
    assert!(guard.release().await.unwrap());
    for url in &urls {
        let mut conn = connection(url).await;
        let exists: bool = conn.exists(lock_key("q")).await.unwrap();
        assert!(!exists, "release left the key on {url}");
    }
    second
        .try_acquire("q", &LockOptions::new())
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}
