//! Futures that are alive but not polled — an `acquire` parked in a `select!` whose other
//! branch runs long — cannot keep a lock from anyone: not from the other waiters of their own
//! process, and not (by renewing it) from other processes. Real redis-server processes.

mod common;

use common::unique;
use fencelock::{Guard, LockError, LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// An acquisition of ours that is alive but not polled.
type Parked<'a> = Pin<Box<dyn Future<Output = Result<Guard, LockError>> + Send + 'a>>;

/// Polls `future` for `for_how_long` (it makes its attempt and queues), then stops polling it
/// and hands it back, alive.
async fn poll_then_park<F: Future + Unpin>(mut future: F, for_how_long: Duration) -> F {
    tokio::select! {
        _ = &mut future => panic!("the parked acquire was not supposed to finish"),
        () = tokio::time::sleep(for_how_long) => {}
    }
    future
}

/// A redis-server of the test's own and two lockers on it: ours, the process whose waiter is
/// parked, and theirs, another process.
fn ours_and_theirs() -> (RedisServer, Locker, Locker) {
    let redis = RedisServer::start();
    let ours = Locker::new(LockerConfig::new([redis.url()])).unwrap();
    let theirs = Locker::new(LockerConfig::new([redis.url()])).unwrap();
    (redis, ours, theirs)
}

/// Our process holds `resource`; a waiter of ours makes its attempt, queues and is parked; the
/// holder releases, handing the lock to the parked waiter, which is returned still parked.
async fn hand_to_a_parked_waiter<'a>(
    ours: &'a Locker,
    resource: &'a str,
    options: &'a LockOptions,
) -> Parked<'a> {
    let holder = ours.acquire(resource, options).await.unwrap();
    let parked: Parked<'a> = Box::pin(ours.acquire(resource, options));
    let parked = poll_then_park(parked, Duration::from_millis(100)).await;
    assert!(
        holder.release().await.unwrap(),
        "handed to the parked waiter"
    );
    parked
}

/// The other process holds the lock (`theirs`) and releases it 200 ms from now, while the
/// parked waiter is polled again at last: it must wait for that release and come back with a
/// greater fence, never return the lock handed to it earlier (`what`) as held. Returns its guard.
async fn woken_after_their_release(parked: Parked<'_>, theirs: Guard, what: &str) -> Guard {
    let their_fence = theirs.fence();
    let release_later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        theirs.release().await.unwrap()
    });
    let woken = parked
        .await
        .expect("the parked waiter gets the lock once it is free");
    assert!(
        woken.fence() > their_fence && !woken.is_lost(),
        "{what} returned as held (fence {} vs theirs {their_fence})",
        woken.fence()
    );
    assert!(release_later.await.unwrap());
    woken
}

/// #18.6a: another process holds the lock; in ours, the first waiter is parked and a second
/// one waits. When the other process releases, the second waiter must get the lock — before,
/// only the first local waiter ever asked Redis, and the second got `lock_busy` 3 s later
/// with the lock free all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_first_waiter_does_not_starve_the_others() {
    let (_redis, ours, theirs) = ours_and_theirs();
    let resource = unique("parked-first");
    let options = LockOptions::new().wait(Duration::from_secs(3));
    let held_elsewhere = theirs.acquire(&resource, &options).await.unwrap();
    let parked: Pin<Box<_>> = Box::pin(ours.acquire(&resource, &options));
    let parked = poll_then_park(parked, Duration::from_millis(100)).await;
    let second = tokio::spawn({
        let (ours, resource, options) = (ours.clone(), resource.clone(), options.clone());
        async move {
            let asked = Instant::now();
            (ours.acquire(&resource, &options).await, asked.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(held_elsewhere.release().await.unwrap());
    let (second, waited) = second.await.unwrap();
    let guard = second.expect("the second waiter gets the free lock");
    assert!(waited < Duration::from_secs(2), "it waited {waited:?}");
    guard.release().await.unwrap();
    drop(parked);
}

/// #18.6b: the lock is handed to an auto-extending waiter of our process whose future is
/// parked. Its watchdog must not keep the lock alive for a guard nobody took: another process
/// gets it once the TTL has run out — before, it got `lock_busy` after waiting 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_handed_to_a_parked_waiter_is_not_renewed() {
    let (_redis, ours, theirs) = ours_and_theirs();
    let resource = unique("parked-handoff");
    let options = LockOptions::new()
        .ttl(Duration::from_millis(600))
        .wait(Duration::from_secs(4))
        .auto_extend(true);
    let parked = hand_to_a_parked_waiter(&ours, &resource, &options).await;
    let asked = Instant::now();
    let taken = theirs.acquire(&resource, &options).await;
    let guard = taken.expect("the other process gets the lock the parked waiter never took");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "after {:?}",
        asked.elapsed()
    );
    // The parked future wakes up at last: the lock handed to it has expired and is held
    // elsewhere, so it must not return it as held — it waits for the other process instead.
    let woken = woken_after_their_release(parked, guard, "an expired hand-over").await;
    woken.release().await.unwrap();
}

/// Found by review: a lock handed to a parked waiter stayed with it, unrenewed, for the rest of
/// its TTL — with the default 10 s TTL, everyone else got `lock_busy`. A hand-over not taken
/// within a bound (two call timeouts and 50 ms: 1.05 s here) is taken back and goes on: to the
/// next waiter of the process, or back to Redis. The parked waiter, woken at last, queues again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_not_taken_within_a_bound_goes_on() {
    let (_redis, ours, theirs) = ours_and_theirs();
    let resource = unique("parked-bound");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(3));
    let parked = hand_to_a_parked_waiter(&ours, &resource, &options).await;
    let asked = Instant::now();
    let guard = theirs
        .acquire(&resource, &options)
        .await
        .expect("the other process gets the lock the parked waiter did not take");
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "after {:?} (TTL 10 s)",
        asked.elapsed()
    );
    let woken = woken_after_their_release(parked, guard, "a hand-over taken back").await;
    assert!(woken.release().await.unwrap());
}

/// Found by review of the hand-over bound: a waiter whose future is dropped with a lock handed
/// to it must free the lock at once, as before — not leave it to the take-back a second later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiter_frees_a_lock_handed_to_it_at_once() {
    let (_redis, ours, theirs) = ours_and_theirs();
    let resource = unique("parked-dropped");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(3));
    let parked = hand_to_a_parked_waiter(&ours, &resource, &options).await;
    drop(parked);
    let asked = Instant::now();
    let guard = theirs.acquire(&resource, &options).await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "the lock handed to a dropped waiter was freed after {:?} (hand-over bound 1.05 s)",
        asked.elapsed()
    );
    assert!(guard.release().await.unwrap());
}
