//! The seeded fault-injection stress suite (see `common/stress.rs`): several lockers hammer a few
//! resources through a fault proxy in front of each real redis-server while a nemesis adds
//! latency, black-holes and resets links, pauses Redis (`CLIENT PAUSE`, bursts of millisecond
//! pauses, `DEBUG SLEEP` stalls, SIGSTOP), kills and restarts nodes (delayed, or at once and
//! empty), flushes them, and blocks a thread of the callers' runtime; workers cancel their
//! futures at random points and park acquisitions. Then the safety (no overlap, fences rising,
//! no overlap with a confirmed release even across data loss), no-false-refusal, liveness and
//! hygiene checkers run. The runs of one process go one at a time, so each verdict is its own.
//!
//! CI runs each mode for a few seconds; `cargo xtask soak [--seconds N] [--seed S]` runs the
//! `soak` test below for longer, cycling through the modes with fresh seeds.

#[allow(dead_code)]
#[path = "common/stress.rs"]
mod stress;

use std::time::{Duration, Instant};
use stress::{Stress, StressConfig};

fn config(nodes: usize, seconds: f64) -> StressConfig {
    StressConfig {
        seed: StressConfig::seed_from_env(),
        nodes,
        lockers: 3,
        child_processes: 0,
        tasks_per_locker: 4,
        resources: 3,
        run_for: StressConfig::seconds_from_env(seconds),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_under_faults() {
    Stress::start(config(1, 10.0)).run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_three_under_faults() {
    Stress::start(config(3, 10.0)).run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_five_under_faults() {
    Stress::start(config(5, 10.0)).run().await;
}

/// Lockers in separate OS processes too: one locker here and two child processes with two
/// each, over a quorum of three, so nothing in-process (a shared local queue, one clock) can
/// hide a violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_under_faults() {
    let mut config = config(3, 10.0);
    config.lockers = 1;
    config.child_processes = 2;
    Stress::start(config).run().await;
}

/// One child process of `separate_processes_under_faults` (it starts them; they are told what
/// to do through the environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of separate_processes_under_faults, started by it"]
async fn stress_child() {
    stress::run_child().await;
}

/// `cargo xtask soak`: rounds of 30 s through the three modes, a new seed each (derived from
/// `FENCELOCK_STRESS_SEED` when given), until `FENCELOCK_SOAK_SECONDS` are used up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by `cargo xtask soak`"]
async fn soak() {
    let total: f64 = std::env::var("FENCELOCK_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600.0);
    let deadline = Instant::now() + Duration::from_secs_f64(total);
    let first_seed = StressConfig::seed_from_env();
    let mut round = 0u64;
    while Instant::now() + Duration::from_secs(35) < deadline {
        let nodes = [1, 3, 5][(round % 3) as usize];
        let config = StressConfig {
            seed: first_seed.wrapping_add(round),
            nodes,
            lockers: 3,
            // Every fourth round in separate processes too.
            child_processes: if round % 4 == 3 { 2 } else { 0 },
            tasks_per_locker: 4,
            resources: 3,
            run_for: Duration::from_secs(30),
        };
        Stress::start(config).run().await;
        round += 1;
    }
    eprintln!(
        "soak: {round} rounds passed, seeds {first_seed}..{}",
        first_seed.wrapping_add(round)
    );
}
