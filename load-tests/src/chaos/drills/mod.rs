//! The drills: load through the load balancer, a fault injected after a warm-up, lifted, load
//! a while longer, then the checkers. One file per kind of fault, each drill one function whose
//! timeline is also written into the report; [`run`] holds what they all share. [`DRILLS`] is
//! the one list of them: the command line, `all` and the quorum-only filter derive from it.

mod hang;
mod hangup_storm;
mod holder_pause;
mod kill;
mod run;

pub use run::DrillOutcome;

use super::cluster::Cluster;
use std::future::Future;
use std::pin::Pin;

/// A drill running: it borrows the cluster.
type Running<'a> = Pin<Box<dyn Future<Output = Result<DrillOutcome, String>> + 'a>>;

/// One drill: its name on the command line, whether it needs the 5-node cluster, and the
/// function that runs it.
#[derive(Debug)]
pub struct Drill {
    pub name: &'static str,
    /// Only on the 5-node cluster (`up --quorum`): left out of the default on a single node.
    pub needs_quorum: bool,
    run: for<'a> fn(&'a Cluster) -> Running<'a>,
}

impl Drill {
    /// Runs it against the cluster, which must be whole and healthy.
    pub async fn run(&self, cluster: &Cluster) -> Result<DrillOutcome, String> {
        (self.run)(cluster).await
    }
}

/// Every drill, in the order `all` runs them; the quorum-only ones come last (the usage says
/// so).
pub static DRILLS: [Drill; 7] = [
    // The lock holder SIGSTOPped past 2 × ttl: the lock moves on, its late write is fenced out.
    Drill {
        name: "holder-pause",
        needs_quorum: false,
        run: |cluster| Box::pin(holder_pause::holder_pause(cluster)),
    },
    // Redis (the node, or a majority of the quorum) SIGKILLed and restarted empty.
    Drill {
        name: "redis-kill",
        needs_quorum: false,
        run: |cluster| Box::pin(kill::redis_kill(cluster)),
    },
    // PostgreSQL SIGKILLed and restarted.
    Drill {
        name: "postgres-kill",
        needs_quorum: false,
        run: |cluster| Box::pin(kill::postgres_kill(cluster)),
    },
    // The instance likely holding the lock SIGKILLed and restarted.
    Drill {
        name: "app-kill",
        needs_quorum: false,
        run: |cluster| Box::pin(kill::app_kill(cluster)),
    },
    // Clients that hang up mid-request: the lock must move on at once.
    Drill {
        name: "hangup-storm",
        needs_quorum: false,
        run: |cluster| Box::pin(hangup_storm::hangup_storm(cluster)),
    },
    // One Redis node of five SIGSTOPped: no request may fail.
    Drill {
        name: "node-hang",
        needs_quorum: true,
        run: |cluster| Box::pin(hang::node_hang(cluster)),
    },
    // A majority SIGSTOPped: prompt 503 lock_unavailable, nothing written.
    Drill {
        name: "majority-hang",
        needs_quorum: true,
        run: |cluster| Box::pin(hang::majority_hang(cluster)),
    },
];

/// The drill called `name`.
pub fn find(name: &str) -> Option<&'static Drill> {
    DRILLS.iter().find(|drill| drill.name == name)
}

/// Every drill's name, in table order.
pub fn names() -> impl Iterator<Item = &'static str> {
    DRILLS.iter().map(|drill| drill.name)
}

/// Whether `name` is a drill that needs the 5-node cluster.
pub fn needs_quorum(name: &str) -> bool {
    find(name).is_some_and(|drill| drill.needs_quorum)
}

#[cfg(test)]
mod tests {
    use super::DRILLS;

    #[test]
    fn the_quorum_drills_come_last() {
        let first_quorum = DRILLS.iter().position(|d| d.needs_quorum);
        assert_eq!(
            first_quorum,
            Some(DRILLS.len() - 2),
            "the usage says the last two need `up --quorum`"
        );
        assert!(DRILLS[DRILLS.len() - 2..].iter().all(|d| d.needs_quorum));
    }
}
