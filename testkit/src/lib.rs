//! Real servers for tests: `redis-server`, PostgreSQL and HAProxy on free loopback ports in
//! temp dirs.
//!
//! Nothing here is a mock. Each server runs as a child of a tiny `sh` *guardian* whose stdin
//! is a pipe from the test process. When the test process exits — normally, after a panic, or
//! killed — the pipe closes, the guardian stops the server and deletes its directory. That is
//! what keeps shared servers (held in statics, which Rust never drops) from outliving the test
//! binary.
//!
//! ```no_run
//! let redis = fencelock_testkit::RedisServer::start();
//! println!("redis at {}", redis.url());
//! ```

pub mod component;
mod guardian;
pub mod haproxy;
mod postgres;
pub mod programs;
mod proxy;
mod redis;
mod redis_cluster;
mod sentinel;
mod tls;

pub use component::Component;
pub use haproxy::HaProxy;
pub use postgres::PostgresServer;
pub use proxy::{Fault, FaultProxy};
pub use redis::{ephemeral_args as redis_args, shared_redis, RedisServer};
pub use redis_cluster::{RedisCluster, CLUSTER_NODE_TIMEOUT};
pub use sentinel::{SentinelGroup, SENTINEL_DOWN_AFTER, SENTINEL_MASTER_NAME};
pub use tls::TestCertificates;

use std::net::TcpListener;
use std::path::PathBuf;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// Finds `program` (see [`programs::find`]), or panics naming the Debian package to install.
pub(crate) fn find_program(program: &str, debian_package: &str) -> PathBuf {
    programs::find(program).unwrap_or_else(|| {
        panic!(
            "`{program}` not found: install the Debian package `{debian_package}` \
             (apt-get install -y {debian_package}), or run `cargo xtask test`, which installs it"
        )
    })
}
