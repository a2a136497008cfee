//! Taking turns between processes: local handoff streaks are bounded, and a process that just
//! had its turn lets a waiting process have the next one instead of racing it again.

mod common;

use common::{exists, lock_key, script_calls, unique};
use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::{shared_redis, RedisServer};
use redis::AsyncCommands;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_LOCAL_HANDOFFS: u32 = 4;
const TASKS_PER_LOCKER: usize = 4;
/// Far beyond any normal wait here (milliseconds): a task that waited this long stops early.
const STALL: Duration = Duration::from_secs(15);

fn locker(yield_window: Duration) -> Locker {
    Locker::new(
        LockerConfig::new([shared_redis().url()])
            .max_local_handoffs(MAX_LOCAL_HANDOFFS)
            .yield_window(yield_window),
    )
    .expect("valid config")
}

/// Every locker's tasks take `resource` in a loop until `holds` holds were recorded; returns
/// which locker held it, in order, and the longest any acquisition waited (a task stops early
/// once it waited longer than [`STALL`]).
async fn hold_in_turns(
    lockers: &[Locker],
    holds: usize,
    options: &LockOptions,
) -> (Vec<usize>, Duration) {
    let resource = unique("turns");
    let order = Arc::new(Mutex::new(Vec::with_capacity(holds)));
    let mut tasks = Vec::new();
    for (index, locker) in lockers.iter().enumerate() {
        for _ in 0..TASKS_PER_LOCKER {
            let (locker, resource, options, order) = (
                locker.clone(),
                resource.clone(),
                options.clone(),
                Arc::clone(&order),
            );
            tasks.push(tokio::spawn(async move {
                let mut longest_wait = Duration::ZERO;
                loop {
                    let asked = Instant::now();
                    let guard = locker.acquire(&resource, &options).await.expect("acquire");
                    longest_wait = longest_wait.max(asked.elapsed());
                    if longest_wait > STALL {
                        break longest_wait;
                    }
                    {
                        let mut order = order.lock().unwrap();
                        if order.len() >= holds {
                            break longest_wait;
                        }
                        order.push(index);
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    assert!(guard.release().await.expect("release"), "lock was ours");
                }
            }));
        }
    }
    let mut longest_wait = Duration::ZERO;
    for task in tasks {
        longest_wait = longest_wait.max(task.await.unwrap());
    }
    let order = Arc::try_unwrap(order).unwrap().into_inner().unwrap();
    (order, longest_wait)
}

/// Lengths of the runs of consecutive holds by the same locker.
fn turns(order: &[usize]) -> Vec<usize> {
    order.chunk_by(|a, b| a == b).map(<[usize]>::len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_had_its_turn_lets_a_waiting_one_go_next() {
    // A generous window, so a slow test machine still gets the other process in within it.
    let lockers = [
        locker(Duration::from_millis(200)),
        locker(Duration::from_millis(200)),
    ];
    let options = LockOptions::new().wait(Duration::from_secs(10));
    let (order, _) = hold_in_turns(&lockers, 300, &options).await;
    // The warm-up: a process yields only once it has heard another one release the lock, so
    // until the second process has had a turn, the first may win every race (its waiters
    // hear its own release first). Count from the end of the second process's first turn.
    let second_in = order
        .iter()
        .position(|&locker| locker != order[0])
        .expect("the second process got the lock at all");
    let warmed_up = second_in
        + order[second_in..]
            .iter()
            .position(|&locker| locker == order[0])
            .unwrap_or(0);
    let turns = turns(&order[warmed_up..]);
    let longest = turns.iter().max().copied().unwrap_or(0);
    // A turn is one acquisition plus at most MAX_LOCAL_HANDOFFS handoffs. On a loaded machine
    // the other process's waiter may not have asked yet when a turn ends (seen in a full
    // `cargo xtask test` on two cores: 2 of 56 turns were two in a row); then the process
    // takes one more turn, never a streak. Without yielding, a process wins its own races
    // turn after turn: most runs would be long.
    let turn = MAX_LOCAL_HANDOFFS as usize + 1;
    let doubled = turns.iter().filter(|&&run| run > turn).count();
    assert!(
        longest <= 2 * turn && doubled * 10 <= turns.len(),
        "one process held the lock {longest} times in a row, {doubled} runs longer than a turn \
         (turns: {turns:?}); a turn is one acquisition plus at most {MAX_LOCAL_HANDOFFS} handoffs"
    );
    assert!(
        turns.len() >= 20,
        "the two processes took only {} turns in 260 holds: {turns:?}",
        turns.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_alone_never_yields() {
    // A lone process has no evidence of another one, so it must never sit out its window: with
    // a 30 s window, a single wrong yield would show as a wait of about 30 s (normal waits here
    // are milliseconds).
    let lockers = [locker(Duration::from_secs(30))];
    let options = LockOptions::new().wait(Duration::from_secs(60));
    let (_, longest_wait) = hold_in_turns(&lockers, 200, &options).await;
    assert!(
        longest_wait <= STALL,
        "a waiter sat out a yield window ({longest_wait:?}) with no other process around"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_of_the_same_process_gets_the_lock_by_handoff_with_a_greater_fence() {
    // Its own Redis, so the script calls counted are this test's alone.
    let redis = RedisServer::start();
    let mut config = LockerConfig::new([redis.url()]);
    // No timer retries while the test counts round trips: the waiter waits for the handoff.
    config.retry_min_delay = Duration::from_secs(5);
    config.retry_max_delay = Duration::from_secs(5);
    let locker = Locker::new(config).unwrap();
    let resource = unique("handoff");
    let options = LockOptions::new().wait(Duration::from_secs(10));
    let mut guard = locker.acquire(&resource, &options).await.unwrap();
    let first_fence = guard.fence();
    // The first round loads the scripts into this fresh Redis; count the second.
    for round in 0..2 {
        let waiter = tokio::spawn({
            let (locker, resource, options) = (locker.clone(), resource.clone(), options.clone());
            async move { locker.acquire(&resource, &options).await.unwrap() }
        });
        // Let the waiter fail its attempt and queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fence = guard.fence();
        let calls_before = script_calls(&redis.url()).await;
        assert!(guard.release().await.unwrap());
        guard = waiter.await.unwrap();
        let calls = script_calls(&redis.url()).await - calls_before;
        if round == 1 {
            // The lock passes on in-process without a round trip; the one script call is the
            // releaser's confirmation afterwards (`confirm_pass_on`, off the waiter's path).
            assert_eq!(
                calls, 1,
                "release + next acquisition: one confirmation, no handoff round trip"
            );
        }
        assert_eq!(
            guard.fence(),
            fence + 1,
            "the next fence of the reserved block"
        );
    }
    assert!(guard.release().await.unwrap());
    assert!(!exists(&redis.url(), &lock_key(&resource)).await);
    // The block reserved at acquisition (the holder's fence and 16 more, the default streak
    // bound) is in Redis, so whoever comes next, from any process, is fenced above all of it.
    let reserved: u64 = common::connection(&redis.url())
        .await
        .get(format!("fencelock:{{{resource}}}:fence"))
        .await
        .unwrap();
    assert_eq!(
        reserved,
        first_fence + 16,
        "the counter holds the block's end"
    );
    let other = Locker::new(LockerConfig::new([redis.url()])).unwrap();
    let next = other.acquire(&resource, &options).await.unwrap();
    assert!(next.fence() > reserved);
    next.release().await.unwrap();
}

/// A hold that has used up more than a tenth of its TTL hands the lock on through Redis (one
/// round trip, which gives the waiter a full TTL): a waiter never starts with much less time
/// than it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_late_in_a_hold_goes_through_redis_and_resets_the_ttl() {
    let redis = RedisServer::start();
    let mut config = LockerConfig::new([redis.url()]);
    config.retry_min_delay = Duration::from_secs(5);
    config.retry_max_delay = Duration::from_secs(5);
    let locker = Locker::new(config).unwrap();
    let resource = unique("late-handoff");
    let ttl = Duration::from_millis(1000);
    let options = LockOptions::new().ttl(ttl).wait(Duration::from_secs(10));
    // Warm up (scripts loaded).
    locker
        .acquire(&resource, &options)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let guard = locker.acquire(&resource, &options).await.unwrap();
    let waiter = tokio::spawn({
        let (locker, resource, options) = (locker.clone(), resource.clone(), options.clone());
        async move { locker.acquire(&resource, &options).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls_before = script_calls(&redis.url()).await;
    assert!(guard.release().await.unwrap());
    let next = waiter.await.unwrap();
    assert_eq!(
        script_calls(&redis.url()).await - calls_before,
        1,
        "one handoff round trip"
    );
    let left = next.valid_until() - tokio::time::Instant::now();
    assert!(left > ttl * 9 / 10, "a fresh TTL: {left:?} left");
    next.release().await.unwrap();
}

/// A case of [`a_waiter_whose_terms_differ_gets_the_lock_through_redis`]: a waiter asking for
/// other terms than the holder's.
#[derive(Debug)]
struct DifferentTerms {
    /// How its terms differ, named in every assertion.
    what: &'static str,
    waiter_options: LockOptions,
}

/// A waiter is passed the lock in-process only if the time left is close to what it asks for:
/// one asking for 5 s does not inherit a 60 s lock (a crash would then block everyone for a
/// minute), and one with a `min_hold` needs Redis to keep exactly that. Both go through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_terms_differ_gets_the_lock_through_redis() {
    let redis = RedisServer::start();
    let mut config = LockerConfig::new([redis.url()]);
    config.retry_min_delay = Duration::from_secs(5);
    config.retry_max_delay = Duration::from_secs(5);
    let locker = Locker::new(config).unwrap();
    let resource = unique("terms");
    let long = LockOptions::new()
        .ttl(Duration::from_secs(60))
        .wait(Duration::from_secs(10));
    let short = long.clone().ttl(Duration::from_secs(5));
    let with_min_hold = long.clone().min_hold(Duration::from_millis(50));
    locker
        .acquire(&resource, &long)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let cases = [
        DifferentTerms {
            what: "a much shorter ttl",
            waiter_options: short,
        },
        DifferentTerms {
            what: "a min_hold",
            waiter_options: with_min_hold,
        },
    ];
    for DifferentTerms {
        what,
        waiter_options,
    } in cases
    {
        let guard = locker.acquire(&resource, &long).await.unwrap();
        let waiter = tokio::spawn({
            let (locker, resource) = (locker.clone(), resource.clone());
            let options = waiter_options.clone();
            async move { locker.acquire(&resource, &options).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls_before = script_calls(&redis.url()).await;
        assert!(guard.release().await.unwrap());
        let next = waiter.await.unwrap();
        let calls = script_calls(&redis.url()).await - calls_before;
        assert_eq!(calls, 1, "{what}: one handoff round trip");
        let left = next.valid_until() - tokio::time::Instant::now();
        assert!(
            left <= waiter_options.ttl + Duration::from_millis(100),
            "{what}: its own TTL, {left:?} left"
        );
        // Released through Redis again (min_hold keeps the key for its remaining 50 ms).
        next.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
