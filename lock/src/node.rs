//! One Redis node: a bb8 pool of multiplexed connections for commands and a [`Notifier`] for
//! release messages, both reaching the node through its [`Endpoint`] (a fixed server, or the
//! master a Sentinel group names).

use crate::background;
use crate::endpoint::Endpoint;
use crate::error::NodeError;
use crate::notify::Notifier;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisError, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// bb8's connection manager for one node, with a way to retire a connection that a command
/// found broken.
///
/// A multiplexed connection never reports itself broken to bb8, so after a Redis restart the pool
/// would keep handing out dead connections, and testing each one on checkout would cost a PING
/// round trip per call. Instead a failed command marks its connection and bb8 drops it.
///
/// One dead connection usually means they all are (Redis restarted), so a failure also bumps
/// the node's *generation*: connections from an older generation are retired at checkout
/// without being tried, and only the call that found the first dead one fails.
///
/// Connections are made without redis-rs's own response timeout (500 ms by default): every
/// call is bounded by the node timeout already, and a second, shorter limit underneath would
/// silently cut a longer `node_timeout` short.
#[derive(Debug, Clone)]
struct NodeConnections {
    endpoint: Endpoint,
    config: redis::AsyncConnectionConfig,
    generation: Arc<AtomicU64>,
}

#[derive(Debug)]
struct NodeConnection {
    redis: MultiplexedConnection,
    generation: u64,
    broken: bool,
}

