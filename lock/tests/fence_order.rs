//! Fences never go backwards for a resource — at the highest `max_local_handoffs` the crate
//! accepts, at the highest rate this machine reaches, across a node that loses its data
//! (`FLUSHALL`, or killed and started again empty). Real redis-server processes.
//!
//! Through the public API a debug build on two cores reaches a couple of thousand holds a
//! second, far below what makes a fence counter outrun the server clock; the script itself is
//! driven at Redis's own top rate by `scripts::fence_rate` (a unit test, pipelined EVALSHA).

mod common;

use common::faults::command;
use common::unique;
use fencelock::{LockOptions, Locker, LockerConfig, MAX_LOCAL_HANDOFFS_LIMIT};
use fencelock_testkit::RedisServer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the hot loop runs: long enough for a counter that outruns the clock to build up
/// a lead of many milliseconds (the lead grows with every round trip).
const HOT_FOR: Duration = Duration::from_secs(3);

fn hot_locker(url: &str) -> Arc<Locker> {
    Arc::new(
        Locker::new(
            LockerConfig::new([url.to_string()]).max_local_handoffs(MAX_LOCAL_HANDOFFS_LIMIT),
        )
        .unwrap(),
    )
}

/// 4 lockers × 4 tasks take and give back one lock as fast as they can, each hold handed on
/// through Redis (`min_hold` forbids the in-process pass-on, so every handoff is a `HANDOFF`
/// round trip reserving a whole block of fences). Returns the highest fence seen and how many
/// holds there were.
async fn hammer(url: &str, resource: &str) -> (u64, u64) {
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(20))
        .min_hold(Duration::from_micros(1));
    let highest = Arc::new(AtomicU64::new(0));
    let holds = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + HOT_FOR;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let locker = hot_locker(url);
        for _ in 0..4 {
            let (locker, options, resource) =
                (Arc::clone(&locker), options.clone(), resource.to_string());
            let (highest, holds) = (Arc::clone(&highest), Arc::clone(&holds));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let guard = locker.acquire(&resource, &options).await.unwrap();
                    let fence = guard.fence();
                    let previous = highest.fetch_max(fence, Ordering::SeqCst);
                    assert!(previous < fence, "fence {fence} after {previous}");
                    holds.fetch_add(1, Ordering::Relaxed);
                    assert!(guard.release().await.unwrap());
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    (
        highest.load(Ordering::SeqCst),
        holds.load(Ordering::Relaxed),
    )
}

async fn next_fence(url: &str, resource: &str) -> u64 {
    let locker = hot_locker(url);
    let guard = locker
        .acquire(resource, &LockOptions::new().wait(Duration::from_secs(10)))
        .await
        .unwrap();
    let fence = guard.fence();
    guard.release().await.unwrap();
    fence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_keep_rising_after_the_node_loses_its_data_at_the_highest_reserve_and_rate() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let resource = unique("fence-rate");

    let (highest, holds) = hammer(&url, &resource).await;
    eprintln!(
        "{holds} holds in {HOT_FOR:?} ({:.0}/s), max_local_handoffs {MAX_LOCAL_HANDOFFS_LIMIT}",
        holds as f64 / HOT_FOR.as_secs_f64()
    );
    command(&url, &["FLUSHALL"]).await;
    let after_flush = next_fence(&url, &resource).await;
    assert!(
        after_flush > highest,
        "after FLUSHALL the next fence {after_flush} is not above {highest}, handed out before"
    );

    let (highest, _) = hammer(&url, &resource).await;
    redis.restart();
    let after_restart = next_fence(&url, &resource).await;
    assert!(
        after_restart > highest,
        "after a restart empty the next fence {after_restart} is not above {highest}"
    );
}
