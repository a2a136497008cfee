//! One Redis node: a bb8-redis pool for commands and a [`Notifier`] for release messages.

use crate::error::NodeError;
use crate::notify::Notifier;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisError, Script};
use std::time::Duration;

/// bb8-redis's manager, plus a way to retire a connection that a command found broken.
///
/// bb8-redis never reports a multiplexed connection as broken, so after a Redis restart the pool
/// would keep handing out dead connections, and testing each one on checkout would cost a PING
/// round trip per call. Instead a failed command marks its connection and bb8 drops it.
#[derive(Debug, Clone)]
struct NodeConnections(RedisConnectionManager);

#[derive(Debug)]
struct NodeConnection {
    redis: MultiplexedConnection,
    broken: bool,
}

impl bb8::ManageConnection for NodeConnections {
    type Connection = NodeConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<NodeConnection, RedisError> {
        let redis = self.0.connect().await?;
        Ok(NodeConnection {
            redis,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut NodeConnection) -> Result<(), RedisError> {
        self.0.is_valid(&mut conn.redis).await
    }

    fn has_broken(&self, conn: &mut NodeConnection) -> bool {
        conn.broken
    }
}

/// A script with its keys and arguments, ready to run on any node.
#[derive(Debug)]
pub(crate) struct ScriptCall<'a> {
    pub script: &'a Script,
    pub keys: &'a [&'a str],
    pub args: &'a [&'a str],
}

#[derive(Debug)]
pub(crate) struct Node {
    pub index: usize,
    pub address: String,
    pool: bb8::Pool<NodeConnections>,
    pub notifier: Notifier,
    timeout: Duration,
}

impl Node {
    /// Builds the pool lazily: a node that is down at start-up is not an error until it is used.
    pub(crate) fn new(
        index: usize,
        url: &str,
        pool_size: u32,
        timeout: Duration,
    ) -> Result<Node, String> {
        let client = redis::Client::open(url).map_err(|err| format!("Redis URL {url:?}: {err}"))?;
        let address = client.get_connection_info().addr().to_string();
        let manager = RedisConnectionManager::new(url).map_err(|err| err.to_string())?;
        let pool = bb8::Pool::builder()
            .max_size(pool_size)
            .min_idle(None)
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(timeout)
            .build_unchecked(NodeConnections(manager));
        Ok(Node {
            index,
            address,
            pool,
            notifier: Notifier::new(client),
            timeout,
        })
    }

    /// Runs a script, bounded by the node timeout (connection checkout included).
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
        timeout: Duration,
    ) -> Result<T, NodeError> {
        let timeout = timeout.min(self.timeout);
        match tokio::time::timeout(timeout, self.run_unbounded(call)).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!("no answer within {timeout:?}"))),
        }
    }

    async fn run_unbounded<T: FromRedisValue>(&self, call: &ScriptCall<'_>) -> Result<T, NodeError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|err| self.error(format!("no connection: {err}")))?;
        let mut invocation = call.script.prepare_invoke();
        for key in call.keys {
            invocation.key(*key);
        }
        for arg in call.args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut conn.redis)
            .await
            .map_err(|err| {
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_unrecoverable_error()
                    || err.is_timeout()
                {
                    conn.broken = true;
                }
                self.error(err.to_string())
            })
    }

    /// PING, bounded by the node timeout.
    pub(crate) async fn ping(&self) -> bool {
        let ping = async {
            let mut conn = self.pool.get().await.ok()?;
            let answer: Result<String, _> = redis::cmd("PING").query_async(&mut conn.redis).await;
            if answer.is_err() {
                conn.broken = true;
            }
            answer.ok()
        };
        matches!(
            tokio::time::timeout(self.timeout, ping).await,
            Ok(Some(pong)) if pong == "PONG"
        )
    }

    fn error(&self, message: String) -> NodeError {
        NodeError {
            node: self.index,
            address: self.address.clone(),
            message,
        }
    }
}
