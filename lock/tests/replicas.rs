//! `LockerConfig::wait_replicas`: a lock, an extension or a fence is relied upon only once the
//! node's replicas acknowledged it (`WAIT`), so a failover to a replica cannot silently lose
//! it. Real processes: a master and a replica of it (`--replicaof`), the replica stopped with
//! SIGSTOP to withhold its acknowledgement.

mod common;

use common::faults::{gone_within, retry_while_unavailable};
use fencelock::{LockError, LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use std::time::Duration;

/// A master and one replica that has caught up with it.
fn master_with_replica() -> (RedisServer, RedisServer) {
    let master = RedisServer::start_master();
    let replica = RedisServer::start_replica_of(&master);
    (master, replica)
}

/// How long a replica just resumed may take to acknowledge again.
const CATCH_UP: Duration = Duration::from_secs(5);

fn locker(master: &RedisServer) -> Locker {
    Locker::new(
        LockerConfig::new([master.url()])
            .wait_replicas(1, Duration::from_millis(200))
            .confirm_pass_on(true),
    )
    .unwrap()
}

#[tokio::test]
async fn a_lock_is_granted_once_a_replica_acknowledged_it() {
    let (master, _replica) = master_with_replica();
    let locker = locker(&master);
    let guard = locker
        .acquire("replicas:granted", &LockOptions::new())
        .await
        .expect("granted with a live replica");
    assert!(guard.fence() > 0);
    assert!(guard.extend(Duration::from_secs(5)).await.unwrap());
    assert!(guard.release().await.unwrap());
}

/// The replica is stopped: the master takes the lock but nobody acknowledges it, so it is not
/// relied upon — `Unavailable`, and what was written is undone on the master.
#[tokio::test]
async fn a_lock_no_replica_acknowledged_is_unavailable_and_undone() {
    let (master, replica) = master_with_replica();
    let locker = locker(&master);
    replica.pause();
    let outcome = locker
        .try_acquire("replicas:unacknowledged", &LockOptions::new())
        .await;
    replica.resume();
    let Err(LockError::Unavailable { errors, .. }) = outcome else {
        panic!("expected Unavailable, got {outcome:?}");
    };
    assert!(errors.to_string().contains("replica"), "{errors}");
    let key = "fencelock:{replicas:unacknowledged}:lock";
    assert!(
        gone_within(&master.url(), key, Duration::from_secs(2)).await,
        "the unacknowledged lock was undone on the master"
    );
    // Acknowledged again once the replica is back (it may take a moment to catch up).
    let options = LockOptions::new();
    let guard = retry_while_unavailable(CATCH_UP, || {
        locker.acquire("replicas:unacknowledged", &options)
    })
    .await
    .expect("granted once the replica is back");
    assert!(guard.release().await.unwrap());
}

/// An extension no replica acknowledged does not advance the validity: the guard reports the
/// nodes unavailable, and its lease stays where it was.
#[tokio::test]
async fn an_extension_no_replica_acknowledged_does_not_count() {
    let (master, replica) = master_with_replica();
    let locker = locker(&master);
    let guard = locker
        .acquire("replicas:extend", &LockOptions::new())
        .await
        .unwrap();
    let valid_until = guard.valid_until();
    replica.pause();
    let extended = guard.extend(Duration::from_secs(30)).await;
    replica.resume();
    assert!(
        matches!(extended, Err(LockError::Unavailable { .. })),
        "{extended:?}"
    );
    assert_eq!(guard.valid_until(), valid_until);
    let extended =
        retry_while_unavailable(CATCH_UP, || guard.extend(Duration::from_secs(30))).await;
    assert!(extended.unwrap());
    assert!(guard.valid_until() > valid_until);
    assert!(guard.release().await.unwrap());
}

/// Misconfiguration shows at once: asking for more replicas than the node has.
#[tokio::test]
async fn asking_for_replicas_a_node_does_not_have_is_unavailable() {
    let redis = RedisServer::start();
    let locker =
        Locker::new(LockerConfig::new([redis.url()]).wait_replicas(1, Duration::from_millis(50)))
            .unwrap();
    let outcome = locker
        .try_acquire("replicas:none", &LockOptions::new())
        .await;
    assert!(
        matches!(outcome, Err(LockError::Unavailable { .. })),
        "{outcome:?}"
    );
}

#[test]
fn the_acknowledgement_timeout_must_fit_in_the_node_timeout() {
    for (replicas, timeout) in [(1, Duration::ZERO), (1, Duration::from_secs(1))] {
        let built = Locker::new(
            LockerConfig::new(["redis://127.0.0.1:1/"])
                .node_timeout(Duration::from_millis(500))
                .wait_replicas(replicas, timeout),
        );
        assert!(
            matches!(built, Err(LockError::Config(_))),
            "{replicas} replicas within {timeout:?}: {built:?}"
        );
    }
}
