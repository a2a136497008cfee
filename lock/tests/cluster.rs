//! The Redis Cluster harness the runtime's cluster target is tested on (issue 21): a real
//! cluster of `redis-server` processes in cluster mode, whose masters fail over when killed.

use fencelock_testkit::{RedisCluster, CLUSTER_NODE_TIMEOUT};
use std::time::Instant;

/// SIGKILL of the master of a slot: its replica is promoted and the cluster serves every slot
/// again within a few node timeouts (the failover the cluster target must ride through).
#[test]
fn a_killed_master_is_replaced_by_its_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let slot = cluster.keyslot("fencelock:{product:1}:lock");
    let master = cluster.master_of_slot(slot);
    let killed_at = Instant::now();
    cluster.node_mut(master).kill();
    let promoted = cluster.wait_for_new_master(slot, master, CLUSTER_NODE_TIMEOUT * 10);
    assert!(cluster.nodes()[promoted].is_running());
    eprintln!(
        "slot {slot}: node {master} killed, node {promoted} serves it after {:?}",
        killed_at.elapsed()
    );
}
