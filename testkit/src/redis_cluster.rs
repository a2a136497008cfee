//! A real Redis Cluster on loopback: `masters` × (1 + `replicas`) `redis-server` processes in
//! cluster mode, joined by `redis-cli --cluster create`, persistence off.

use crate::redis::{cli, RedisServer};
use crate::{find_program, free_port};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a silent master stays a master: a SIGKILLed one's replica is promoted after about
/// this (plus the election), so failover tests take seconds, not the default 15 s.
pub const CLUSTER_NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A Redis Cluster owned by a test. Dropping it stops every node and removes their dirs.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until the cluster is
    /// up: every slot served, every node agreeing (`cluster_state:ok`).
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let timeout = CLUSTER_NODE_TIMEOUT.as_millis().to_string();
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_on_with_args(
                    cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &timeout,
                        // A replica that lost touch with its master for a while may still be
                        // promoted: tests kill masters on purpose.
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let mut create = Command::new(find_program("redis-cli", "redis-tools"));
        create.args(["--cluster", "create"]);
        create.args(
            cluster
                .nodes
                .iter()
                .map(|node| format!("127.0.0.1:{}", node.port())),
        );
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let output = create.output().expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis://127.0.0.1:<port>/` of every node: seeds for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Every node, masters and replicas, in start order (roles change with failovers: ask
    /// [`RedisCluster::master_of_slot`]).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Mutable access to one node, to kill, pause or restart it.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The index of the node that serves `slot` as master now, as the first live node asked
    /// (`CLUSTER NODES`) sees it.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        self.find_master_of_slot(slot)
            .unwrap_or_else(|| panic!("no live node knows who serves slot {slot}"))
    }

    /// Like [`RedisCluster::master_of_slot`], `None` while no healthy master serves it (a
    /// failover in progress).
    fn find_master_of_slot(&self, slot: u16) -> Option<usize> {
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let Some(table) = cli(node.port(), &["CLUSTER", "NODES"]) else {
                continue;
            };
            // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>`
            for line in table.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 9 || !fields[2].split(',').any(|flag| flag == "master") {
                    continue;
                }
                if fields[2].contains("fail") {
                    continue;
                }
                let serves = fields[8..].iter().any(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    match (start.parse::<u16>(), end.parse::<u16>()) {
                        (Ok(start), Ok(end)) => (start..=end).contains(&slot),
                        _ => false, // a slot being migrated: `[slot->-id]`
                    }
                });
                if !serves {
                    continue;
                }
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|port| port.parse().ok())
                    .expect("ip:port@bus in CLUSTER NODES");
                return self.nodes.iter().position(|node| node.port() == port);
            }
        }
        None
    }

    /// The slot Redis Cluster maps `key` to (`CLUSTER KEYSLOT`, asked of a live node: the
    /// server's own hashing, hash tags included).
    pub fn keyslot(&self, key: &str) -> u16 {
        let node = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a live node");
        cli(node.port(), &["CLUSTER", "KEYSLOT", key])
            .and_then(|slot| slot.trim().parse().ok())
            .expect("CLUSTER KEYSLOT answers a slot")
    }

    /// Waits until a node other than `old` serves `slot` as master (a failover was done, as
    /// the live nodes see it) and the cluster is ok again, at most `within`; the new master.
    pub fn wait_for_new_master(&self, slot: u16, old: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(master) = self
                .find_master_of_slot(slot)
                .filter(|&master| master != old)
            {
                self.wait_until_ok(deadline.saturating_duration_since(Instant::now()));
                return master;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} still served by node {old} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node reports `cluster_state:ok` (after a failover: the
    /// replica was promoted and the others agree), at most `within`.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .all(|node| {
                    cli(node.port(), &["CLUSTER", "INFO"])
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A free port whose cluster bus port (+10000) is free too and below 65536.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (P, P + 10000) on 127.0.0.1");
}
