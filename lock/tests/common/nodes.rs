//! Redis servers of a test's own, and lockers on them: for tests that pause, kill, flush or
//! restart a node (doing that to the shared one would stall or break the other tests).

use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_testkit::RedisServer;
use std::time::Duration;

/// `count` redis-servers of the test's own, and their URLs.
pub fn start_nodes(count: usize) -> (Vec<RedisServer>, Vec<String>) {
    let nodes: Vec<RedisServer> = (0..count).map(|_| RedisServer::start()).collect();
    let urls = nodes.iter().map(RedisServer::url).collect();
    (nodes, urls)
}

/// A locker on the nodes at `urls` that gives each node `node_timeout` to answer.
pub fn locker_with_timeout(urls: &[String], node_timeout: Duration) -> Locker {
    Locker::new(LockerConfig::new(urls.to_vec()).node_timeout(node_timeout)).unwrap()
}

/// A redis-server of the test's own and a locker on it with `node_timeout`.
pub fn single_node(node_timeout: Duration) -> (RedisServer, String, Locker) {
    let redis = RedisServer::start();
    let url = redis.url();
    let locker = locker_with_timeout(std::slice::from_ref(&url), node_timeout);
    (redis, url, locker)
}

/// One lock taken and given back, so the locker has pooled connections before a fault: the
/// commands under test then really reach Redis (a connection being made during a pause would
/// stall in its handshake, before any lock command is sent).
/// (Fair locks run another script, which Redis must have loaded before the pause too.)
pub async fn warm_up(locker: &Locker) {
    let single = locker.mode() == fencelock::Mode::Single;
    for fair in [false, single] {
        let guard = locker
            .acquire(&super::unique("warm-up"), &LockOptions::new().fair(fair))
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
}
