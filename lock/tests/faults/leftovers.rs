//! What a lock leaves in Redis once it is done with. The defects pinned here: a `min_hold`
//! release left the holder's token in the key, so an extension in flight could re-arm the
//! full TTL; fence counters never expired, one key for every resource ever locked.

use crate::common::nodes::single_node;
use crate::common::{connection, lock_key, unique};
use fencelock::LockOptions;
use redis::AsyncCommands;
use std::time::Duration;

/// Defect 6: a release with `min_hold` left the holder's token in place, so an extension in
/// flight could re-arm the full TTL. The key must stay, owned by nobody.
#[tokio::test]
async fn a_min_hold_release_leaves_a_key_nobody_owns() {
    let (_redis, url, locker) = single_node(Duration::from_secs(1));
    let resource = unique("min-hold-owner");
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .min_hold(Duration::from_secs(2));
    let guard = locker.acquire(&resource, &options).await.unwrap();
    let mut conn = connection(&url).await;
    let token: String = conn.get(lock_key(&resource)).await.unwrap();
    assert!(guard.release().await.unwrap());
    let after: Option<String> = conn.get(lock_key(&resource)).await.unwrap();
    assert!(after.is_some(), "min_hold must keep the key");
    assert_ne!(
        after.as_deref(),
        Some(token.as_str()),
        "the holder still owns it"
    );
}

/// Defect 8: fence counters never expired: one key per resource ever locked.
#[tokio::test]
async fn fence_counters_expire() {
    let (_redis, url, locker) = single_node(Duration::from_secs(1));
    for n in 0..50 {
        let guard = locker
            .acquire(&format!("fence-expiry:{n}"), &LockOptions::new())
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    let mut conn = connection(&url).await;
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let pttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(pttl > 0, "{key} never expires (PTTL {pttl})");
    }
}
