//! The lock runtime's benchmark: `cargo bench -p fencelock` (or `cargo xtask bench`).
//!
//! Starts its own redis-server processes on loopback and prints one JSON object per line:
//! - `hot`: one resource, 32 tasks over 3 lockers; the hold reads a Redis counter and writes it
//!   back + 1 (two round trips). Ops/s, acquire-wait p50/p99, lost updates (must be 0).
//! - `uncontended`: acquire + release of distinct resources, one task: ops/s and script calls
//!   (= round trips) per cycle and node.
//! - `handoff_local` / `handoff_remote`: release → next holder latency, with the waiter in the
//!   same locker (direct handoff) or another one (pub/sub wake-up).
//! - the same in quorum mode over 3 nodes;
//! - `hot` over 5 nodes, healthy (`quorum5`) and with one node hung by SIGSTOP: 2 s from the
//!   moment it hangs (`quorum5_hang_onset`, each locker notices the hang after one node
//!   timeout), then the steady state (`quorum5_one_hung`): what a hung minority costs.
//!
//! - `hot_rslock`: the same shape with rslock (the fastest peer we measured), retry delays of
//!   10 ms and 200 ms (its default), for a side-by-side comparison in one run.
//!
//! The single-node `hot` runs (ours and rslock's) keep the counter in the lock's own Redis, as
//! an application with one Redis would; quorum runs keep it in a separate one.
//!
//! `BENCH_SECONDS` sets the hot run's length (default 10); `BENCH_CONFIRM_PASS_ON=0` turns the
//! pass-on confirmation off; `BENCH_MAX_LOCAL_HANDOFFS` and
//! `BENCH_YIELD_WINDOW_US` override those locker settings. Arguments filter the runs by
//! `bench/mode` substring, as other bench harnesses do: `cargo xtask bench hot/single`.

// The integration tests' Redis helpers (the bench is one more target of this crate).
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/cost.rs"]
mod cost;

use common::connection;
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use futures_util::future::join_all;
use redis::AsyncCommands;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    // `cargo bench` passes `--bench`; everything else is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let wanted = |bench: &str, mode: &str| {
        let name = format!("{bench}/{mode}");
        filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
    };
    let single = vec![RedisServer::start()];
    let quorum: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let counter = RedisServer::start();
    let run_for = Duration::from_secs(seconds);
    for (mode, nodes) in [("single", &single), ("quorum3", &quorum)] {
        let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
        let counter_url = if mode == "single" {
            urls[0].clone()
        } else {
            counter.url()
        };
        if wanted("hot", mode) {
            hot(mode, &urls, &counter_url, run_for).await;
        }
        for delay_ms in [10, 200] {
            if wanted("hot_rslock", &format!("{mode}_{delay_ms}ms")) {
                hot_rslock(
                    mode,
                    &urls,
                    &counter_url,
                    Duration::from_millis(delay_ms),
                    run_for,
                )
                .await;
            }
        }
        if wanted("uncontended", mode) {
            uncontended(mode, &urls).await;
        }
        if wanted("handoff_local", mode) {
            handoff(mode, &urls, true).await;
        }
        if wanted("handoff_remote", mode) {
            handoff(mode, &urls, false).await;
        }
    }
    // The cost of more work: many hot resources, memory, subscriptions (one node). The churn of
    // a million resources takes minutes: only when asked for (`cost/churn`).
    let url = single[0].url();
    for resources in [1, 100, 10_000] {
        if wanted("cost", &format!("spread_{resources}")) {
            cost::spread(&url, resources, run_for).await;
        }
    }
    if wanted("cost", "memory") {
        cost::memory(&url, 10_000).await;
    }
    for waiting in [1, 100, 1_000] {
        if wanted("cost", &format!("subscriptions_{waiting}")) {
            cost::subscriptions(&url, waiting).await;
        }
    }
    if filters.iter().any(|filter| filter.contains("churn")) {
        let count = std::env::var("BENCH_CHURN")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(1_000_000);
        cost::churn(&url, count).await;
    }
    if wanted("hot", "quorum5") || wanted("hot", "quorum5_one_hung") {
        let five: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
        let urls: Vec<String> = five.iter().map(RedisServer::url).collect();
        let run_for = Duration::from_secs(seconds);
        hot("quorum5", &urls, &counter.url(), run_for).await;
        five[2].pause();
        // The onset (each locker notices the hang after one node timeout), then the steady
        // state with the same lockers.
        let lockers: Vec<Locker> = (0..3).map(|_| locker(&urls)).collect();
        let onset = Duration::from_secs(2);
        let over = (lockers.as_slice(), urls.as_slice());
        hot_with("quorum5_hang_onset", over, &counter.url(), onset).await;
        hot_with("quorum5_one_hung", over, &counter.url(), run_for).await;
        five[2].resume();
    }
}

