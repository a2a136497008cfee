//! A hold's life: expiry and takeover, auto-extend and loss, release on cancel and panic, wait
//! budgets, min_hold, bad input.

mod common;

use common::{connection, current_thread_runtime, exists, lock_key, locker, script_calls, unique};
use fencelock::{LockError, LockOptions};
use fencelock_testkit::{shared_redis, RedisServer};
use redis::AsyncCommands;
use std::time::{Duration, Instant};

fn url() -> String {
    shared_redis().url()
}

#[tokio::test]
async fn stale_holder_cannot_release_the_new_holders_lock() {
    let (first, second) = (locker(&[url()]), locker(&[url()]));
    let resource = unique("takeover");
    let short = LockOptions::new()
        .ttl(Duration::from_millis(150))
        .wait(Duration::ZERO);
    let stale = first.acquire(&resource, &short).await.unwrap();
    // The stale holder stalls past its TTL without auto-extend…
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(stale.is_lost(), "validity ran out, the guard must say so");
    // …and someone else takes the lock over.
    let fresh = second
        .acquire(&resource, &LockOptions::new().wait(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(fresh.fence() > stale.fence());
    assert!(
        !stale.release().await.unwrap(),
        "stale release must report not-ours"
    );
    assert!(
        exists(&url(), &lock_key(&resource)).await,
        "stale release deleted the new key"
    );
    assert!(fresh.release().await.unwrap());
    assert!(!exists(&url(), &lock_key(&resource)).await);
}

#[tokio::test]
async fn auto_extend_keeps_a_short_lock_through_long_work() {
    let locker = locker(&[url()]);
    let resource = unique("extend");
    let options = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .auto_extend(true);
    let guard = locker.acquire(&resource, &options).await.unwrap();
    let other = locker.clone();
    let probe = resource.clone();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let attempt = other.try_acquire(&probe, &LockOptions::new()).await;
        assert!(
            matches!(attempt, Err(LockError::Busy { .. })),
            "lock slipped away: {attempt:?}"
        );
    }
    assert!(!guard.is_lost());
    assert!(
        guard.release().await.unwrap(),
        "2 s of work under a 300 ms TTL kept the lock"
    );
}

#[tokio::test]
async fn deleting_the_key_raises_the_lost_signal() {
    let locker = locker(&[url()]);
    let resource = unique("lost");
    let options = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .auto_extend(true);
    let guard = locker.acquire(&resource, &options).await.unwrap();
    let mut redis = connection(&url()).await;
    let _: () = redis.del(lock_key(&resource)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("the watchdog's next extension (within ttl/3) must notice");
    assert!(guard.is_lost());
    assert!(!guard.release().await.unwrap());
}

#[tokio::test]
async fn killing_redis_raises_the_lost_signal() {
    let mut redis = RedisServer::start();
    let locker = locker(&[redis.url()]);
    let options = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .auto_extend(true);
    let guard = locker.acquire("job", &options).await.unwrap();
    redis.kill();
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("a failed extension must mark the guard lost");
    assert!(matches!(
        guard.release().await,
        Err(LockError::Unavailable { .. })
    ));
}

/// Holds the lock in a task, then cancels (or panics) it; measures how soon a waiter gets in.
async fn takeover_after(end_the_holder: impl FnOnce(tokio::task::JoinHandle<()>)) -> Duration {
    let resource = unique("cancel");
    let (holder_locker, waiter_locker) = (locker(&[url()]), locker(&[url()]));
    let ttl_10s = LockOptions::new().ttl(Duration::from_secs(10));
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let held_resource = resource.clone();
    let holder = tokio::spawn(async move {
        let _guard = holder_locker
            .acquire(&held_resource, &ttl_10s)
            .await
            .unwrap();
        held_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    held_rx.await.unwrap();
    let waiter = tokio::spawn(async move {
        let options = LockOptions::new().wait(Duration::from_secs(5));
        let guard = waiter_locker.acquire(&resource, &options).await.unwrap();
        (Instant::now(), guard.release().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ended = Instant::now();
    end_the_holder(holder);
    let (acquired, _) = waiter.await.unwrap();
    acquired - ended
}

#[tokio::test]
async fn cancelling_the_holders_future_frees_the_lock_at_once() {
    let gap = takeover_after(|holder| holder.abort()).await;
    assert!(
        gap < Duration::from_millis(500),
        "waited {gap:?}; the TTL is 10 s"
    );
    eprintln!("takeover after cancel: {gap:?}");
}

#[tokio::test]
async fn a_panic_inside_the_hold_frees_the_lock_at_once() {
    let resource = unique("panic");
    let (holder_locker, waiter_locker) = (locker(&[url()]), locker(&[url()]));
    let ttl_10s = LockOptions::new().ttl(Duration::from_secs(10));
    let held = resource.clone();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        let _guard = holder_locker.acquire(&held, &ttl_10s).await.unwrap();
        held_tx.send(()).unwrap();
        go_rx.await.unwrap();
        panic!("boom inside the critical section");
    });
    held_rx.await.unwrap();
    let waiter = tokio::spawn(async move {
        let options = LockOptions::new().wait(Duration::from_secs(5));
        let guard = waiter_locker.acquire(&resource, &options).await.unwrap();
        let at = Instant::now();
        guard.release().await.unwrap();
        at
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let panicked = Instant::now();
    go_tx.send(()).unwrap();
    assert!(holder.await.unwrap_err().is_panic());
    let gap = waiter.await.unwrap() - panicked;
    assert!(
        gap < Duration::from_millis(500),
        "waited {gap:?}; the TTL is 10 s"
    );
    eprintln!("takeover after panic: {gap:?}");
}

#[tokio::test]
async fn busy_after_about_the_wait_budget_and_zero_wait_is_one_attempt() {
    let redis = RedisServer::start();
    let (holder, waiter) = (locker(&[redis.url()]), locker(&[redis.url()]));
    let _held = holder.acquire("busy", &LockOptions::new()).await.unwrap();

    let started = Instant::now();
    let err = waiter
        .acquire("busy", &LockOptions::new().wait(Duration::from_millis(300)))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, LockError::Busy { .. }), "{err:?}");
    assert!(
        waited >= Duration::from_millis(300),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(800),
        "overshot the budget: {waited:?}"
    );
    assert!(err.to_string().contains("busy"), "{err}");

    let before = script_calls(&redis.url()).await;
    let err = waiter
        .try_acquire("busy", &LockOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LockError::Busy {
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        script_calls(&redis.url()).await - before,
        1,
        "zero wait = one attempt"
    );
}

#[tokio::test]
async fn min_hold_keeps_the_resource_locked_after_an_early_release() {
    let locker = locker(&[url()]);
    let resource = unique("min-hold");
    let options = LockOptions::new()
        .ttl(Duration::from_millis(100))
        .min_hold(Duration::from_millis(600))
        .wait(Duration::ZERO);
    let acquired = Instant::now();
    let guard = locker.acquire(&resource, &options).await.unwrap();
    assert!(guard.release().await.unwrap());
    assert!(
        matches!(
            locker.try_acquire(&resource, &options).await,
            Err(LockError::Busy { .. })
        ),
        "released early, but min_hold must keep others out"
    );
    let next = locker
        .acquire(&resource, &LockOptions::new().wait(Duration::from_secs(3)))
        .await
        .unwrap();
    let gap = acquired.elapsed();
    assert!(
        gap >= Duration::from_millis(550),
        "min_hold not honoured: {gap:?}"
    );
    assert!(
        gap < Duration::from_millis(1500),
        "waited far past min_hold: {gap:?}"
    );
    next.release().await.unwrap();
}

#[tokio::test]
async fn bad_resources_and_options_are_rejected_before_redis() {
    let locker = locker(&[url()]);
    for bad in ["", "line\nbreak"] {
        let err = locker.acquire(bad, &LockOptions::new()).await.unwrap_err();
        assert!(matches!(err, LockError::InvalidResource { .. }), "{err:?}");
    }
    let long = "x".repeat(513);
    assert!(matches!(
        locker.acquire(&long, &LockOptions::new()).await,
        Err(LockError::InvalidResource { .. })
    ));
    assert!(matches!(
        locker
            .acquire("ok", &LockOptions::new().ttl(Duration::ZERO))
            .await,
        Err(LockError::InvalidOptions(_))
    ));
    assert!(
        fencelock::Locker::new(fencelock::LockerConfig::new(["redis://a/", "redis://b/"])).is_err()
    );
}

#[tokio::test]
async fn redis_restart_fails_fast_then_recovers() {
    let mut redis = RedisServer::start();
    let locker = locker(&[redis.url()]);
    let options = LockOptions::new().wait(Duration::from_secs(2));
    locker
        .acquire("restart", &options)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    redis.kill();
    let started = Instant::now();
    let err = locker.acquire("restart", &options).await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "did not fail fast: {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("unavailable"), "{err}");
    redis.restart();
    let mut recovered = None;
    for _ in 0..20 {
        match locker.acquire("restart", &options).await {
            Ok(guard) => {
                recovered = Some(guard);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let guard = recovered.expect("locker never recovered after Redis came back");
    assert!(guard.release().await.unwrap());
}

#[tokio::test]
async fn fences_keep_increasing_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    let locker = locker(&[redis.url()]);
    let before = locker.acquire("fenced", &LockOptions::new()).await.unwrap();
    let first = before.fence();
    before.release().await.unwrap();
    redis.restart(); // persistence is off: the counter is gone
    let mut after = None;
    for _ in 0..20 {
        if let Ok(guard) = locker.acquire("fenced", &LockOptions::new()).await {
            after = Some(guard);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("recovered");
    assert!(after.fence() > first, "{} <= {first}", after.fence());
    after.release().await.unwrap();
}

#[test]
fn a_locker_keeps_working_after_the_runtime_that_first_used_it_stopped() {
    // Made outside any runtime: the locker's connections and drivers live on its own.
    // No timer retries within the test: only a release message can wake the waiter early.
    let mut config = fencelock::LockerConfig::new([url()]);
    config.retry_min_delay = Duration::from_secs(30);
    config.retry_max_delay = Duration::from_secs(30);
    let waiter_locker = fencelock::Locker::new(config).unwrap();
    let holder_locker = locker(&[url()]);
    let resource = unique("driver");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(30))
        .wait(Duration::from_secs(10));

    // A short-lived runtime (an actix worker, a test) is the first to wait on this locker.
    current_thread_runtime().block_on(async {
        let guard = holder_locker.acquire(&resource, &options).await.unwrap();
        let short_wait = options.clone().wait(Duration::from_millis(100));
        let waited = waiter_locker.acquire(&resource, &short_wait).await;
        assert!(matches!(waited, Err(LockError::Busy { .. })));
        assert!(guard.release().await.unwrap());
    });

    // That runtime is gone, and with it the connections and the pub/sub driver it ran: the
    // locker makes new ones, and its waiters are still woken by release messages.
    current_thread_runtime().block_on(async {
        let guard = holder_locker.acquire(&resource, &options).await.unwrap();
        let waiter = tokio::spawn({
            let (locker, resource, options) =
                (waiter_locker.clone(), resource.clone(), options.clone());
            async move {
                let asked = Instant::now();
                let guard = locker.acquire(&resource, &options).await.unwrap();
                let waited = asked.elapsed();
                guard.release().await.unwrap();
                waited
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(guard.release().await.unwrap());
        let waited = waiter.await.unwrap();
        assert!(
            waited < Duration::from_secs(5),
            "the waiter was not woken by the release (waited {waited:?}; its timer is 30 s, its \
             wait budget 10 s)"
        );
    });
}

#[test]
fn a_guard_dropped_by_a_runtime_shutting_down_is_released_at_once() {
    let main_runtime = current_thread_runtime();
    let _main = main_runtime.enter();
    let locker = locker(&[url()]);
    let resource = unique("shutdown");
    let long = LockOptions::new().ttl(Duration::from_secs(60));

    // A task holds the lock when its runtime shuts down (a worker stopping): the runtime drops
    // the task, and with it the guard.
    let worker = current_thread_runtime();
    let (held, is_held) = tokio::sync::oneshot::channel();
    worker.spawn({
        let (locker, resource, long) = (locker.clone(), resource.clone(), long.clone());
        async move {
            let _guard = locker.acquire(&resource, &long).await.unwrap();
            held.send(()).unwrap();
            std::future::pending::<()>().await;
        }
    });
    worker.block_on(is_held).unwrap();
    drop(worker);

    // Released at once, not after the 60 s TTL: a 5 s wait budget is enough.
    main_runtime.block_on(async {
        let guard = locker
            .acquire(&resource, &long.clone().wait(Duration::from_secs(5)))
            .await
            .expect("the dropped guard released the lock");
        guard.release().await.unwrap();
    });
}
