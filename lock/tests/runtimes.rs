//! A caller's runtime that blocks or shuts down affects only its own tasks: not other runtimes'
//! calls, not watchdogs, not a release it started. Real redis-server processes; each runtime
//! here is a separate one on its own OS thread, as actix's workers are.

mod common;

use common::faults::pause_clients;
use common::{current_thread_runtime, exists, lock_key, unique};
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Panics on the crate's background threads since this test binary started.
fn background_panics() -> usize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if name.starts_with("fencelock") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// #18.4: runtime A makes the pool's only connection, then blocks its thread for 3 s (a
/// handler calling something blocking). Runtime B must still lock, and its auto-extended guard
/// must not be lost: before, B's calls went over A's connection, whose I/O ran on A's stalled
/// runtime — B got `lock_unavailable` and its watchdog's extensions timed out.
#[test]
fn a_blocked_caller_runtime_stalls_only_its_own_tasks() {
    let redis = RedisServer::start();
    let locker = Locker::new(
        LockerConfig::new([redis.url()])
            .pool_size(1)
            .node_timeout(Duration::from_millis(500)),
    )
    .unwrap();
    let (warmed_up, wait_for_a) = mpsc::channel();
    let blocked = std::thread::spawn({
        let locker = locker.clone();
        move || {
            current_thread_runtime().block_on(async {
                let guard = locker
                    .acquire(&unique("runtime-a"), &LockOptions::new())
                    .await
                    .unwrap();
                guard.release().await.unwrap();
                warmed_up.send(()).unwrap();
                // Blocks the runtime's only thread: nothing of runtime A runs meanwhile.
                std::thread::sleep(Duration::from_secs(3));
            });
        }
    });
    wait_for_a.recv().unwrap();
    current_thread_runtime().block_on(async {
        let options = LockOptions::new()
            .ttl(Duration::from_millis(600))
            .auto_extend(true);
        let guard = locker.acquire(&unique("runtime-b"), &options).await;
        let guard = guard.expect("runtime B locks while runtime A is blocked");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!guard.is_lost(), "the watchdog's extensions stalled");
        assert!(guard.release().await.unwrap());
    });
    blocked.join().unwrap();
}

/// #18.5: a release is in flight (Redis paused) when its caller gives up on it and the
/// caller's runtime shuts down. The release must still land once Redis answers, with no panic
/// on the crate's background thread — before, the release moved there still used the dead
/// runtime's timers, panicked, and the key stayed for its TTL.
#[test]
fn a_release_in_flight_when_its_runtime_shuts_down_still_lands() {
    let panics_before = background_panics();
    let redis = RedisServer::start();
    let url = redis.url();
    let locker = Locker::new(LockerConfig::new([url.clone()])).unwrap();
    let resource = unique("runtime-shutdown");
    let runtime = current_thread_runtime();
    runtime.block_on(async {
        let guard = locker
            .acquire(&resource, &LockOptions::new().ttl(Duration::from_secs(20)))
            .await
            .unwrap();
        pause_clients(&url, 400).await;
        let release = guard.release();
        tokio::select! {
            outcome = release => panic!("released during the pause: {outcome:?}"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    });
    drop(runtime);
    let checker = current_thread_runtime();
    checker.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(3);
        while exists(&url, &lock_key(&resource)).await {
            assert!(
                Instant::now() < deadline,
                "the lock is still there 3 s after Redis answered again (TTL 20 s)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(
        background_panics(),
        panics_before,
        "a panic on the crate's background thread"
    );
}
