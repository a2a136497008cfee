//! Helpers shared by the lock runtime's integration tests (real redis-server, never mocks).
//! Set-up, fault and observation tools live here, not in the test files (a test file keeps
//! only what belongs to its own scenario: a handler, a workload, a way of parking a future).
//! This module: keys, connections and lockers on the shared Redis; `nodes`: servers of a
//! test's own and lockers on them; `faults`: faults injected by command, and what a node was
//! sent or still holds. (`stress.rs`, the seeded stress run, is included by `tests/stress.rs`
//! alone.)
//!
//! Each test file is a crate of its own that includes this module and uses a part of it, so
//! unused items are allowed here.
#![allow(dead_code)]

pub mod faults;
pub mod nodes;

use fencelock::{Locker, LockerConfig};
use redis::AsyncCommands;
use std::sync::atomic::{AtomicU64, Ordering};

/// A resource name no other test of this binary uses (they share one Redis).
pub fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{name}:{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn locker(urls: &[impl AsRef<str>]) -> Locker {
    Locker::new(LockerConfig::new(
        urls.iter().map(|url| url.as_ref().to_string()),
    ))
    .expect("valid config")
}

pub async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}

/// The lock key the runtime uses for `resource` under the default prefix.
pub fn lock_key(resource: &str) -> String {
    format!("fencelock:{{{resource}}}:lock")
}

pub async fn exists(url: &str, key: &str) -> bool {
    let mut conn = connection(url).await;
    conn.exists(key).await.unwrap()
}

/// `cmdstat_evalsha` + `cmdstat_eval` calls so far: the number of script round trips.
pub async fn script_calls(url: &str) -> u64 {
    let mut conn = connection(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .map(|calls| calls.parse::<u64>().unwrap())
        .sum()
}

/// A runtime of the test's own, to stop at will (as an actix worker's stops).
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The race a lock must prevent: read a counter, yield, write it back + 1. Returns when the
/// critical section started and ended.
pub async fn racy_increment(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> (std::time::Instant, std::time::Instant) {
    let start = std::time::Instant::now();
    let value: Option<u64> = redis.get(key).await.unwrap();
    tokio::task::yield_now().await;
    let () = redis.set(key, value.unwrap_or(0) + 1).await.unwrap();
    (start, std::time::Instant::now())
}
