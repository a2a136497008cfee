//! Per-acquisition options and locker-wide configuration.

use crate::endpoint::Endpoint;
use crate::LockError;
use std::time::Duration;

/// How to take one lock. Build with [`LockOptions::new`] and the chained setters.
///
/// ```
/// use std::time::Duration;
/// let options = fencelock::LockOptions::new()
///     .ttl(Duration::from_secs(5))
///     .wait(Duration::from_millis(500))
///     .auto_extend(true);
/// assert_eq!(options.ttl, Duration::from_secs(5));
/// ```
///
/// The fields can be read; new ones may be added in minor releases, so the type is built only
/// through [`LockOptions::new`] (or `default`) and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// How long the lock lives in Redis unless extended or released. Default 10 s.
    pub ttl: Duration,
    /// Total time to wait for a busy lock before giving up with [`LockError::Busy`]. Zero means
    /// a single attempt. Default 5 s.
    pub wait: Duration,
    /// Keep extending the lock (every `ttl / 3`) while the guard lives. Default off.
    pub auto_extend: bool,
    /// Serve waiters in arrival order across all processes (single-node mode only). Default off.
    ///
    /// FIFO holds among the fair callers of a resource only: a non-fair `acquire` of the same
    /// resource does not queue and takes the lock whenever it finds it free. Use one mode per
    /// resource.
    pub fair: bool,
    /// Keep the resource locked for at least this long after acquisition, even when released
    /// earlier (ShedLock's `lockAtLeastFor`). The TTL is raised to at least this. Default zero.
    pub min_hold: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(10),
            wait: Duration::from_secs(5),
            auto_extend: false,
            fair: false,
            min_hold: Duration::ZERO,
        }
    }
}

impl LockOptions {
    /// The defaults: 10 s TTL, 5 s wait, no auto-extend, not fair, no minimum hold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`LockOptions::ttl`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`LockOptions::wait`].
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets [`LockOptions::auto_extend`].
    pub fn auto_extend(mut self, auto_extend: bool) -> Self {
        self.auto_extend = auto_extend;
        self
    }

    /// Sets [`LockOptions::fair`].
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Sets [`LockOptions::min_hold`].
    pub fn min_hold(mut self, min_hold: Duration) -> Self {
        self.min_hold = min_hold;
        self
    }

    /// The TTL written to Redis: at least `min_hold`, so the minimum hold is honoured.
    pub(crate) fn effective_ttl(&self) -> Duration {
        self.ttl.max(self.min_hold)
    }

    pub(crate) fn check(&self) -> Result<(), LockError> {
        if self.ttl < Duration::from_millis(10) {
            return Err(LockError::InvalidOptions("ttl must be at least 10 ms"));
        }
        let thirty_days = Duration::from_secs(30 * 24 * 3600);
        if self.effective_ttl() > thirty_days {
            return Err(LockError::InvalidOptions(
                "ttl and min_hold must be at most 30 days",
            ));
        }
        // Deadlines are `now + wait`: an unbounded wait would overflow the clock.
        if self.wait > thirty_days {
            return Err(LockError::InvalidOptions("wait must be at most 30 days"));
        }
        Ok(())
    }
}