fn locker(urls: &[String]) -> Locker {
    let mut config = LockerConfig::new(urls.iter().cloned());
    if let Some(handoffs) = std::env::var("BENCH_MAX_LOCAL_HANDOFFS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.max_local_handoffs(handoffs);
    }
    if let Some(micros) = std::env::var("BENCH_YIELD_WINDOW_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.yield_window(Duration::from_micros(micros));
    }
    if std::env::var("BENCH_CONFIRM_PASS_ON").is_ok_and(|v| v == "0") {
        config = config.confirm_pass_on(false);
    }
    Locker::new(config).expect("config")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn hot(mode: &str, urls: &[String], counter_url: &str, run_for: Duration) {
    let lockers: Vec<Locker> = (0..3).map(|_| locker(urls)).collect();
    hot_with(mode, (&lockers, urls), counter_url, run_for).await;
}

/// The hot run with the given lockers (what they learned, e.g. that a node hangs, carries over).
async fn hot_with(
    mode: &str,
    (lockers, nodes): (&[Locker], &[String]),
    counter_url: &str,
    run_for: Duration,
) {
    const TASKS: usize = 32;
    let resource = format!("bench-hot-{mode}");
    let counter_key = format!("bench:{mode}:counter");
    connection(counter_url)
        .await
        .del::<_, ()>(&counter_key)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(30));
    let commands_before = commands_processed(nodes).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let locker = lockers[task % lockers.len()].clone();
        let (resource, counter_key, options, stop) = (
            resource.clone(),
            counter_key.clone(),
            options.clone(),
            Arc::clone(&stop),
        );
        let counter_url = counter_url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut redis = connection(&counter_url).await;
            let mut waits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let guard = locker.acquire(&resource, &options).await.expect("acquire");
                waits.push(asked.elapsed());
                count_once(&mut redis, &counter_key).await;
                guard.release().await.expect("release");
            }
            waits
        }));
    }
    let waits = stop_after(run_for, &stop, tasks).await;
    let elapsed = started.elapsed();
    let commands = commands_processed(nodes).await - commands_before;
    let hot = Hot {
        waits,
        elapsed,
        commands,
    };
    report_hot("hot", mode, hot, counter_url, &counter_key).await;
}

/// [`hot_with`] with rslock 0.10: three `LockManager`s (as three lockers), 32 tasks, the same
/// hold. rslock retries a busy lock after `retry_delay` (plus its jitter), 3 times per
/// `acquire` round, and `acquire` loops until it wins.
async fn hot_rslock(
    mode: &str,
    urls: &[String],
    counter_url: &str,
    retry_delay: Duration,
    run_for: Duration,
) {
    const TASKS: usize = 32;
    let resource = format!("bench-hot-rslock-{mode}");
    let counter_key = format!("bench:rslock:{mode}:counter");
    connection(counter_url)
        .await
        .del::<_, ()>(&counter_key)
        .await
        .unwrap();
    let managers: Vec<Arc<rslock::LockManager>> = (0..3)
        .map(|_| {
            let mut manager = rslock::LockManager::new(urls.to_vec());
            manager.set_retry(3, retry_delay);
            Arc::new(manager)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let commands_before = commands_processed(urls).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let manager = Arc::clone(&managers[task % managers.len()]);
        let (resource, counter_key, stop) =
            (resource.clone(), counter_key.clone(), Arc::clone(&stop));
        let counter_url = counter_url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut redis = connection(&counter_url).await;
            let mut waits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let guard = manager
                    .acquire(resource.as_bytes(), Duration::from_secs(5))
                    .await
                    .expect("rslock acquire");
                waits.push(asked.elapsed());
                count_once(&mut redis, &counter_key).await;
                guard.release().await;
            }
            waits
        }));
    }
    let waits = stop_after(run_for, &stop, tasks).await;
    let elapsed = started.elapsed();
    let commands = commands_processed(urls).await - commands_before;
    let hot = Hot {
        waits,
        elapsed,
        commands,
    };
    let mode = format!("{mode}_{}ms", retry_delay.as_millis());
    report_hot("hot_rslock", &mode, hot, counter_url, &counter_key).await;
}

/// A hold's work in every hot run: read a counter and write it back + 1 (two round trips; a
/// lock that lets two holders overlap loses updates).
async fn count_once(redis: &mut redis::aio::MultiplexedConnection, key: &str) {
    let value: Option<u64> = redis.get(key).await.unwrap();
    let () = redis.set(key, value.unwrap_or(0) + 1).await.unwrap();
}

