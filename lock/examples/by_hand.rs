//! Locking by hand: acquire, use the fence, extend, look, release.
//!
//! ```sh
//! redis-server --port 6379 &   # or any Redis; REDIS_URL=rediss://… with the `tls` feature
//! cargo run -p fencelock --example by_hand
//! ```

use fencelock::{LockOptions, Locker, LockerConfig};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), fencelock::LockError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let locker = Locker::new(LockerConfig::new([url]))?;

    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .wait(Duration::from_secs(2));
    let guard = locker.acquire("report:daily", &options).await?;
    // Pass the fence to whatever you write: storage that keeps the highest fence it has seen
    // can refuse a write from a holder whose lock has since been taken over.
    println!("holding {} with fence {}", guard.resource(), guard.fence());

    // The work takes longer than planned: keep the lock for 30 s more.
    assert!(guard.extend(Duration::from_secs(30)).await?, "still ours");

    // Anyone can look (an operator's dashboard, a health check).
    let state = locker.inspect("report:daily").await?;
    println!(
        "locked: {}, remaining: {:?}, last fence: {:?}",
        state.locked, state.remaining, state.last_fence
    );

    // A second try from elsewhere does not wait and is told it is busy.
    let busy = locker.try_acquire("report:daily", &options).await;
    println!(
        "a second holder: {}",
        busy.map(|_| "got it").unwrap_or_else(|e| e.code())
    );

    let still_ours = guard.release().await?;
    println!("released; it was still ours: {still_ours}");
    Ok(())
}