impl NodeConnection {
    /// Records a failed command; errors that mean the connection is gone retire it (and say so).
    /// `READONLY` counts: the server was a master and is a replica now (a failover demoted
    /// it), so a Sentinel endpoint's next connection must go to the new master.
    fn failed(&mut self, err: &RedisError, generation: &AtomicU64) -> bool {
        let gone = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_unrecoverable_error()
            || err.is_timeout()
            || err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
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
        let (endpoint, config) = (self.endpoint.clone(), self.config.clone());
        // Made on the background runtime, where the connection's I/O task then lives: never on
        // a caller's runtime, which may block (an actix worker in a blocking call) or stop, and
        // would take every call routed over this pooled connection down with it — other
        // runtimes' calls and the watchdogs included.
        let made = background::runtime().spawn(async move {
            let redis = endpoint
                .client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            // All scripts at once (pipelined on the multiplexed connection: one round trip).
            futures_util::future::try_join_all(crate::scripts::all().into_iter().map(|script| {
                let mut conn = redis.clone();
                async move { script.load_async(&mut conn).await }
            }))
            .await?;
            Ok::<_, RedisError>(redis)
        });
        let redis = made
            .await
            .map_err(|err| RedisError::from(std::io::Error::other(err.to_string())))??;
        Ok(NodeConnection {
            redis,
            generation,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut NodeConnection) -> Result<(), RedisError> {
        redis::cmd("PING")
            .query_async::<String>(&mut conn.redis)
            .await
            .map(drop)
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
    /// The last failure, and whether it was a timeout (the node accepts TCP but says nothing).
    last: Arc<Mutex<(String, bool)>>,
}

impl bb8::ErrorSink<RedisError> for ConnectFailures {
    fn sink(&self, error: RedisError) {
        *self.last.lock().expect("last error lock") = (error.to_string(), error.is_timeout());
        self.notify.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// A script with its keys and arguments, ready to run on any node — in a round, or later
/// from a task of its own (an undo, a resent release). The one shape every script call has.
/// Cheap to clone (a round sends one to every node's task): its strings are shared.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    script: &'static Script,
    /// Whether it may get a second go after a connection failure.
    retry: Retry,
    keys: Arc<[String]>,
    args: Arc<[String]>,
    /// A call that writes a lock: relied upon only once this many replicas acknowledged the
    /// write (`WAIT`), within this long.
    replica_ack: Option<(u32, Duration)>,
}

impl Call {
    pub(crate) fn new(script: &'static Script, retry: Retry, keys: &[&str], args: &[&str]) -> Call {
        Call {
            script,
            retry,
            keys: keys.iter().map(|key| (*key).to_string()).collect(),
            args: args.iter().map(|arg| (*arg).to_string()).collect(),
            replica_ack: None,
        }
    }

    /// When the script says it wrote (a positive reply), `WAIT` for `replicas` to acknowledge
    /// it within `timeout` on the same connection, right after; fewer is a failed call (see
    /// `LockerConfig::wait_replicas`). Zero replicas: no wait.
    pub(crate) fn acknowledged_by(mut self, (replicas, timeout): (u32, Duration)) -> Call {
        self.replica_ack = (replicas > 0).then_some((replicas, timeout));
        self
    }

    fn invocation(&self) -> redis::ScriptInvocation<'static> {
        let mut invocation = self.script.prepare_invoke();
        for key in self.keys.iter() {
            invocation.key(key);
        }
        for arg in self.args.iter() {
            invocation.arg(arg);
        }
        invocation
    }
}

/// The connection a call went out on, shared by the caller and the task that runs the call.
/// Commands on one connection run in order, so a follow-up sent on it runs after the call, even
/// if the call's reply never came (a timeout, a dropped future, a hung node): that is how an
/// attempt with an unknown outcome is undone safely.
///
/// The call runs on the background runtime and may outlive the caller's interest in it, so the
/// two meet under one lock: the task records the connection and sends only if the caller has
/// not given up; a caller that gives up takes the connection. Either the caller finds the
/// connection (the call may have gone out: its undo goes behind it) or the call is never sent.
#[derive(Debug, Default)]
pub(crate) struct SentOn(Mutex<SentOnState>);

#[derive(Debug, Default)]
struct SentOnState {
    conn: Option<MultiplexedConnection>,
    given_up: bool,
}

impl SentOn {
    /// The call is about to go out on `conn`; `false` if the caller gave up (do not send).
    fn record(&self, conn: &MultiplexedConnection) -> bool {
        let mut state = self.0.lock().expect("sent_on lock");
        if state.given_up {
            return false;
        }
        state.conn = Some(conn.clone());
        true
    }

    /// The caller gives up on the call: from now on it is not sent; the connection it went out
    /// on, if it may have gone out.
    pub(crate) fn give_up(&self) -> Option<MultiplexedConnection> {
        let mut state = self.0.lock().expect("sent_on lock");
        state.given_up = true;
        state.conn.take()
    }
}

/// Whether a script's reply says it wrote: a fence issued or raised, a lock extended — a
/// positive number (a fence comes as text).
fn wrote(reply: &redis::Value) -> bool {
    i64::from_redis_value_ref(reply).is_ok_and(|value| value > 0)
}

/// While a node is suspected hung (a call or follow-up got no answer in time), quorum rounds
/// skip it, and it is probed from the background (a PING) at most this often.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Whether a call that met a dead connection may be sent again on a fresh one (the first may
/// or may not have run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Anything that takes a lock: had the first run taken it, the second would find the lock
    /// busy — held by us.
    Never,
    /// Running it twice does no harm and the second answer means what the first would have
    /// (extend, confirm, raise a fence, inspect).
    Safely,
    /// Running it twice does no harm, but a "no" (0) from the second run may only mean that the
    /// first one did the work (a release, a force-unlock deletes the key): it counts as no
    /// answer, never as "not ours".
    NoMeansUnknown,
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
    /// Quorum mode: skip this node while it is suspected hung and probe it in the background
    /// (see [`PROBE_EVERY`]). A single node is never skipped: there is nobody else to ask.
    skip_when_suspect: bool,
    /// Set when the node failed to answer in time; cleared by any reply.
    suspect: Mutex<Option<Suspicion>>,
    /// Releases and undos waiting for this node to answer again (see [`Node::follow_up`]).
    resends: Mutex<Resends>,
}

/// Releases to send to a node once it answers: each with the instant after which its lock
/// has expired anyway. One task sends them all, however many pile up while a node is down.
#[derive(Debug, Default)]
struct Resends {
    /// Oldest first; a call that got no answer goes to the back, so one that keeps failing
    /// for a reason of its own cannot hold up the others.
    calls: std::collections::VecDeque<(Call, Instant)>,
    sending: bool,
    /// Releases dropped because the queue was full, since the last warning.
    dropped: u64,
}

/// At most this many releases wait for one node; more are dropped (their locks expire by
/// their TTL): a node down under a high release rate must not grow memory without bound.
const MAX_WAITING_RESENDS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Suspicion {
    next_probe: Instant,
}

impl Node {
    /// Builds the pool lazily: a node that is down at start-up is not an error until it is used.
    pub(crate) fn new(
        index: usize,
        endpoint: Endpoint,
        pool_size: u32,
        timeout: Duration,
        locker_id: &Arc<str>,
        skip_when_suspect: bool,
    ) -> Result<Node, String> {
        let address = endpoint.address();
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
                endpoint: endpoint.clone(),
                config: redis::AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(timeout)),
                generation: Arc::clone(&generation),
            });
        Ok(Node {
            index,
            address,
            pool,
            connect_failures,
            generation,
            notifier: Notifier::new(endpoint, Arc::clone(locker_id)),
            timeout,
            skip_when_suspect,
            suspect: Mutex::new(None),
            resends: Mutex::default(),
        })
    }

    /// If this node is suspect and its next probe is due, PINGs it from the background: an
    /// answer clears the suspicion, silence renews it. The probe is never part of a round, so
    /// no round waits on a node that is probably hung.
    pub(crate) fn probe_if_due(self: &Arc<Self>) {
        if !self.skip_when_suspect {
            return;
        }
        {
            let mut suspect = self.suspect.lock().expect("suspect lock");
            let Some(suspicion) = suspect.as_mut() else {
                return;
            };
            let now = Instant::now();
            if now < suspicion.next_probe {
                return;
            }
            // Not before this probe has had its full timeout.
            suspicion.next_probe = now + self.timeout.max(PROBE_EVERY);
        }
        let node = Arc::clone(self);
        background::runtime().spawn(async move {
            if node.ping().await {
                node.answered();
            } else {
                node.unanswered();
            }
        });
    }

    fn answered(&self) {
        if self.skip_when_suspect {
            let mut suspect = self.suspect.lock().expect("suspect lock");
            if suspect.take().is_some() {
                tracing::info!(node = self.index, address = %self.address, "Redis node answers again");
            }
        }
    }

    fn unanswered(&self) {
        if self.skip_when_suspect {
            let mut suspect = self.suspect.lock().expect("suspect lock");
            if suspect.is_none() {
                tracing::warn!(node = self.index, address = %self.address, "Redis node does not answer; skipping it until it does");
            }
            *suspect = Some(Suspicion {
                next_probe: Instant::now() + PROBE_EVERY,
            });
        }
    }

    /// Whether the node is suspected hung now.
    pub(crate) fn is_suspect(&self) -> bool {
        self.skip_when_suspect && self.suspect.lock().expect("suspect lock").is_some()
    }

    /// Runs a script, bounded by the node timeout (connection checkout included).
    pub(crate) async fn run<T: FromRedisValue + Send + 'static>(
        self: &Arc<Self>,
        call: &Call,
        timeout: Duration,
    ) -> Result<T, NodeError> {
        self.run_on_background(call, timeout, None, true).await
    }

    /// Like [`Node::run`], recording in `sent_on` the connection the call goes out on, so that
    /// whoever gives up on it (or is dropped while waiting) can queue a follow-up behind it.
    pub(crate) async fn run_recorded<T: FromRedisValue + Send + 'static>(
        self: &Arc<Self>,
        call: &Call,
        timeout: Duration,
        sent_on: &Arc<SentOn>,
    ) -> Result<T, NodeError> {
        self.run_on_background(call, timeout, Some(sent_on), true)
            .await
    }

    /// `skip_if_suspect`: calls in rounds never wait on a suspect node (`probe_if_due` finds
    /// out when it answers again); a release resent from the background tries it anyway.
    ///
    /// The call — checkout, send, reply, return of the connection — runs as a task on the
    /// background runtime; the caller only waits for its answer. So a caller whose runtime
    /// blocks or stops holds no connection and stalls nobody else, and a caller that stops
    /// waiting (a round's grace ran out, its future was dropped) leaves the call to finish
    /// there, by the same deadline.
    async fn run_on_background<T: FromRedisValue + Send + 'static>(
        self: &Arc<Self>,
        call: &Call,
        timeout: Duration,
        sent_on: Option<&Arc<SentOn>>,
        skip_if_suspect: bool,
    ) -> Result<T, NodeError> {
        if skip_if_suspect && self.is_suspect() {
            return Err(self.error("suspected hung (no answer lately); skipped".into()));
        }
        let timeout = timeout.min(self.timeout);
        let deadline = Instant::now() + timeout;
        let call = call.clone();
        let node = Arc::clone(self);
        let sent_on = sent_on.cloned();
        let on_background = background::runtime()
            .spawn(async move { node.run_until(&call, sent_on.as_deref(), deadline).await });
        match tokio::time::timeout_at(deadline, on_background).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(self.error(format!("call failed: {err}"))),
            Err(_) => Err(self.error(format!("no answer within {timeout:?}"))),
        }
    }

    /// Queues `call` for the node's resend task, starting it if none runs.
    fn resend_later(self: &Arc<Self>, call: Call, until: Instant) {
        {
            let mut resends = self.resends.lock().expect("resends lock");
            if resends.calls.len() >= MAX_WAITING_RESENDS {
                let now = Instant::now();
                resends.calls.retain(|(_, until)| *until > now);
            }
            if resends.calls.len() >= MAX_WAITING_RESENDS {
                resends.dropped += 1;
                if resends.dropped.is_power_of_two() {
                    tracing::warn!(node = self.index, address = %self.address, dropped = resends.dropped, "too many releases wait for this node; the dropped ones' locks expire by their TTL");
                }
                return;
            }
            resends.calls.push_back((call, until));
            if resends.sending {
                return;
            }
            resends.sending = true;
        }
        let node = Arc::clone(self);
        background::runtime().spawn(async move { node.send_resends().await });
    }

    /// Sends the waiting releases one after another; at the first that gets no answer, waits a
    /// probe interval and starts over. Ends when none is left (expired ones are dropped).
    async fn send_resends(self: Arc<Self>) {
        loop {
            let next = {
                let mut resends = self.resends.lock().expect("resends lock");
                let now = Instant::now();
                resends.calls.retain(|(_, until)| *until > now);
                match resends.calls.pop_front() {
                    Some(next) => next,
                    None => {
                        resends.sending = false;
                        return;
                    }
                }
            };
            let (call, until) = next;
            let tried = self
                .run_on_background::<redis::Value>(&call, self.timeout, None, false)
                .await;
            if tried.is_err() {
                self.resends
                    .lock()
                    .expect("resends lock")
                    .calls
                    .push_back((call, until));
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
    }

    /// Sends `calls` in order on `conn` (the connection an abandoned call went out on, so they
    /// run after it) from the background runtime, and waits for the answer up to the node
    /// timeout; no answer marks the node suspect. With no calls, a PING does the probing. If
    /// that does not get an answer — the connection is dead (the abandoned call died with it,
    /// or already ran), or the node is silent (the calls stay queued behind the call there) —
    /// the calls also join the node's resend queue (one bounded queue, one sender task) until
    /// they are answered or `until` passes, after which what they undo has expired anyway: a
    /// release or undo must reach every node that may hold the lock, suspect ones included.
    pub(crate) fn follow_up(
        self: &Arc<Self>,
        conn: Option<MultiplexedConnection>,
        calls: Vec<Call>,
        until: Instant,
    ) {
        let node = Arc::clone(self);
        background::runtime().spawn(async move {
            let on_same = async {
                let mut conn = conn?;
                let mut last = Ok(redis::Value::Nil);
                if calls.is_empty() {
                    last = redis::cmd("PING").query_async(&mut conn).await;
                }
                for call in &calls {
                    last = call.invocation().invoke_async(&mut conn).await;
                }
                Some(last)
            };
            match tokio::time::timeout(node.timeout, on_same).await {
                Ok(Some(Ok(_))) => node.answered(),
                silent_or_dead => {
                    if silent_or_dead.is_err() {
                        node.unanswered();
                    }
                    for call in calls {
                        node.resend_later(call, until);
                    }
                }
            }
        });
    }

    /// Runs `call` on a pooled connection, sent only before `deadline` (the caller's); its reply
    /// is awaited for the node timeout from the send. A call merely abandoned by its caller — a
    /// round that stopped waiting, a dropped future — still gets its reply read here, and its
    /// connection goes back to the pool.
    ///
    /// Cancel safety, with `sent_on`: see [`SentOn`].
    async fn run_until<T: FromRedisValue>(
        &self,
        call: &Call,
        sent_on: Option<&SentOn>,
        deadline: Instant,
    ) -> Result<T, NodeError> {
        let invocation = call.invocation();
        let mut second_go = false;
        loop {
            let checked_out = tokio::time::timeout_at(deadline, self.connection()).await;
            let Ok(conn) = checked_out else {
                return Err(self.error("no connection in time".into()));
            };
            let mut conn = conn?;
            // Never sent once the caller has stopped waiting (its deadline passed, or it gave
            // up on a recorded call): a late send would land where nobody undoes it.
            if Instant::now() >= deadline {
                return Err(self.error("no connection before the deadline".into()));
            }
            if sent_on.is_some_and(|sent_on| !sent_on.record(&conn.redis)) {
                return Err(self.error("the caller gave up before the call was sent".into()));
            }
            // The reply is awaited for the node's whole timeout from the send, whatever the
            // caller's budget: silence that long (not a short budget running out, not a wait for
            // a connection) says the node is hung or the connection half-open — the node is
            // suspected and the connection retired, so no later call waits on it. The caller
            // stops waiting at its own deadline; this task goes on until the reply or then.
            let invoked = invocation.invoke_async::<redis::Value>(&mut conn.redis);
            let Ok(reply) = tokio::time::timeout(self.timeout, invoked).await else {
                conn.broken = true;
                self.unanswered();
                return Err(self.error(format!("no answer within {:?}", self.timeout)));
            };
            if reply.is_ok() {
                self.answered();
            }
            if let (Ok(written), Some((replicas, within))) = (&reply, call.replica_ack) {
                if wrote(written) {
                    self.replicas_acknowledged(&mut conn, replicas, within)
                        .await?;
                }
            }
            match reply {
                Ok(redis::Value::Int(0)) if second_go && call.retry == Retry::NoMeansUnknown => {
                    return Err(self.error(
                        "the connection died under the call and the retry found nothing to do: \
                         the first try may have done it"
                            .into(),
                    ));
                }
                Ok(reply) => {
                    return T::from_redis_value(reply)
                        .map_err(|err| self.error(format!("unexpected reply: {err}")));
                }
                Err(err) => {
                    let connection_lost = conn.failed(&err, &self.generation);
                    // The connection died under the call: Redis restarted, or the runtime that
                    // ran the connection stopped (a release from a dropped guard often meets
                    // one of those at shutdown). Nothing to do with the script itself.
                    if connection_lost && call.retry != Retry::Never && !second_go {
                        second_go = true;
                        continue;
                    }
                    return Err(self.error(err.to_string()));
                }
            }
        }
    }

    /// `WAIT replicas within` on `conn`, right after a write on it: `Ok` once that many replicas
    /// acknowledged every write the connection sent so far (ours included), else the error the
    /// call fails with — the write stands on this node, unreplicated, and the round treats it
    /// as an answer it cannot rely on (a take round undoes it on this connection).
    async fn replicas_acknowledged(
        &self,
        conn: &mut bb8::PooledConnection<'_, NodeConnections>,
        replicas: u32,
        within: Duration,
    ) -> Result<(), NodeError> {
        let mut command = redis::cmd("WAIT");
        command
            .arg(replicas)
            .arg(u64::try_from(within.as_millis().max(1)).unwrap_or(u64::MAX));
        let wait = command.query_async::<i64>(&mut conn.redis);
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(acknowledged)) if acknowledged >= i64::from(replicas) => Ok(()),
            Ok(Ok(acknowledged)) => Err(self.error(format!(
                "written, but {acknowledged} of {replicas} replicas acknowledged it within \
                 {within:?}: not relied upon"
            ))),
            Ok(Err(err)) => {
                conn.failed(&err, &self.generation);
                Err(self.error(format!("written, but WAIT for replicas failed: {err}")))
            }
            Err(_) => {
                conn.broken = true;
                self.unanswered();
                Err(self.error(format!(
                    "written, but WAIT for replicas got no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// A pooled connection of the current generation, or the error of the attempt to make one.
    async fn connection(&self) -> Result<bb8::PooledConnection<'_, NodeConnections>, NodeError> {
        loop {
            let mut conn = self.checkout().await?;
            if conn.generation >= self.generation.load(Ordering::SeqCst) {
                return Ok(conn);
            }
            conn.broken = true;
        }
    }

    /// A pooled connection. Called on the background runtime only (see [`Node::run_on_background`]):
    /// when the pool has none idle, bb8 makes one in a task of the runtime that asked, and that
    /// task (owning the pool's count of pending connections) must not live on a caller's
    /// runtime, which may block or stop half-way.
    async fn checkout(&self) -> Result<bb8::PooledConnection<'_, NodeConnections>, NodeError> {
        let connect_failed = self.connect_failures.notify.notified();
        tokio::pin!(connect_failed);
        connect_failed.as_mut().enable();
        tokio::select! {
            biased;
            conn = self.pool.get() => conn.map_err(|err| {
                if matches!(err, bb8::RunError::TimedOut) {
                    // Connecting hangs: the node accepts TCP but does not answer.
                    self.unanswered();
                }
                self.error(format!("no connection: {err}"))
            }),
            () = connect_failed => {
                let (cause, timed_out) = self.connect_failures.last.lock().expect("last error lock").clone();
                if timed_out {
                    self.unanswered();
                }
                Err(self.error(format!("cannot connect: {cause}")))
            }
        }
    }

    /// PING, bounded by the node timeout. A dead pooled connection gets one retry on a fresh
    /// one (PING is harmless to repeat), so a restarted node reads as up.
    pub(crate) async fn ping(self: &Arc<Self>) -> bool {
        // On the background runtime, like every call (see `run_on_background`).
        let node = Arc::clone(self);
        background::runtime()
            .spawn(async move { node.ping_here().await })
            .await
            .unwrap_or(false)
    }

    async fn ping_here(&self) -> bool {
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