/// Lets the tasks run for `run_for`, stops them and collects every acquisition's wait.
async fn stop_after(
    run_for: Duration,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> Vec<Duration> {
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    let mut waits = Vec::new();
    for task in tasks {
        waits.extend(task.await.unwrap());
    }
    waits
}

/// What a hot run measured.
struct Hot {
    /// Every acquisition's wait.
    waits: Vec<Duration>,
    elapsed: Duration,
    /// Commands the lock's nodes processed meanwhile (with the counter's GET and SET when it
    /// lives on the lock's node).
    commands: u64,
}

/// Prints a hot run's line: throughput, the acquire-wait distribution, Redis commands per
/// hold, lost updates.
async fn report_hot(bench: &str, mode: &str, hot: Hot, counter_url: &str, counter_key: &str) {
    let Hot {
        mut waits,
        elapsed,
        commands,
    } = hot;
    let counted: u64 = connection(counter_url)
        .await
        .get(counter_key)
        .await
        .unwrap();
    waits.sort();
    println!(
        "{}",
        json!({
            "bench": bench, "mode": mode, "tasks": 32, "lockers": 3,
            "ops": waits.len(), "seconds": elapsed.as_secs_f64(),
            "ops_per_sec": waits.len() as f64 / elapsed.as_secs_f64(),
            "wait_p50_ms": percentile(&waits, 0.50), "wait_p90_ms": percentile(&waits, 0.90),
            "wait_p99_ms": percentile(&waits, 0.99), "wait_max_ms": percentile(&waits, 1.0),
            "lost_updates": waits.len() as i64 - counted as i64,
            "node_commands_per_op": commands as f64 / waits.len().max(1) as f64,
        })
    );
}

/// Commands the nodes processed so far (INFO `total_commands_processed`, summed over the nodes
/// that answer within a second: a hung one counts nothing).
async fn commands_processed(urls: &[String]) -> u64 {
    let mut total = 0;
    for url in urls {
        let info = tokio::time::timeout(Duration::from_secs(1), async {
            let mut redis = connection(url).await;
            redis::cmd("INFO")
                .arg("stats")
                .query_async::<String>(&mut redis)
                .await
        })
        .await;
        if let Ok(Ok(info)) = info {
            total += info
                .lines()
                .find_map(|line| line.strip_prefix("total_commands_processed:"))
                .and_then(|count| count.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// Script calls so far on each node.
async fn script_calls(urls: &[String]) -> Vec<u64> {
    join_all(urls.iter().map(|url| common::script_calls(url))).await
}

async fn uncontended(mode: &str, urls: &[String]) {
    const CYCLES: usize = 3000;
    let locker = locker(urls);
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::ZERO);
    // Warm up: connections made, scripts loaded.
    locker
        .acquire("bench-warm", &options)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let before = script_calls(urls).await;
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let guard = locker
            .acquire(&format!("bench-free-{mode}-{cycle}"), &options)
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = script_calls(urls).await;
    let per_node: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / CYCLES as f64)
        .collect();
    println!(
        "{}",
        json!({
            "bench": "uncontended", "mode": mode, "cycles": CYCLES,
            "ops_per_sec": CYCLES as f64 / elapsed.as_secs_f64(),
            "round_trips_per_cycle_per_node": per_node,
        })
    );
}

/// Holder releases while one waiter waits; measures release call → waiter holds.
async fn handoff(mode: &str, urls: &[String], same_locker: bool) {
    const ROUNDS: usize = 300;
    let holder_locker = locker(urls);
    let waiter_locker = if same_locker {
        holder_locker.clone()
    } else {
        locker(urls)
    };
    let resource = format!("bench-handoff-{mode}-{same_locker}");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(5));
    let mut latencies = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let guard = holder_locker.acquire(&resource, &options).await.unwrap();
        let (waiter_locker, resource2, options2) =
            (waiter_locker.clone(), resource.clone(), options.clone());
        let waiter = tokio::spawn(async move {
            let guard = waiter_locker.acquire(&resource2, &options2).await.unwrap();
            let at = Instant::now();
            guard.release().await.unwrap();
            at
        });
        // Let the waiter fail its attempt and settle into waiting.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let released = Instant::now();
        guard.release().await.unwrap();
        latencies.push(waiter.await.unwrap() - released);
    }
    latencies.sort();
    println!(
        "{}",
        json!({
            "bench": if same_locker { "handoff_local" } else { "handoff_remote" }, "mode": mode,
            "rounds": ROUNDS,
            "p50_ms": percentile(&latencies, 0.50), "p99_ms": percentile(&latencies, 0.99),
        })
    );
}