/// Locker-wide settings: the Redis nodes ([`LockerConfig::new`] from URLs,
/// [`LockerConfig::from_clients`] from your own `redis::Client`s,
/// [`LockerConfig::from_connection_infos`]), the rest with defaults changed through the setters.
/// One node: single-node mode. Three or more: quorum (Redlock) mode over independent nodes.
///
/// Its `Debug` shows the nodes without their passwords. The fields can be read; new ones may be
/// added in minor releases, so the type is built only through its constructors and setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct LockerConfig {
    /// The nodes, as given.
    nodes: Vec<NodeTarget>,
    /// Prefix of every key (`<prefix>:{<resource>}:lock`, …). Default `fencelock`. No braces.
    pub prefix: String,
    /// Pooled connections per node. Default 16.
    pub pool_size: u32,
    /// Upper bound for one call to one node, connection checkout included. In quorum mode it is
    /// further capped at a tenth of the TTL, so a hung node cannot eat the lock's validity.
    /// Default 500 ms.
    pub node_timeout: Duration,
    /// First retry delay of a waiter that heard nothing; doubles per attempt. Default 10 ms.
    pub retry_min_delay: Duration,
    /// Largest retry delay (jittered). Release messages usually wake waiters long before. Default 200 ms.
    pub retry_max_delay: Duration,
    /// Fair mode: a waiter that stops renewing its place (crashed) is dropped from the queue this
    /// long after its last attempt at most. Waiters renew every third of it. Default 2 s.
    pub fair_waiter_lease: Duration,
    /// How many times in a row a lock may pass between waiters of this process without touching
    /// the free state in Redis. Bounded so waiters in other processes get their turn. Default 16
    /// (a turn of 17 short holds is a few milliseconds; doubling it from 8 gave the hot
    /// benchmark about a tenth more throughput for a few milliseconds more wait p99, see the
    /// crate's README).
    pub max_local_handoffs: u32,
    /// When a streak of local handoffs ends and another process has been seen waiting for the
    /// same lock, this process's waiters stay out of the race this long, so that one of the
    /// others takes the next turn (it only has to hear the release and ask once: well under a
    /// millisecond on a LAN). Zero turns it off. Default 2 ms.
    pub yield_window: Duration,
    /// Whether a lock passed on in-process without a round trip is confirmed in Redis right
    /// after (one call per node, off the recipient's path: it starts at once). Default on:
    /// then the releaser's `Ok(true)` means Redis confirmed that nobody else was granted the
    /// lock during its hold, and a recipient of a lock Redis lost behind the process's back
    /// (a restart, `FLUSHALL`, eviction, `force_unlock`) is told it is lost within a round
    /// trip. Off, a pass-on answers `Ok(true)` without asking — "handed on", not "confirmed" —
    /// and the recipient finds out at its next round trip; the hot-key benchmark gains about
    /// a tenth in single-node mode and a third over 3 nodes on a 2-core machine (see the
    /// crate's README).
    pub confirm_pass_on: bool,
    /// How many replicas of a node must acknowledge a lock, an extension or a fence (`WAIT`)
    /// before it is relied upon, and how long they have. `(0, _)`, the default, asks for none.
    /// Replication is asynchronous: a lock written on a master that fails before a replica got
    /// it is lost with it, and the replica promoted in its place may grant it again. With `n`
    /// acknowledgements, at least `n` replicas hold it when the guard is handed out; a lock no
    /// replica acknowledged in time is given back and the caller gets `Unavailable` (an
    /// extension: the validity stays where it was). Off by default: a standalone node and the
    /// nodes of a Redlock quorum usually have no replicas, and every acquisition and extension
    /// would wait for a replica's round trip. Turn it on for a node that has replicas a
    /// failover may promote (Sentinel, Redis Cluster, a managed Redis). The wait counts
    /// against the call's budget (the node timeout; in quorum mode at most a tenth of the
    /// TTL): keep it well under that.
    pub wait_replicas: (u32, Duration),
}

