//! A transfer between two balances under both locks (`acquire_many`): transfers run in both
//! directions at once and none deadlocks, because every caller takes the locks in one order.
//! The balances live in Redis here, read and written back with a deliberately racy
//! read-modify-write that only the locks keep correct.
//!
//! ```sh
//! cargo run -p fencelock --example transfer
//! ```

use fencelock::{LockOptions, Locker, LockerConfig};
use redis::AsyncCommands;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let locker = Locker::new(LockerConfig::new([url.as_str()]))?;
    let mut redis = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let run = uuid_like();
    let accounts = [format!("example:{run}:alice"), format!("example:{run}:bob")];
    for account in &accounts {
        let () = redis.set(account, 1_000).await?;
    }

    let mut transfers = Vec::new();
    for task in 0..8 {
        let (locker, mut redis, accounts) = (locker.clone(), redis.clone(), accounts.clone());
        transfers.push(tokio::spawn(async move {
            // Half of the tasks pay alice → bob, the other half bob → alice.
            let (from, to) = if task % 2 == 0 { (0, 1) } else { (1, 0) };
            let options = LockOptions::new().wait(Duration::from_secs(10));
            for _ in 0..25 {
                let both = locker
                    .acquire_many(&[&accounts[from], &accounts[to]], &options)
                    .await?;
                let from_balance: i64 = redis.get(&accounts[from]).await?;
                let to_balance: i64 = redis.get(&accounts[to]).await?;
                let () = redis.set(&accounts[from], from_balance - 10).await?;
                let () = redis.set(&accounts[to], to_balance + 10).await?;
                both.release().await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for transfer in transfers {
        transfer.await?.map_err(|err| err.to_string())?;
    }
    let alice: i64 = redis.get(&accounts[0]).await?;
    let bob: i64 = redis.get(&accounts[1]).await?;
    println!(
        "200 transfers done: alice {alice}, bob {bob}, total {}",
        alice + bob
    );
    assert_eq!(alice + bob, 2_000, "no money created or lost");
    let _: () = redis.del(&accounts).await?;
    Ok(())
}

/// A per-run suffix, so runs never share keys.
fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.as_nanos())
        .unwrap_or_default()
}
