//! A once-per-tick job run by several instances: each tick, every instance tries the tick's
//! lock without waiting; exactly one wins and runs the job. `min_hold` keeps the tick locked
//! even when the winner finishes early, so an instance whose clock is a little late cannot
//! run the same tick again (ShedLock's `lockAtLeastFor`).
//!
//! ```sh
//! cargo run -p fencelock --example scheduled_job
//! ```

use fencelock::{distributed_lock, Locker, LockerConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Instance {
    name: String,
    locker: Locker,
    runs: Arc<AtomicU32>,
}

impl Instance {
    /// Returns `()`: when another instance has the tick, the run is skipped (and logged).
    #[distributed_lock(
        resource = "job:report:{tick}",
        locker = self.locker,
        wait_ms = 0,
        ttl_ms = 5000,
        min_hold_ms = 1000
    )]
    async fn report(&self, tick: u64) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        println!("tick {tick}: run by {}", self.name);
    }
}

#[tokio::main]
async fn main() -> Result<(), fencelock::LockError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let runs = Arc::new(AtomicU32::new(0));
    // Three instances, as three processes would be (each its own Locker).
    let instances = (1..=3)
        .map(|n| {
            Ok(Arc::new(Instance {
                name: format!("instance {n}"),
                locker: Locker::new(LockerConfig::new([url.as_str()]))?,
                runs: Arc::clone(&runs),
            }))
        })
        .collect::<Result<Vec<_>, fencelock::LockError>>()?;
    let first_tick = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.as_secs())
        .unwrap_or_default();
    let ticks = 3;
    for tick in first_tick..first_tick + ticks {
        let attempts = instances.iter().map(|instance| {
            let instance = Arc::clone(instance);
            tokio::spawn(async move { instance.report(tick).await })
        });
        for attempt in attempts.collect::<Vec<_>>() {
            attempt.await.expect("the job task");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = runs.load(Ordering::SeqCst);
    println!("{ticks} ticks, {runs} runs");
    assert_eq!(u64::from(runs), ticks, "exactly one run per tick");
    Ok(())
}
