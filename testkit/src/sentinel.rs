//! A Redis master with a replica, watched by three `redis-sentinel` processes that promote the
//! replica when the master fails — the Sentinel setup people run, on loopback.

use crate::guardian::{DirGuardian, Guarded};
use crate::redis::{cli, RedisServer};
use crate::{find_program, free_port};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The name the sentinels know the master by.
pub const SENTINEL_MASTER_NAME: &str = "fencelock";

/// How long a silent master stays master in the sentinels' eyes: a killed one is failed over
/// about this long after (plus an election), so failover tests take seconds.
pub const SENTINEL_DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A master, its replica and three sentinels, owned by a test. Dropping it stops them all.
#[derive(Debug)]
pub struct SentinelGroup {
    /// `[0]` started as master, `[1]` as its replica; roles change with failovers (ask
    /// [`SentinelGroup::master`]).
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

#[derive(Debug)]
struct Sentinel {
    port: u16,
    _process: Guarded,
    _dir_guardian: DirGuardian,
}

impl SentinelGroup {
    /// Starts the master, a replica that caught up with it, and three sentinels that see both,
    /// and waits until every sentinel knows the replica (so a failover can happen).
    pub fn start() -> SentinelGroup {
        let master = RedisServer::start_master();
        let replica = RedisServer::start_replica_of(&master);
        let sentinels = (0..3).map(|_| Sentinel::start(master.port())).collect();
        let group = SentinelGroup {
            servers: vec![master, replica],
            sentinels,
        };
        group.wait_until_watched(Duration::from_secs(20));
        group
    }

    /// `redis://127.0.0.1:<port>/` of every sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("redis://127.0.0.1:{}/", sentinel.port))
            .collect()
    }

    /// The Redis servers, in start order.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Mutable access to one server, to kill, pause or restart it.
    pub fn server_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.servers[index]
    }

    /// The index of the server the sentinels name master now (the first that answers).
    pub fn master(&self) -> Option<usize> {
        self.sentinels.iter().find_map(|sentinel| {
            let reply = cli(
                sentinel.port,
                &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER_NAME],
            )?;
            let port: u16 = reply.lines().nth(1)?.trim().parse().ok()?;
            self.servers.iter().position(|server| server.port() == port)
        })
    }

    /// Asks the sentinels for a graceful failover (`SENTINEL FAILOVER`): the replica is promoted
    /// and the old master, still running, becomes its replica.
    pub fn failover(&self) {
        let reply = cli(
            self.sentinels[0].port,
            &["SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME],
        );
        assert!(
            reply.as_deref().is_some_and(|reply| reply.contains("OK")),
            "SENTINEL FAILOVER: {reply:?}"
        );
    }

    /// Waits until the sentinels name a master other than `old` and it answers as master,
    /// at most `within`; the new master.
    pub fn wait_for_new_master(&self, old: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(master) = self.master().filter(|&master| master != old) {
                let role = cli(self.servers[master].port(), &["ROLE"]).unwrap_or_default();
                if role.starts_with("master") {
                    return master;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not fail over from server {old} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until_watched(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.sentinels.iter().all(|sentinel| {
                let master = cli(sentinel.port, &["SENTINEL", "master", SENTINEL_MASTER_NAME])
                    .unwrap_or_default();
                let fields: Vec<&str> = master.lines().map(str::trim).collect();
                let field = |name: &str| {
                    fields
                        .iter()
                        .position(|line| *line == name)
                        .and_then(|at| fields.get(at + 1))
                        .copied()
                };
                field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2")
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not see the replica and each other within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("fencelock-sentinel-")
            .tempdir()
            .expect("create a temp dir for redis-sentinel")
            .keep();
        let port = free_port();
        let down_after = SENTINEL_DOWN_AFTER.as_millis();
        let config = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {name} {down_after}\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            dir = dir.display(),
            name = SENTINEL_MASTER_NAME,
        );
        // Sentinel rewrites its configuration file as it learns: it must be its own.
        let config_file: PathBuf = dir.join("sentinel.conf");
        std::fs::write(&config_file, config).expect("write sentinel.conf");
        let program = find_program("redis-sentinel", "redis-sentinel");
        let log = dir.join("sentinel.log");
        let process = Guarded::spawn(
            None,
            &program,
            &[config_file.display().to_string()],
            "KILL",
            &log,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(port, &["PING"]).is_none_or(|pong| !pong.contains("PONG")) {
            assert!(
                Instant::now() < deadline,
                "redis-sentinel on {port} did not answer PING:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Sentinel {
            port,
            _process: process,
            _dir_guardian: DirGuardian::watch(&dir),
        }
    }
}
