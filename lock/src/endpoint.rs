//! Where one node's connections go: a fixed Redis server, or whichever server a Sentinel group
//! names master at the moment a connection is made. The rest of the crate sees a node either
//! way; after a failover, new connections (made once the old ones broke) reach the new master.

use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::RedisResult;
use std::sync::Arc;

/// How to reach one node.
#[derive(Clone)]
pub(crate) enum Endpoint {
    /// One Redis server.
    Fixed(Box<redis::Client>),
    /// The master of a Sentinel group, asked of the sentinels for every new connection.
    Sentinel {
        sentinels: Arc<tokio::sync::Mutex<SentinelClient>>,
        /// `sentinel:<master name>`, for errors and logs.
        shown: String,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address())
    }
}

impl Endpoint {
    /// The master named `master` by the sentinels at `sentinels` (URLs of `redis-sentinel`
    /// processes, not of Redis servers).
    pub(crate) fn sentinel(sentinels: &[String], master: &str) -> RedisResult<Endpoint> {
        // redis-rs takes the name as `String` without TLS support and as `AsRef<str>` with it.
        #[allow(clippy::unnecessary_to_owned)]
        let client = SentinelClient::build(
            sentinels.to_vec(),
            master.to_string(),
            None,
            SentinelServerType::Master,
        )?;
        Ok(Endpoint::Sentinel {
            sentinels: Arc::new(tokio::sync::Mutex::new(client)),
            shown: format!("sentinel:{master}"),
        })
    }

    /// A client for the server to connect to now: the fixed one, or the master the sentinels
    /// name (redis-rs checks that it answers `ROLE` as master).
    pub(crate) async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Endpoint::Fixed(client) => Ok((**client).clone()),
            Endpoint::Sentinel { sentinels, .. } => sentinels.lock().await.async_get_client().await,
        }
    }

    /// `host:port`, or `sentinel:<master name>`.
    pub(crate) fn address(&self) -> String {
        match self {
            Endpoint::Fixed(client) => client.get_connection_info().addr().to_string(),
            Endpoint::Sentinel { shown, .. } => shown.clone(),
        }
    }
}
