//! `rediss://`: locking over TLS against real redis-servers listening on `tls-port`, with a
//! throwaway CA made by the test. Single node and quorum.

mod common;

use common::{exists, lock_key, unique};
use fencelock::{LockError, LockOptions, Locker, LockerConfig};
use fencelock_testkit::{RedisServer, TestCertificates};
use std::time::Duration;

/// A client for `server`'s TLS port that trusts only the test CA.
fn tls_client(server: &RedisServer, certificates: &TestCertificates) -> redis::Client {
    redis::Client::build_with_tls(
        server.tls_url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(certificates.ca_pem().as_bytes().to_vec()),
        },
    )
    .expect("a TLS client")
}

/// A locker over `servers`' TLS ports whose waiters, hearing nothing, would sleep 30 s.
fn tls_locker(servers: &[RedisServer], certificates: &TestCertificates) -> Locker {
    let clients = servers
        .iter()
        .map(|server| tls_client(server, certificates));
    let mut config = LockerConfig::from_clients(clients);
    config.retry_min_delay = Duration::from_secs(30);
    config.retry_max_delay = Duration::from_secs(30);
    Locker::new(config).unwrap()
}

/// Takes, hands over and releases a lock through `locker`, checking on the servers' plain ports
/// that it really was in Redis.
async fn lock_over(locker: &Locker, other: &Locker, servers: &[RedisServer]) {
    let resource = unique("tls");
    let options = LockOptions::new().ttl(Duration::from_secs(5));
    let first = locker
        .acquire(&resource, &options)
        .await
        .expect("acquired over TLS");
    let key = lock_key(&resource);
    let mut held_on = Vec::new();
    for server in servers {
        held_on.push(exists(&server.url(), &key).await);
    }
    assert!(
        held_on.iter().filter(|&&held| held).count() > servers.len() / 2,
        "the lock is on a majority: {held_on:?}"
    );
    // A waiter in another locker (another process, as far as the lock can tell) that would
    // sleep 30 s unless it hears the release over its TLS pub/sub connection.
    let waiter = {
        let locker = other.clone();
        let resource = resource.clone();
        tokio::spawn(async move {
            locker
                .acquire(&resource, &LockOptions::new().wait(Duration::from_secs(5)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first_fence = first.fence();
    assert!(first.release().await.expect("released over TLS"));
    let second = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by the release message, not its 30 s timer")
        .unwrap()
        .expect("the waiter got the lock");
    assert!(second.fence() > first_fence);
    assert!(second.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_locks_over_tls_with_a_private_ca() {
    let certificates = TestCertificates::generate();
    let server = RedisServer::start_tls(&certificates);
    let servers = std::slice::from_ref(&server);
    let (locker, other) = (
        tls_locker(servers, &certificates),
        tls_locker(servers, &certificates),
    );
    lock_over(&locker, &other, servers).await;
    assert!(locker.health().await.quorum);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quorum_locks_over_tls() {
    let certificates = TestCertificates::generate();
    let servers: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_tls(&certificates))
        .collect();
    let (locker, other) = (
        tls_locker(&servers, &certificates),
        tls_locker(&servers, &certificates),
    );
    lock_over(&locker, &other, &servers).await;
}

/// A `rediss://` URL trusts the system's roots only: a server certificate from the test CA is
/// refused, promptly, as `Unavailable` — never a lock taken over an unverified connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let certificates = TestCertificates::generate();
    let server = RedisServer::start_tls(&certificates);
    let locker = Locker::new(LockerConfig::new([server.tls_url()])).unwrap();
    let started = std::time::Instant::now();
    let outcome = locker
        .acquire(&unique("untrusted"), &LockOptions::new())
        .await;
    assert!(
        matches!(outcome, Err(LockError::Unavailable { .. })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused promptly, took {:?}",
        started.elapsed()
    );
}
