//! What a lock costs as the work grows: many hot resources, CPU per acquisition, Redis memory
//! and keys per live lock and after many resources were each locked once, pub/sub
//! subscriptions and connections as waiting resources grow. One JSON line per measurement.

use crate::common::connection;
use crate::{count_once, locker, percentile, stop_after};
use fencelock::{LockOptions, Locker};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces, so split after its ')').
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the ')'.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A field of `INFO <section>` on `url`.
async fn info_field(url: &str, section: &str, field: &str) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut connection(url).await)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn redis_cpu(url: &str) -> f64 {
    info_field(url, "cpu", "used_cpu_user").await + info_field(url, "cpu", "used_cpu_sys").await
}

async fn dbsize(url: &str) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut connection(url).await)
        .await
        .unwrap()
}

/// 32 tasks over 3 lockers pick one of `resources` at random (seeded) for every hold; the hold
/// is the hot run's GET and SET of that resource's counter. Acquisitions/s, wait p99, and CPU
/// per acquisition: this process's and the Redis server's.
pub async fn spread(url: &str, resources: usize, run_for: Duration) {
    const TASKS: u64 = 32;
    let lockers: Vec<Locker> = (0..3).map(|_| locker(&[url.to_string()])).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(30));
    let (cpu_before, redis_before) = (own_cpu(), redis_cpu(url).await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let locker = lockers[task as usize % lockers.len()].clone();
        let (options, stop, url) = (options.clone(), Arc::clone(&stop), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut redis = connection(&url).await;
            let mut rng = rand::rngs::StdRng::seed_from_u64(task);
            let mut waits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let resource = format!("cost-{resources}-{}", rng.random_range(0..resources));
                let asked = Instant::now();
                let guard = locker.acquire(&resource, &options).await.expect("acquire");
                waits.push(asked.elapsed());
                count_once(&mut redis, &format!("cost:{resource}")).await;
                guard.release().await.expect("release");
            }
            waits
        }));
    }
    let mut waits = stop_after(run_for, &stop, tasks).await;
    let elapsed = started.elapsed();
    let (cpu, redis) = (own_cpu() - cpu_before, redis_cpu(url).await - redis_before);
    let ops = waits.len().max(1) as f64;
    waits.sort();
    println!(
        "{}",
        json!({
            "bench": "cost", "mode": format!("spread_{resources}"), "tasks": TASKS,
            "ops_per_sec": ops / elapsed.as_secs_f64(),
            "wait_p50_ms": percentile(&waits, 0.50), "wait_p99_ms": percentile(&waits, 0.99),
            // Includes the hold's own GET and SET (the bench's client work).
            "process_cpu_us_per_op": cpu.as_secs_f64() * 1e6 / ops,
            "redis_cpu_us_per_op": redis * 1e6 / ops,
        })
    );
}

/// Holds `live` locks at once, then releases them: Redis memory and keys per live lock, and
/// what is left after the release (the fence counters, which expire a minute after their lock).
pub async fn memory(url: &str, live: usize) {
    let locker = locker(&[url.to_string()]);
    let options = LockOptions::new()
        .ttl(Duration::from_secs(60))
        .wait(Duration::ZERO);
    let (keys_before, memory_before) = (
        dbsize(url).await,
        info_field(url, "memory", "used_memory").await,
    );
    let mut guards = Vec::with_capacity(live);
    for chunk in (0..live).collect::<Vec<_>>().chunks(500) {
        let taken = futures_util::future::join_all(chunk.iter().map(|n| {
            let (locker, options) = (&locker, &options);
            async move { locker.acquire(&format!("memory-{live}-{n}"), options).await }
        }))
        .await;
        guards.extend(
            taken
                .into_iter()
                .map(|guard| guard.expect("a free resource")),
        );
    }
    let (keys_held, memory_held) = (
        dbsize(url).await,
        info_field(url, "memory", "used_memory").await,
    );
    futures_util::future::join_all(guards.into_iter().map(|guard| guard.release())).await;
    let (keys_after, memory_after) = (
        dbsize(url).await,
        info_field(url, "memory", "used_memory").await,
    );
    let live_f = live as f64;
    println!(
        "{}",
        json!({
            "bench": "cost", "mode": format!("memory_{live}_live"),
            "keys_per_live_lock": (keys_held - keys_before) as f64 / live_f,
            "bytes_per_live_lock": (memory_held - memory_before) / live_f,
            "keys_left_after_release_per_lock": (keys_after - keys_before) as f64 / live_f,
            "bytes_left_after_release_per_lock": (memory_after - memory_before) / live_f,
        })
    );
}

