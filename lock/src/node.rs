//! One Redis node: a bb8-redis pool for commands and a [`Notifier`] for release messages.

use crate::background;
use crate::error::NodeError;
use crate::notify::Notifier;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisError, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// bb8-redis's manager, plus a way to retire a connection that a command found broken.
///
/// bb8-redis never reports a multiplexed connection as broken, so after a Redis restart the pool
/// would keep handing out dead connections, and testing each one on checkout would cost a PING
/// round trip per call. Instead a failed command marks its connection and bb8 drops it.
///
/// One dead connection usually means they all are (Redis restarted), so a failure also bumps
/// the node's *generation*: connections from an older generation are retired at checkout
/// without being tried, and only the call that found the first dead one fails.
#[derive(Debug, Clone)]
struct NodeConnections {
    manager: RedisConnectionManager,
    generation: Arc<AtomicU64>,
}

#[derive(Debug)]
struct NodeConnection {
    redis: MultiplexedConnection,
    generation: u64,
    broken: bool,
    /// Closed when the runtime that made the connection (and runs its I/O) has stopped.
    runtime_stopped: oneshot::Receiver<()>,
}

impl NodeConnection {
    /// Whether the runtime running this connection's I/O is gone (the connection with it).
    fn orphaned(&mut self) -> bool {
        matches!(
            self.runtime_stopped.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        )
    }

    /// Records a failed command; errors that mean the connection is gone retire it (and say so).
    fn failed(&mut self, err: &RedisError, generation: &AtomicU64) -> bool {
        let gone = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_unrecoverable_error()
            || err.is_timeout();
        if gone {
            self.broken = true;
            generation.fetch_max(self.generation + 1, Ordering::SeqCst);
        }
        gone
    }
}

impl bb8::ManageConnection for NodeConnections {
    type Connection = NodeConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<NodeConnection, RedisError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let redis = self.manager.connect().await?;
        // The connection's I/O task lives on the runtime that made it (the caller's: fastest,
        // no thread hop) and dies with it. A sentinel task beside it tells checkout when that
        // runtime has stopped, so a dead connection is retired before anyone uses it.
        // (It ends with the connection: `closed` resolves once the receiver is dropped.)
        let (mut alive, runtime_stopped) = oneshot::channel::<()>();
        tokio::spawn(async move { alive.closed().await });
        Ok(NodeConnection {
            redis,
            generation,
            broken: false,
            runtime_stopped,
        })
    }

    async fn is_valid(&self, conn: &mut NodeConnection) -> Result<(), RedisError> {
        self.manager.is_valid(&mut conn.redis).await
    }

    fn has_broken(&self, conn: &mut NodeConnection) -> bool {
        conn.broken
    }
}

/// Hears about failed connection attempts from bb8, so that callers waiting for a connection
/// fail at once instead of waiting out the checkout timeout. bb8 reports a failed connect only
/// to its error sink and lets `get()` wait for a connection that is not coming; with a node down
/// that would add the whole timeout to every call, in quorum mode to every acquisition.
#[derive(Debug, Clone, Default)]
struct ConnectFailures {
    notify: Arc<Notify>,
    last: Arc<Mutex<String>>,
}

impl bb8::ErrorSink<RedisError> for ConnectFailures {
    fn sink(&self, error: RedisError) {
        *self.last.lock().expect("last error lock") = error.to_string();
        self.notify.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// A script with its keys and arguments, ready to run on any node.
#[derive(Debug)]
pub(crate) struct ScriptCall<'a> {
    pub script: &'a Script,
    /// Running it twice does no harm (release, extend, raise a fence): after a connection
    /// failure it gets one more go on a fresh connection. Not so for anything that takes a
    /// lock: had the first run taken it, the second would find the lock busy — held by us.
    pub repeatable: bool,
    pub keys: &'a [&'a str],
    pub args: &'a [&'a str],
}

#[derive(Debug)]
pub(crate) struct Node {
    pub index: usize,
    pub address: String,
    pool: bb8::Pool<NodeConnections>,
    connect_failures: ConnectFailures,
    generation: Arc<AtomicU64>,
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
        locker_id: &Arc<str>,
    ) -> Result<Node, String> {
        let client = redis::Client::open(url).map_err(|err| format!("Redis URL {url:?}: {err}"))?;
        let address = client.get_connection_info().addr().to_string();
        let manager = RedisConnectionManager::new(url).map_err(|err| err.to_string())?;
        let connect_failures = ConnectFailures::default();
        let generation = Arc::new(AtomicU64::new(0));
        // bb8 spawns its reaper where the pool is built: on the background runtime, which
        // outlives any caller's (and lets a locker be made outside a runtime).
        let _background = background::runtime().enter();
        let pool = bb8::Pool::builder()
            .max_size(pool_size)
            .min_idle(None)
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(timeout)
            .error_sink(Box::new(connect_failures.clone()))
            .build_unchecked(NodeConnections {
                manager,
                generation: Arc::clone(&generation),
            });
        Ok(Node {
            index,
            address,
            pool,
            connect_failures,
            generation,
            notifier: Notifier::new(client, Arc::clone(locker_id)),
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

    async fn run_unbounded<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
    ) -> Result<T, NodeError> {
        let mut invocation = call.script.prepare_invoke();
        for key in call.keys {
            invocation.key(*key);
        }
        for arg in call.args {
            invocation.arg(*arg);
        }
        let mut second_go = false;
        loop {
            let mut conn = self.connection().await?;
            match invocation.invoke_async(&mut conn.redis).await {
                Ok(reply) => return Ok(reply),
                Err(err) => {
                    let connection_lost = conn.failed(&err, &self.generation);
                    // The connection died under the call: Redis restarted, or the runtime that
                    // ran the connection stopped (a release from a dropped guard often meets
                    // one of those at shutdown). Nothing to do with the script itself.
                    if connection_lost && call.repeatable && !second_go {
                        second_go = true;
                        continue;
                    }
                    return Err(self.error(err.to_string()));
                }
            }
        }
    }

    /// A pooled connection of the current generation, or the error of the attempt to make one.
    async fn connection(&self) -> Result<bb8::PooledConnection<'_, NodeConnections>, NodeError> {
        loop {
            let mut conn = self.checkout().await?;
            if conn.generation >= self.generation.load(Ordering::SeqCst) && !conn.orphaned() {
                return Ok(conn);
            }
            conn.broken = true;
        }
    }

    async fn checkout(&self) -> Result<bb8::PooledConnection<'_, NodeConnections>, NodeError> {
        let connect_failed = self.connect_failures.notify.notified();
        tokio::pin!(connect_failed);
        connect_failed.as_mut().enable();
        tokio::select! {
            biased;
            conn = self.pool.get() => conn.map_err(|err| self.error(format!("no connection: {err}"))),
            () = connect_failed => {
                let cause = self.connect_failures.last.lock().expect("last error lock").clone();
                Err(self.error(format!("cannot connect: {cause}")))
            }
        }
    }

    /// PING, bounded by the node timeout. A dead pooled connection gets one retry on a fresh
    /// one (PING is harmless to repeat), so a restarted node reads as up.
    pub(crate) async fn ping(&self) -> bool {
        let ping = async {
            for _ in 0..2 {
                let mut conn = self.connection().await.ok()?;
                match redis::cmd("PING")
                    .query_async::<String>(&mut conn.redis)
                    .await
                {
                    Ok(pong) => return Some(pong),
                    Err(err) => {
                        conn.failed(&err, &self.generation);
                    }
                }
            }
            None
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
