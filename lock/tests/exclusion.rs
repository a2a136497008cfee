//! Mutual exclusion under stress: three lockers (as three app instances would be) and many
//! tasks hammer one resource; the hold does a non-atomic read-modify-write of a Redis counter.

mod common;

use common::{connection, locker, racy_increment, unique};
use fencelock::{LockOptions, Locker};
use fencelock_testkit::shared_redis;
use redis::AsyncCommands;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOCKERS: usize = 3;
const TASKS_PER_LOCKER: usize = 32;
const ITERATIONS: usize = 15;

#[derive(Debug, Clone, Copy)]
struct HoldRecord {
    start: Instant,
    end: Instant,
    fence: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_lockers_never_overlap_and_lose_no_update() {
    let url = shared_redis().url();
    let resource = unique("stress");
    let counter_key = format!("test:{resource}:counter");
    let lockers: Vec<Locker> = (0..LOCKERS).map(|_| locker(&[&url])).collect();
    let records = Arc::new(Mutex::new(Vec::new()));
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(60));

    let mut tasks = Vec::new();
    for locker in &lockers {
        for _ in 0..TASKS_PER_LOCKER {
            let (locker, resource, counter_key) =
                (locker.clone(), resource.clone(), counter_key.clone());
            let (records, options, url) = (Arc::clone(&records), options.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut redis = connection(&url).await;
                for _ in 0..ITERATIONS {
                    let guard = locker.acquire(&resource, &options).await.expect("acquire");
                    let (start, end) = racy_increment(&mut redis, &counter_key).await;
                    records.lock().unwrap().push(HoldRecord {
                        start,
                        end,
                        fence: guard.fence(),
                    });
                    assert!(
                        guard.release().await.expect("release"),
                        "lock lost mid-hold"
                    );
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task panicked");
    }

    let expected = (LOCKERS * TASKS_PER_LOCKER * ITERATIONS) as u64;
    let mut redis = connection(&url).await;
    let counter: u64 = redis.get(&counter_key).await.unwrap();
    assert_eq!(
        counter, expected,
        "lost increments: the lock let two holders in"
    );

    let mut records = records.lock().unwrap().clone();
    assert_eq!(records.len() as u64, expected);
    records.sort_by_key(|record| record.start);
    for pair in records.windows(2) {
        assert!(
            pair[1].start >= pair[0].end,
            "two holds overlapped in time: {pair:?}"
        );
        assert!(
            pair[1].fence > pair[0].fence,
            "fences not strictly increasing in hold order: {pair:?}"
        );
    }
}