/// Locks `count` distinct resources once each (acquire, release; 32 at a time), then watches
/// Redis: keys and memory right after, and how long until they are back to where they were
/// (the fence counters expire their lock's TTL plus 60 s after it).
pub async fn churn(url: &str, count: usize) {
    const TASKS: usize = 32;
    // A Redis growing by a million keys may stall for a moment (a rehash, the allocator): a
    // longer node timeout than the default, and failures counted rather than fatal.
    let config = fencelock::LockerConfig::new([url]).node_timeout(Duration::from_secs(5));
    let locker = Locker::new(config).expect("config");
    let ttl = Duration::from_secs(1);
    let options = LockOptions::new().ttl(ttl).wait(Duration::ZERO);
    let (keys_before, memory_before) = (
        dbsize(url).await,
        info_field(url, "memory", "used_memory").await,
    );
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (locker, options, failed) = (locker.clone(), options.clone(), Arc::clone(&failed));
            tokio::spawn(async move {
                for n in (task..count).step_by(TASKS) {
                    match locker.acquire(&format!("churn-{n}"), &options).await {
                        Ok(guard) => {
                            let _ = guard.release().await;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let locking = started.elapsed();
    let (keys_after, memory_after) = (
        dbsize(url).await,
        info_field(url, "memory", "used_memory").await,
    );
    let released = Instant::now();
    let mut back_after = None;
    while released.elapsed() < ttl + Duration::from_secs(180) {
        if dbsize(url).await <= keys_before {
            back_after = Some(released.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let memory_back = info_field(url, "memory", "used_memory").await;
    println!(
        "{}",
        json!({
            "bench": "cost", "mode": format!("churn_{count}"),
            "locking_seconds": locking.as_secs_f64(),
            "failed": failed.load(Ordering::Relaxed),
            "keys_right_after": keys_after - keys_before,
            "megabytes_right_after": (memory_after - memory_before) / 1e6,
            "seconds_until_keys_back": back_after.map(|after| after.as_secs_f64()),
            "megabytes_left_then": (memory_back - memory_before) / 1e6,
        })
    );
}

/// `waiting` resources held by one locker, each awaited by a waiter of another: the pub/sub
/// channels and the connections the waiting process holds on the node.
pub async fn subscriptions(url: &str, waiting: usize) {
    let holder = locker(&[url.to_string()]);
    let held_options = LockOptions::new()
        .ttl(Duration::from_secs(60))
        .wait(Duration::ZERO);
    let mut guards = Vec::with_capacity(waiting);
    for n in 0..waiting {
        guards.push(
            holder
                .acquire(&format!("waiting-{waiting}-{n}"), &held_options)
                .await
                .unwrap(),
        );
    }
    let (clients_before, channels_before) = (
        info_field(url, "clients", "connected_clients").await,
        channels(url).await,
    );
    let waiter = locker(&[url.to_string()]);
    let waits: Vec<_> = (0..waiting)
        .map(|n| {
            let waiter = waiter.clone();
            tokio::spawn(async move {
                let options = LockOptions::new().wait(Duration::from_secs(60));
                let guard = waiter
                    .acquire(&format!("waiting-{waiting}-{n}"), &options)
                    .await
                    .unwrap();
                guard.release().await.unwrap();
            })
        })
        .collect();
    // Until every waiter is subscribed (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while channels(url).await < channels_before + waiting && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (clients, channels_now) = (
        info_field(url, "clients", "connected_clients").await,
        channels(url).await,
    );
    futures_util::future::join_all(guards.into_iter().map(|guard| guard.release())).await;
    for wait in waits {
        wait.await.unwrap();
    }
    // Channels nobody listens to any more are unsubscribed by a sweep every 10 s.
    let done = Instant::now();
    while channels(url).await > channels_before && done.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "{}",
        json!({
            "bench": "cost", "mode": format!("subscriptions_{waiting}_waiting"),
            "channels": channels_now - channels_before,
            "connections": clients - clients_before,
            "channels_left": channels(url).await.saturating_sub(channels_before),
            "seconds_until_unsubscribed": done.elapsed().as_secs_f64(),
        })
    );
}

async fn channels(url: &str) -> usize {
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut connection(url).await)
        .await
        .unwrap();
    channels.len()
}