impl std::fmt::Debug for LockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(NodeTarget::shown).collect();
        f.debug_struct("LockerConfig")
            .field("nodes", &nodes)
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("node_timeout", &self.node_timeout)
            .field("retry_min_delay", &self.retry_min_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("fair_waiter_lease", &self.fair_waiter_lease)
            .field("max_local_handoffs", &self.max_local_handoffs)
            .field("yield_window", &self.yield_window)
            .field("confirm_pass_on", &self.confirm_pass_on)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

/// `url` with the password of its credentials (`user:password@`, `:password@`) replaced by
/// `***`, for anything shown or logged. A URL that does not parse as one is shown as `***`
/// after its scheme: it may be a password pasted in the wrong place.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// One configured node: a URL (parsed when the locker is built, so a bad one is an error
/// there), or connection details the caller made.
#[derive(Clone)]
enum NodeTarget {
    Url(String),
    Info(redis::ConnectionInfo),
    Client(redis::Client),
    /// The master a Sentinel group names: the sentinels' URLs and the master's name.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

impl NodeTarget {
    /// For `Debug` and errors: the URL without its password, or `host:port` (never the
    /// credentials a `ConnectionInfo` carries).
    fn shown(&self) -> String {
        match self {
            NodeTarget::Url(url) => redact_url(url),
            NodeTarget::Info(info) => info.addr().to_string(),
            NodeTarget::Client(client) => client.get_connection_info().addr().to_string(),
            NodeTarget::Sentinel { sentinels, master } => {
                let sentinels: Vec<String> = sentinels.iter().map(|url| redact_url(url)).collect();
                format!("sentinel:{master} via {}", sentinels.join(","))
            }
        }
    }

    /// Where to connect; a URL's parse error shows it without its password.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, String> {
        match self {
            NodeTarget::Url(url) => redis::Client::open(url.as_str())
                .map(|client| Endpoint::Fixed(Box::new(client)))
                .map_err(|err| format!("Redis URL {:?}: {err}", redact_url(url))),
            NodeTarget::Info(info) => redis::Client::open(info.clone())
                .map(|client| Endpoint::Fixed(Box::new(client)))
                .map_err(|err| format!("Redis node {}: {err}", self.shown())),
            NodeTarget::Client(client) => Ok(Endpoint::Fixed(Box::new(client.clone()))),
            NodeTarget::Sentinel { sentinels, master } => Endpoint::sentinel(sentinels, master)
                .map_err(|err| format!("Redis {}: {err}", self.shown())),
        }
    }
}

/// The largest `max_local_handoffs` accepted.
pub const MAX_LOCAL_HANDOFFS_LIMIT: u32 = 64;

impl LockerConfig {
    /// A configuration over the given Redis URLs (`redis://`, or `rediss://` for TLS with the
    /// `tls` feature), with defaults for the rest.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::over(urls.into_iter().map(|url| NodeTarget::Url(url.into())))
    }

    /// A configuration over clients you built: custom TLS roots or client certificates
    /// (`redis::Client::build_with_tls`), credentials from a secret store, a RESP3 setting.
    /// The locker makes its own connections from them (pooled, plus one for pub/sub per node).
    ///
    /// ```
    /// let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    /// let config = fencelock::LockerConfig::from_clients([client]);
    /// assert_eq!(config.node_count(), 1);
    /// ```
    pub fn from_clients<I>(clients: I) -> Self
    where
        I: IntoIterator<Item = redis::Client>,
    {
        Self::over(clients.into_iter().map(NodeTarget::Client))
    }

    /// A configuration over `redis::ConnectionInfo` values (address, database, credentials).
    pub fn from_connection_infos<I>(infos: I) -> Self
    where
        I: IntoIterator<Item = redis::ConnectionInfo>,
    {
        Self::over(infos.into_iter().map(NodeTarget::Info))
    }

    fn over(nodes: impl Iterator<Item = NodeTarget>) -> Self {
        LockerConfig {
            nodes: nodes.collect(),
            prefix: "fencelock".into(),
            pool_size: 16,
            node_timeout: Duration::from_millis(500),
            retry_min_delay: Duration::from_millis(10),
            retry_max_delay: Duration::from_millis(200),
            fair_waiter_lease: Duration::from_secs(2),
            max_local_handoffs: 16,
            yield_window: Duration::from_millis(2),
            confirm_pass_on: true,
            wait_replicas: (0, Duration::ZERO),
        }
    }

    /// A configuration over the master a Sentinel group names `master`, given the URLs of the
    /// group's `redis-sentinel` processes (not of Redis servers), with defaults for the rest:
    /// one node, whose connections go to the master the sentinels name when each is made —
    /// after a failover, to the new one. A lock written on a master that fails before its
    /// replica got it is lost with it: see [`LockerConfig::wait_replicas`].
    pub fn sentinel<I, S>(sentinels: I, master: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::over(std::iter::once(NodeTarget::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master.into(),
        }))
    }

    /// Parses a comma-separated list of URLs (the app's `REDIS_URLS`).
    pub fn from_url_list(list: &str) -> Self {
        Self::new(list.split(',').map(str::trim).filter(|url| !url.is_empty()))
    }

    /// How many nodes are configured: 1 is single-node mode, 3 or more quorum mode.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes as they may be shown: URLs without passwords, or `host:port`.
    pub fn nodes_shown(&self) -> Vec<String> {
        self.nodes.iter().map(NodeTarget::shown).collect()
    }

    /// A client per node, in the configured order.
    pub(crate) fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        self.nodes.iter().map(NodeTarget::endpoint).collect()
    }

    /// Sets [`LockerConfig::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`LockerConfig::node_timeout`].
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Sets [`LockerConfig::fair_waiter_lease`].
    pub fn fair_waiter_lease(mut self, lease: Duration) -> Self {
        self.fair_waiter_lease = lease;
        self
    }

    /// Sets [`LockerConfig::max_local_handoffs`] (0 turns local handoff off; at most
    /// [`MAX_LOCAL_HANDOFFS_LIMIT`]).
    pub fn max_local_handoffs(mut self, handoffs: u32) -> Self {
        self.max_local_handoffs = handoffs;
        self
    }

    /// Sets [`LockerConfig::yield_window`] (zero turns yielding off).
    pub fn yield_window(mut self, window: Duration) -> Self {
        self.yield_window = window;
        self
    }

    /// Sets [`LockerConfig::confirm_pass_on`].
    pub fn confirm_pass_on(mut self, confirm: bool) -> Self {
        self.confirm_pass_on = confirm;
        self
    }

    /// Sets [`LockerConfig::wait_replicas`]: `replicas` must acknowledge within `timeout`
    /// (more than zero and less than the node timeout).
    pub fn wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = (replicas, timeout);
        self
    }

    /// Sets [`LockerConfig::retry_min_delay`].
    pub fn retry_min_delay(mut self, delay: Duration) -> Self {
        self.retry_min_delay = delay;
        self
    }

    /// Sets [`LockerConfig::retry_max_delay`].
    pub fn retry_max_delay(mut self, delay: Duration) -> Self {
        self.retry_max_delay = delay;
        self
    }

    /// Sets [`LockerConfig::pool_size`].
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    pub(crate) fn check(&self) -> Result<(), LockError> {
        match self.nodes.len() {
            0 => return Err(LockError::Config("no Redis node given".into())),
            2 => {
                return Err(LockError::Config(
                    "2 Redis nodes cannot form a useful quorum: use 1 node, or 3 or more".into(),
                ))
            }
            _ => {}
        }
        // A node listed twice is one vote counted twice: the quorum is not what it claims, and
        // a take round's second call on it finds its own token (RESENT) and undoes the first.
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = self
            .nodes
            .iter()
            .map(NodeTarget::shown)
            .find(|node| !seen.insert(node.clone()))
        {
            return Err(LockError::Config(format!(
                "Redis node {twice} is listed twice: a quorum needs independent nodes"
            )));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(LockError::Config(format!(
                "key prefix {:?} must be non-empty and contain no braces",
                self.prefix
            )));
        }
        if self.pool_size == 0 {
            return Err(LockError::Config("pool_size must be at least 1".into()));
        }
        let (replicas, ack_timeout) = self.wait_replicas;
        if replicas > 0 && (ack_timeout.is_zero() || ack_timeout >= self.node_timeout) {
            return Err(LockError::Config(format!(
                "wait_replicas: the replicas' {ack_timeout:?} must be more than zero and less \
                 than the node timeout ({:?}), which bounds the whole call",
                self.node_timeout
            )));
        }
        // A zero node timeout fails every call; a zero waiter lease drops every fair waiter
        // from the queue as soon as it joins.
        for (name, value) in [
            ("node_timeout", self.node_timeout),
            ("fair_waiter_lease", self.fair_waiter_lease),
        ] {
            if value < Duration::from_millis(1) {
                return Err(LockError::Config(format!("{name} must be at least 1 ms")));
            }
        }
        // Each acquisition reserves this many fences more; a fence counter stays behind its
        // server's clock only while a script run reserves well under 1000 (see `NEXT_FENCE`).
        if self.max_local_handoffs > MAX_LOCAL_HANDOFFS_LIMIT {
            return Err(LockError::Config(format!(
                "max_local_handoffs must be at most {MAX_LOCAL_HANDOFFS_LIMIT}"
            )));
        }
        if self.retry_min_delay > self.retry_max_delay {
            return Err(LockError::Config(
                "retry_min_delay must be at most retry_max_delay".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod redaction {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_the_rest_kept() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://user:s3cret@host/", "redis://user:***@host/"),
            ("rediss://user:p@ss@host/", "rediss://user:***@host/"),
            ("not a url s3cret", "***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let config = LockerConfig::new(["redis://:s3cret@a/", "redis://:s3cret@b/"]);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("redis://:***@a/"),
            "{shown}"
        );
        let client = redis::Client::open("redis://:s3cret@c:6379/").unwrap();
        let info = client.get_connection_info().clone();
        for config in [
            LockerConfig::from_clients([client]),
            LockerConfig::from_connection_infos([info]),
        ] {
            let shown = format!("{config:?} {:?}", config.nodes_shown());
            assert!(
                !shown.contains("s3cret") && shown.contains("c:6379"),
                "{shown}"
            );
        }
    }
}

#[cfg(test)]
mod limits {
    use super::*;

    /// Found in review of `scripts::RESENT`: nothing refused the same server listed twice in a
    /// quorum, where its second call in a round now finds its own token and undoes the first
    /// (before, it was one vote counted twice).
    #[test]
    fn a_node_listed_twice_is_refused() {
        let twice = LockerConfig::new(["redis://a:1/", "redis://b:1/", "redis://a:1/"]);
        assert!(
            matches!(twice.check(), Err(LockError::Config(message)) if message.contains("twice"))
        );
        // The same server under another password is the same server.
        let hidden = LockerConfig::new(["redis://:x@a:1/", "redis://b:1/", "redis://:y@a:1/"]);
        assert!(matches!(hidden.check(), Err(LockError::Config(_))));
        // Other databases of one server are separate key spaces.
        let databases = LockerConfig::new(["redis://a:1/0", "redis://a:1/1", "redis://a:1/2"]);
        assert!(databases.check().is_ok());
    }

    #[test]
    fn the_local_handoff_streak_is_bounded() {
        let config = |handoffs| LockerConfig::new(["redis://a/"]).max_local_handoffs(handoffs);
        assert!(config(MAX_LOCAL_HANDOFFS_LIMIT).check().is_ok());
        assert!(matches!(
            config(MAX_LOCAL_HANDOFFS_LIMIT + 1).check(),
            Err(LockError::Config(_))
        ));
        let zero_timeout = LockerConfig::new(["redis://a/"]).node_timeout(Duration::ZERO);
        assert!(matches!(zero_timeout.check(), Err(LockError::Config(_))));
        let zero_lease = LockerConfig::new(["redis://a/"]).fair_waiter_lease(Duration::ZERO);
        assert!(matches!(zero_lease.check(), Err(LockError::Config(_))));
        let huge_wait = LockOptions::new().wait(Duration::MAX);
        assert!(matches!(
            huge_wait.check(),
            Err(LockError::InvalidOptions(_))
        ));
    }
}
