//! Several resources under one guard (`Locker::acquire_many`): one global order, so transfers
//! in opposite directions never deadlock; exclusion per resource; nothing left behind when an
//! acquisition fails part-way or is dropped.

mod common;

use common::{exists, lock_key, locker, unique};
use fencelock::{LockError, LockOptions};
use fencelock_testkit::shared_redis;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Two accounts, many transfers in both directions at once from three lockers (as three
/// processes would): every transfer completes (no deadlock: the opposite orders are taken in one
/// order), no two holders of an account overlap (the unlocked read-modify-write below would lose
/// money), and the sum is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_in_opposite_directions_neither_deadlock_nor_overlap() {
    let url = shared_redis().url();
    let (a, b) = (unique("account"), unique("account"));
    let lockers: Vec<_> = (0..3).map(|_| locker(&[&url])).collect();
    // In-process "balances" with a deliberately racy update: only the locks keep them right.
    let balances = Arc::new([AtomicI64::new(1_000), AtomicI64::new(1_000)]);
    let mut tasks = Vec::new();
    for task in 0..24 {
        let locker = lockers[task % 3].clone();
        let (a, b) = (a.clone(), b.clone());
        let balances = Arc::clone(&balances);
        tasks.push(tokio::spawn(async move {
            // Half of them name the accounts the other way round.
            let (from, to) = if task % 2 == 0 { (0, 1) } else { (1, 0) };
            let names = [&a, &b];
            let options = LockOptions::new()
                .ttl(Duration::from_secs(10))
                .wait(Duration::from_secs(20));
            for _ in 0..10 {
                let both = locker
                    .acquire_many(&[names[from], names[to]], &options)
                    .await
                    .expect("no transfer waits out its budget: nothing deadlocks");
                let (f, t) = (
                    balances[from].load(Ordering::SeqCst),
                    balances[to].load(Ordering::SeqCst),
                );
                tokio::task::yield_now().await;
                balances[from].store(f - 7, Ordering::SeqCst);
                balances[to].store(t + 7, Ordering::SeqCst);
                assert!(both.release().await.unwrap(), "both locks were still ours");
            }
        }));
    }
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("every transfer finished in time: no deadlock");
    for task in all {
        task.unwrap();
    }
    let (left, right) = (
        balances[0].load(Ordering::SeqCst),
        balances[1].load(Ordering::SeqCst),
    );
    assert_eq!(left + right, 2_000, "no update lost");
    // 12 tasks each way, 10 transfers of 7: it evens out.
    assert_eq!((left, right), (1_000, 1_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_resource_has_its_own_fence_and_duplicates_count_once() {
    let url = shared_redis().url();
    let locker = locker(&[&url]);
    let (a, b) = (unique("pair"), unique("pair"));
    let first = locker.acquire(&b, &LockOptions::new()).await.unwrap();
    let b_fence = first.fence();
    first.release().await.unwrap();

    let both = locker
        .acquire_many(&[&b, &a, &b], &LockOptions::new())
        .await
        .unwrap();
    let resources: Vec<&str> = both.guards().iter().map(|g| g.resource()).collect();
    let mut sorted = vec![a.as_str(), b.as_str()];
    sorted.sort();
    assert_eq!(resources, sorted, "sorted, duplicates once");
    assert!(
        both.fence(&b).unwrap() > b_fence,
        "b's own counter moved on"
    );
    assert!(both.fence(&a).is_some() && both.fence("other").is_none());
    assert!(both.release().await.unwrap());
    assert!(!exists(&url, &lock_key(&a)).await && !exists(&url, &lock_key(&b)).await);

    let none: [&str; 0] = [];
    assert!(matches!(
        locker.acquire_many(&none, &LockOptions::new()).await,
        Err(LockError::InvalidResource { .. })
    ));
}

/// Both resources are busy, the first for 600 ms, the second for longer: the call fails `Busy`
/// on the second when the *one* budget of 800 ms is spent (per-lock budgets would take 600 +
/// 800 ms), and the first, already taken, is given back before the call returns.
#[tokio::test(flavor = "multi_thread")]
async fn one_wait_budget_for_all_and_a_busy_second_resource_gives_the_first_back() {
    let url = shared_redis().url();
    let locker = locker(&[&url]);
    let (a, b) = (unique("first"), unique("second"));
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let holder = common::locker(&[&url]);
    let held_a = holder.acquire(&a, &LockOptions::new()).await.unwrap();
    let held_b = holder.acquire(&b, &LockOptions::new()).await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        held_a.release().await.unwrap();
    });
    let started = std::time::Instant::now();
    let outcome = locker
        .acquire_many(
            &[&a, &b],
            &LockOptions::new().wait(Duration::from_millis(800)),
        )
        .await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(LockError::Busy { ref resource, .. }) if *resource == b),
        "{outcome:?}"
    );
    assert!(
        took < Duration::from_millis(1200),
        "one budget for all: {took:?}"
    );
    assert!(
        !exists(&url, &lock_key(&a)).await,
        "the first lock went back before the call returned"
    );
    held_b.release().await.unwrap();
}

/// A TTL shorter than the wait, no auto-extend: the first lock runs out while the second is
/// awaited. The call fails rather than return a guard whose first lock is already gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_lock_that_runs_out_while_waiting_for_the_second_fails_the_call() {
    let url = shared_redis().url();
    let locker = locker(&[&url]);
    let (a, b) = (unique("short"), unique("long"));
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let holder = common::locker(&[&url]);
    let held_b = holder.acquire(&b, &LockOptions::new()).await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        held_b.release().await.unwrap();
    });
    let options = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .wait(Duration::from_secs(5));
    let outcome = locker.acquire_many(&[&a, &b], &options).await;
    match outcome {
        Err(LockError::Busy {
            resource, waited, ..
        }) => {
            assert_eq!(resource, b);
            assert!(
                waited < Duration::from_millis(1500),
                "gave up when `a` ran out: {waited:?}"
            );
        }
        Ok(both) => panic!(
            "returned a guard with a lost lock: lost = {}",
            both.is_lost()
        ),
        Err(other) => panic!("{other:?}"),
    }
}

/// Dropped while waiting for the second resource (a client hung up): the first is released at
/// once, not after its TTL.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_acquisition_leaves_nothing_locked() {
    let url = shared_redis().url();
    let locker = locker(&[&url]);
    let (a, b) = (unique("drop"), unique("drop"));
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let holder = common::locker(&[&url]);
    let held = holder.acquire(&b, &LockOptions::new()).await.unwrap();
    let options = LockOptions::new()
        .ttl(Duration::from_secs(60))
        .wait(Duration::from_secs(30));
    let pair = [&a, &b];
    let pending = locker.acquire_many(&pair, &options);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pending)
            .await
            .is_err(),
        "still waiting for the second"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while exists(&url, &lock_key(&a)).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the first lock outlived its dropped holder"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held.release().await.unwrap();
}
