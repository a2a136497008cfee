//! The seeded fault-injection stress run shared by `tests/stress.rs` and `cargo xtask soak`.
//!
//! Jepsen's shape: workers record a *history* of holds, a *nemesis* injects faults on its own
//! schedule, and *checkers* state the properties afterwards:
//! - safety: no two holds of one resource overlap while both holders believed they held it
//!   (from `acquired_at` to the last moment the holder saw `!is_lost()`), and fences rise in
//!   the order of the holds — unless a node lost its data between the two acquisitions
//!   (`FLUSHALL`, a restart empty: no lock on Redis without persistence survives that, which is
//!   what fences are for). Even then a holder whose `release()` said `Ok(true)` overlaps no
//!   holder Redis granted, and a fence may fall only for a "ghost" (a lock passed on in-process
//!   from a block Redis lost, whose fence is below the new holder's);
//! - no false "refused": a guard declared lost with validity left, or a `release()` answering
//!   `Ok(false)`, only after a node lost its data since the holder's acquisition round began
//!   (otherwise a majority still held the lock, and "refused" was a lie);
//! - liveness: once the faults are lifted, every locker takes every resource within the TTL
//!   plus a stated slack;
//! - hygiene: no panic anywhere during the run, and no lock key on any node once the longest
//!   TTL has passed after the last release (the bound the crate promises: a release reaches
//!   every node that answers, else the key expires), every key expiring.
//!
//! The nemesis: proxy latency, black holes and resets; `CLIENT PAUSE` (long, and bursts of a
//! few milliseconds); `DEBUG SLEEP` stalls of a few milliseconds on one node while the others
//! answer; SIGSTOP; kills with a delayed restart; data loss (`FLUSHALL`, kill + restart empty
//! at once); steps of the first node's wall clock (libfaketime; a step forward is a data loss
//! there, a step back must change nothing); a blocked thread of the callers' runtime. Workers
//! cancel futures at random points, park acquisitions (alive, unpolled) now and then, and
//! start releases on runtimes that shut down while they are in flight; half the lockers use
//! the highest `max_local_handoffs` the crate accepts.
//!
//! Every random choice comes from one seed, printed first, so a failing schedule can be run
//! again (`FENCELOCK_STRESS_SEED`); the interleaving itself is up to the machine.

use fencelock::{Guard, LockError, LockOptions, Locker, LockerConfig, MAX_LOCAL_HANDOFFS_LIMIT};
use fencelock_testkit::{Fault, FaultProxy, RedisServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest TTL a worker asks for: restarts are delayed past it (Redlock's rule for nodes
/// without persistence), and liveness allows it plus [`LIVENESS_SLACK`].
pub const MAX_TTL: Duration = Duration::from_millis(600);
/// How soon after the last release (and the faults lifted) no lock key may be left: two node
/// timeouts of the stress lockers (150 ms) and a probe interval (100 ms), plus scheduling slack.
pub const HYGIENE_BOUND: Duration = Duration::from_millis(500);
/// What liveness allows on top of a TTL: retry delays and a node probe or two.
pub const LIVENESS_SLACK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct StressConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Lockers in this process.
    pub lockers: usize,
    /// Child OS processes that run workers of their own (2 lockers each) against the same
    /// nodes: the test binary again, running `stress_child`.
    pub child_processes: usize,
    pub tasks_per_locker: usize,
    pub resources: usize,
    pub run_for: Duration,
}

impl StressConfig {
    /// The seed from `FENCELOCK_STRESS_SEED`, else a fresh one.
    pub fn seed_from_env() -> u64 {
        std::env::var("FENCELOCK_STRESS_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| rand::rng().random())
    }

    /// `FENCELOCK_STRESS_SECONDS`, else `default`.
    pub fn seconds_from_env(default: f64) -> Duration {
        let seconds = std::env::var("FENCELOCK_STRESS_SECONDS")
            .ok()
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(default);
        Duration::from_secs_f64(seconds)
    }
}

/// One hold as its holder saw it. Times are CLOCK_MONOTONIC nanoseconds, comparable across the
/// processes of one machine.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub resource: usize,
    pub fence: u64,
    pub start_ns: u128,
    /// The last moment the holder saw its lock valid (`!is_lost()`).
    pub believed_ns: u128,
    /// When `release()` returned `Ok(true)`: Redis confirmed nobody else was granted the lock
    /// during this hold (the one it was handed to aside). `None` for any other outcome.
    pub confirmed_ns: Option<u128>,
}

impl Hold {
    fn to_line(self) -> String {
        let confirmed = self
            .confirmed_ns
            .map_or("-".to_string(), |ns| ns.to_string());
        format!(
            "{} {} {} {} {confirmed}\n",
            self.resource, self.fence, self.start_ns, self.believed_ns
        )
    }

    fn from_line(line: &str) -> Hold {
        let fields: Vec<&str> = line.split(' ').collect();
        Hold {
            resource: fields[0].parse().unwrap(),
            fence: fields[1].parse().unwrap(),
            start_ns: fields[2].parse().unwrap(),
            believed_ns: fields[3].parse().unwrap(),
            confirmed_ns: fields[4].parse().ok(),
        }
    }
}

/// An `Instant` as CLOCK_MONOTONIC nanoseconds. On Linux std's `Instant` *is* that clock, and
/// its `Debug` form shows the raw `tv_sec`/`tv_nsec` (the only way to it without `unsafe`).
pub fn monotonic_ns(instant: Instant) -> u128 {
    let text = format!("{instant:?}");
    let field = |name: &str| -> u128 {
        let start = text
            .find(name)
            .expect("Instant's Debug shows tv_sec and tv_nsec")
            + name.len();
        text[start..]
            .trim_start_matches([':', ' '])
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    field("tv_sec") * 1_000_000_000 + field("tv_nsec")
}

/// What happened, for the report.
#[derive(Debug, Default)]
pub struct Counts {
    pub holds: AtomicUsize,
    pub busy: AtomicUsize,
    pub unavailable: AtomicUsize,
    pub lost: AtomicUsize,
    pub cancelled_acquires: AtomicUsize,
    pub cancelled_holds: AtomicUsize,
    pub cancelled_releases: AtomicUsize,
    pub shut_down_releases: AtomicUsize,
    pub faults: AtomicUsize,
    pub data_losses: AtomicUsize,
    pub clock_steps: AtomicUsize,
    pub parked_acquires: AtomicUsize,
    pub register_rejections: AtomicUsize,
}

/// When faults were active, for the checkers (CLOCK_MONOTONIC ns).
#[derive(Debug, Default)]
pub struct FaultLog {
    /// Every fault, from injection to lifting.
    pub windows: Mutex<Vec<(u128, u128)>>,
    /// When a node lost its data: from just before the fault was injected to just after it
    /// took effect (a kill lands some time after it is asked for).
    pub data_losses: Mutex<Vec<(u128, u128)>>,
}

impl FaultLog {
    fn open_data_loss(&self, started: u128) -> usize {
        let mut losses = self.data_losses.lock().unwrap();
        losses.push((started, u128::MAX));
        losses.len() - 1
    }

    fn close_data_loss(&self, at: usize) {
        self.data_losses.lock().unwrap()[at].1 = monotonic_ns(Instant::now());
    }

    fn lost_data_between(&self, from: u128, to: u128) -> bool {
        lost_data_between(&self.data_losses.lock().unwrap(), from, to)
    }
}

/// A lock declared lost (an extension refused), or a release answered `Ok(false)`, while the
/// holder's validity had not run out and no node had lost its data: then a majority still
/// held the lock, and "refused" was not true.
#[derive(Debug, Clone, Copy)]
pub struct FalseLoss {
    pub resource: usize,
    pub fence: u64,
    pub held_ms: u128,
    pub at_release: bool,
}

struct Node {
    server: RedisServer,
    proxy: FaultProxy,
    /// The first node's wall clock can be stepped: its offset from the real time now.
    clock_offset_ms: Option<i64>,
}

/// The servers, proxies and lockers of one run.
pub struct Stress {
    config: StressConfig,
    nodes: Arc<Vec<Mutex<Node>>>,
    history: Arc<Mutex<Vec<Hold>>>,
    /// Fenced registers, one per resource: a write carrying a fence below the last one is a
    /// stale writer getting through.
    registers: Arc<Vec<AtomicU64>>,
    faults: Arc<FaultLog>,
    false_losses: Arc<Mutex<Vec<FalseLoss>>>,
    pub counts: Arc<Counts>,
}

pub fn resource(index: usize) -> String {
    format!("stress:{index}")
}

impl Stress {
    pub fn start(config: StressConfig) -> Stress {
        install_panic_counter();
        let nodes = (0..config.nodes)
            .map(|index| {
                let (server, clock_offset_ms) = if index == 0 {
                    (RedisServer::start_with_skewable_clock(), Some(0))
                } else {
                    (RedisServer::start(), None)
                };
                let proxy = FaultProxy::start(server.port());
                Mutex::new(Node {
                    server,
                    proxy,
                    clock_offset_ms,
                })
            })
            .collect();
        Stress {
            registers: Arc::new((0..config.resources).map(|_| AtomicU64::new(0)).collect()),
            config,
            nodes: Arc::new(nodes),
            history: Arc::default(),
            counts: Arc::default(),
            faults: Arc::default(),
            false_losses: Arc::default(),
        }
    }

    /// The URLs lockers use: through the proxies.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.lock().unwrap().proxy.redis_url())
            .collect()
    }

    pub fn locker(&self, index: usize) -> Locker {
        stress_locker(self.urls(), index)
    }

    /// The whole run: workload and nemesis, then lift the faults, then the checks. Panics with
    /// the seed in the message on any violation.
    pub async fn run(&self) {
        // One run at a time per process: each run's verdict (its panics above all, counted
        // process-wide) is its own, and a loaded machine is not loaded further by parallel runs.
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _alone = ONE_AT_A_TIME.lock().await;
        let panics_before = PANICS.load(Ordering::SeqCst);
        let config = &self.config;
        eprintln!(
            "stress: seed {} ({} node(s), {} lockers + {} child processes × 2 lockers, × {} tasks each, {} resources, {:?}); replay with FENCELOCK_STRESS_SEED={}",
            config.seed,
            config.nodes,
            config.lockers,
            config.child_processes,
            config.tasks_per_locker,
            config.resources,
            config.run_for,
            config.seed
        );
        let lockers: Vec<Locker> = (0..config.lockers).map(|l| self.locker(l)).collect();
        let deadline = Instant::now() + config.run_for;
        let children: Vec<_> = (0..config.child_processes)
            .map(|child| self.spawn_child(child))
            .collect();
        let workers = spawn_workers(
            &lockers,
            config.seed,
            config.tasks_per_locker,
            deadline,
            config.resources,
            &Records {
                history: Arc::clone(&self.history),
                registers: Arc::clone(&self.registers),
                counts: Arc::clone(&self.counts),
                faults: Some(Arc::clone(&self.faults)),
                false_losses: Arc::clone(&self.false_losses),
            },
        );
        let nemesis = tokio::spawn(nemesis(
            Arc::clone(&self.nodes),
            StdRng::seed_from_u64(config.seed),
            deadline,
            Arc::clone(&self.counts),
            Arc::clone(&self.faults),
        ));
        for worker in workers {
            worker.await.expect("a worker panicked");
        }
        nemesis.await.expect("the nemesis panicked");
        for (child, history_file) in children {
            self.collect_child(child, &history_file).await;
        }
        self.lift_faults();
        self.check_liveness(&lockers).await;
        self.check_safety();
        self.check_false_losses();
        self.check_hygiene().await;
        let panics = PANICS.load(Ordering::SeqCst) - panics_before;
        assert_eq!(
            panics, 0,
            "seed {}: {panics} panic(s) during the run",
            config.seed
        );
        eprintln!("stress: seed {} passed: {}", config.seed, self.summary());
    }

    /// Starts child process `index`: the test binary running `stress_child` until the run's
    /// deadline, writing its holds to a file.
    fn spawn_child(&self, index: usize) -> (std::process::Child, std::path::PathBuf) {
        let history_file = std::env::temp_dir().join(format!(
            "fencelock-stress-{}-{}-{index}.holds",
            std::process::id(),
            self.config.seed
        ));
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stress_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URLS, self.urls().join(","))
            .env(
                CHILD_SEED,
                (self.config.seed ^ (0xc41d << 16 | index as u64)).to_string(),
            )
            .env(CHILD_MILLIS, self.config.run_for.as_millis().to_string())
            .env(CHILD_RESOURCES, self.config.resources.to_string())
            .env(CHILD_TASKS, self.config.tasks_per_locker.to_string())
            .env(CHILD_OUT, &history_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start a child process of the stress run");
        (child, history_file)
    }

    async fn collect_child(&self, mut child: std::process::Child, history_file: &std::path::Path) {
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            status.success(),
            "seed {}: a child process failed ({status}); its output is above",
            self.config.seed
        );
        let text = std::fs::read_to_string(history_file).expect("the child's history");
        let _ = std::fs::remove_file(history_file);
        let holds: Vec<Hold> = text.lines().map(Hold::from_line).collect();
        self.counts.holds.fetch_add(holds.len(), Ordering::Relaxed);
        self.history.lock().unwrap().extend(holds);
    }

    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "{} holds, {} busy, {} unavailable, {} lost, cancelled: {} acquires / {} holds / {} releases, {} releases on a runtime shut down, {} parked acquires, {} faults ({} data losses, {} clock steps), {} stale register writes rejected",
            c.holds.load(Ordering::Relaxed),
            c.busy.load(Ordering::Relaxed),
            c.unavailable.load(Ordering::Relaxed),
            c.lost.load(Ordering::Relaxed),
            c.cancelled_acquires.load(Ordering::Relaxed),
            c.cancelled_holds.load(Ordering::Relaxed),
            c.cancelled_releases.load(Ordering::Relaxed),
            c.shut_down_releases.load(Ordering::Relaxed),
            c.parked_acquires.load(Ordering::Relaxed),
            c.faults.load(Ordering::Relaxed),
            c.data_losses.load(Ordering::Relaxed),
            c.clock_steps.load(Ordering::Relaxed),
            c.register_rejections.load(Ordering::Relaxed),
        )
    }

    fn lift_faults(&self) {
        for node in self.nodes.iter() {
            let mut node = node.lock().unwrap();
            node.proxy.set(Fault::None);
            node.server.resume();
            if !node.server.is_running() {
                node.server.restart();
            }
        }
    }

    /// Every locker takes every resource within the TTL plus the slack.
    async fn check_liveness(&self, lockers: &[Locker]) {
        let budget = MAX_TTL + LIVENESS_SLACK;
        let options = LockOptions::new().ttl(Duration::from_secs(2)).wait(budget);
        for (l, locker) in lockers.iter().enumerate() {
            for r in 0..self.config.resources {
                let started = Instant::now();
                match locker.acquire(&resource(r), &options).await {
                    Ok(guard) => {
                        assert!(guard.release().await.unwrap(), "seed {}", self.config.seed);
                    }
                    Err(error) => panic!(
                        "seed {}: liveness: locker {l} could not take {} within {budget:?} after the faults ended ({:?}): {error}",
                        self.config.seed,
                        resource(r),
                        started.elapsed()
                    ),
                }
            }
        }
    }

    fn check_safety(&self) {
        let data_losses = self.faults.data_losses.lock().unwrap().clone();
        check_history(
            self.config.seed,
            &self.history.lock().unwrap(),
            &data_losses,
        );
    }

    fn check_false_losses(&self) {
        let false_losses = self.false_losses.lock().unwrap();
        assert!(
            false_losses.is_empty(),
            "seed {}: refused while a majority held the lock (validity left, no data lost): {:?}",
            self.config.seed,
            *false_losses
        );
    }

    /// Shortly after every release (the faults lifted): no lock key anywhere, and every key
    /// expires. The bound is what the crate promises: a release, and the undo of an attempt
    /// cut short, reach every node within a couple of node timeouts and a probe once it
    /// answers again (resent until it does), not only when the key expires.
    async fn check_hygiene(&self) {
        tokio::time::sleep(HYGIENE_BOUND).await;
        for (index, node) in self.nodes.iter().enumerate() {
            let url = node.lock().unwrap().server.url();
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let keys: Vec<String> = conn.keys("*").await.unwrap();
            for key in keys {
                let pttl: i64 = conn.pttl(&key).await.unwrap();
                assert!(
                    !key.ends_with(":lock") || pttl == -2,
                    "seed {}: hygiene: node {index} still has {key} (PTTL {pttl} ms) with every lock released",
                    self.config.seed
                );
                assert!(
                    pttl > 0 || pttl == -2,
                    "seed {}: hygiene: node {index}: {key} never expires",
                    self.config.seed
                );
            }
        }
    }
}

/// The safety checker: per resource, holds sorted by start must not overlap and their fences
/// must rise.
/// Whether some data loss may have happened between `from` and `to`.
fn lost_data_between(data_losses: &[(u128, u128)], from: u128, to: u128) -> bool {
    data_losses
        .iter()
        .any(|&(started, ended)| started <= to && ended >= from)
}

pub fn check_history(seed: u64, history: &[Hold], data_losses: &[(u128, u128)]) {
    let mut by_resource: HashMap<usize, Vec<Hold>> = HashMap::new();
    for hold in history {
        by_resource.entry(hold.resource).or_default().push(*hold);
    }
    for (resource, mut holds) in by_resource {
        holds.sort_by_key(|hold| hold.start_ns);
        for pair in holds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            // Data loss excuses an overlap: without persistence no lock on Redis survives it, and
            // fences are what keeps the data right then. Two kinds of overlap:
            // - `b` holds a lock passed on in-process from a block Redis lost (a "ghost": its
            //   fence is below `a`'s, so fenced storage rejects it; its holder is told it is
            //   lost within a round trip, when the pass-on's confirmation is refused);
            // - `b` was granted by Redis over a lock the loss erased: allowed, unless `a`'s
            //   release said `Ok(true)` — Redis confirmed nobody was granted it during `a`'s hold.
            let lost_data_between = lost_data_between(
                data_losses,
                a.start_ns.saturating_sub(ROUND_REACH.as_nanos()),
                b.start_ns,
            );
            let ghost = lost_data_between && b.fence < a.fence;
            let excused = ghost || (lost_data_between && a.confirmed_ns.is_none());
            assert!(
                a.believed_ns <= b.start_ns || excused,
                "seed {seed}: safety: two holds of resource {resource} overlapped by {} µs (data lost between: {lost_data_between}): {a:?} and {b:?}",
                (a.believed_ns - b.start_ns) / 1000
            );
            assert!(
                a.fence < b.fence || ghost,
                "seed {seed}: safety: fence went backwards on resource {resource}: {a:?} then {b:?}"
            );
        }
    }
}

/// Starts `tasks_per_locker` workers on each locker, each with its own seeded generator.
fn spawn_workers(
    lockers: &[Locker],
    seed: u64,
    tasks_per_locker: usize,
    deadline: Instant,
    resources: usize,
    records: &Records,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut workers = Vec::new();
    for (l, locker) in lockers.iter().enumerate() {
        for t in 0..tasks_per_locker {
            let rng = StdRng::seed_from_u64(seed ^ (((l as u64) << 32) | (t as u64 + 1)));
            workers.push(tokio::spawn(worker(
                locker.clone(),
                rng,
                deadline,
                resources,
                records.clone(),
            )));
        }
    }
    workers
}

/// Where workers record what happened.
#[derive(Clone)]
struct Records {
    history: Arc<Mutex<Vec<Hold>>>,
    registers: Arc<Vec<AtomicU64>>,
    counts: Arc<Counts>,
    /// The fault log, in the process that runs the nemesis (a child process has none).
    faults: Option<Arc<FaultLog>>,
    false_losses: Arc<Mutex<Vec<FalseLoss>>>,
}

const CHILD_URLS: &str = "FENCELOCK_STRESS_CHILD_URLS";
const CHILD_SEED: &str = "FENCELOCK_STRESS_CHILD_SEED";
const CHILD_MILLIS: &str = "FENCELOCK_STRESS_CHILD_MILLIS";
const CHILD_RESOURCES: &str = "FENCELOCK_STRESS_CHILD_RESOURCES";
const CHILD_TASKS: &str = "FENCELOCK_STRESS_CHILD_TASKS";
const CHILD_OUT: &str = "FENCELOCK_STRESS_CHILD_OUT";

/// A child process's part of a run (see `Stress::spawn_child`): two lockers of its own hammer
/// the same nodes until the deadline; its holds go to a file for the parent's checker.
pub async fn run_child() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: this test is a child of `separate_processes_under_faults`")
        })
    };
    install_panic_counter();
    let urls: Vec<String> = var(CHILD_URLS).split(',').map(String::from).collect();
    let seed: u64 = var(CHILD_SEED).parse().unwrap();
    let run_for = Duration::from_millis(var(CHILD_MILLIS).parse().unwrap());
    let resources: usize = var(CHILD_RESOURCES).parse().unwrap();
    let tasks: usize = var(CHILD_TASKS).parse().unwrap();
    let lockers: Vec<Locker> = (0..2).map(|l| stress_locker(urls.clone(), l)).collect();
    let history = Arc::new(Mutex::new(Vec::new()));
    let records = Records {
        history: Arc::clone(&history),
        registers: Arc::new((0..resources).map(|_| AtomicU64::new(0)).collect()),
        counts: Arc::default(),
        faults: None,
        false_losses: Arc::default(),
    };
    let deadline = Instant::now() + run_for;
    let workers = spawn_workers(&lockers, seed, tasks, deadline, resources, &records);
    for worker in workers {
        worker.await.expect("a worker panicked");
    }
    // Let releases and undos of the last holds go out before the process ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic in the child");
    let lines: String = history
        .lock()
        .unwrap()
        .iter()
        .map(|hold| hold.to_line())
        .collect();
    std::fs::write(var(CHILD_OUT), lines).expect("write the child's history");
}

/// The lockers of a run: short node timeout, short yield window; every other one passes the
/// lock on locally as often as the crate allows.
fn stress_locker(urls: Vec<String>, index: usize) -> Locker {
    let handoffs = if index % 2 == 1 {
        MAX_LOCAL_HANDOFFS_LIMIT
    } else {
        16
    };
    Locker::new(
        LockerConfig::new(urls)
            .node_timeout(Duration::from_millis(150))
            .yield_window(Duration::from_millis(1))
            .max_local_handoffs(handoffs),
    )
    .unwrap()
}

async fn worker(
    locker: Locker,
    mut rng: StdRng,
    deadline: Instant,
    resources: usize,
    records: Records,
) {
    let counts = &records.counts;
    while Instant::now() < deadline {
        let index = rng.random_range(0..resources);
        let ttl = Duration::from_millis(rng.random_range(200..=MAX_TTL.as_millis() as u64));
        let options = LockOptions::new()
            .ttl(ttl)
            .wait(Duration::from_millis(rng.random_range(0..800)))
            .auto_extend(rng.random_bool(0.3));
        let name = resource(index);
        let mut acquire = Box::pin(locker.acquire(&name, &options));
        let mut parked = false;
        // Cancel one acquisition in ten at a random point; park one in twenty-five (alive,
        // unpolled, as in a `select!` whose other branch runs long) and then either drop it or
        // go on with it.
        let outcome = if rng.random_bool(0.1) {
            let cut = Duration::from_micros(rng.random_range(0..30_000));
            match tokio::time::timeout(cut, acquire).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    counts.cancelled_acquires.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        } else if rng.random_bool(0.04) {
            counts.parked_acquires.fetch_add(1, Ordering::Relaxed);
            let polled_for = Duration::from_micros(rng.random_range(0..20_000));
            match tokio::time::timeout(polled_for, &mut acquire).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
                    if rng.random_bool(0.5) {
                        continue;
                    }
                    parked = true;
                    acquire.await
                }
            }
        } else {
            acquire.await
        };
        let guard = match outcome {
            Ok(guard) => guard,
            Err(LockError::Busy { .. }) => {
                counts.busy.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(LockError::Unavailable { .. }) => {
                counts.unavailable.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
                continue;
            }
            Err(other) => panic!("unexpected lock error: {other}"),
        };
        counts.holds.fetch_add(1, Ordering::Relaxed);
        if trace() {
            eprintln!(
                "trace acquired resource {index} fence {} start {} returned {} parked {parked} auto_extend {} ttl {:?}",
                guard.fence(),
                monotonic_ns(guard.acquired_at().into_std()),
                monotonic_ns(Instant::now()),
                options.auto_extend,
                ttl,
            );
        }
        // Now and then a holder outlives its TTL (a stall, a GC pause): without auto-extend it
        // must then see its lock lost, and nobody else may have been in while it believed not.
        let overlong = rng.random_bool(0.03);
        let work = if overlong {
            ttl * 3 / 2
        } else {
            Duration::from_micros(rng.random_range(0..15_000))
        };
        // A lock handed to a parked acquisition was not renewed meanwhile: it may be lost.
        let may_be_lost = overlong || parked;
        let cancel_hold = rng.random_bool(0.05);
        if cancel_hold {
            // The holder's future is dropped mid-hold: the guard goes with it.
            let hold = async {
                tokio::time::sleep(work * 4).await;
            };
            let _ = tokio::time::timeout(work, hold).await;
            record(&guard, index, &records, may_be_lost);
            counts.cancelled_holds.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            continue;
        }
        tokio::time::sleep(work).await;
        let recorded = record(&guard, index, &records, may_be_lost);
        if rng.random_bool(0.02) {
            // The release is started on a runtime of its own, which shuts down while it is in
            // flight (an actix worker stopping): it must go on, on the background runtime,
            // with no panic anywhere; hygiene checks that it landed.
            counts.shut_down_releases.fetch_add(1, Ordering::Relaxed);
            let runs_for = Duration::from_micros(rng.random_range(0..2_000));
            let _ = tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the release");
                runtime.block_on(async move {
                    let _in_flight = tokio::spawn(guard.release());
                    tokio::time::sleep(runs_for).await;
                });
                drop(runtime);
            })
            .await;
            continue;
        }
        let cut = rng
            .random_bool(0.1)
            .then(|| Duration::from_micros(rng.random_range(0..2_000)));
        release(guard, index, recorded, &records, may_be_lost, cut).await;
    }
}

/// `FENCELOCK_STRESS_TRACE=1`: every acquisition and release on stderr, to follow a failing
/// seed's holds by their fences.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FENCELOCK_STRESS_TRACE").is_some())
}

/// How long before `acquired_at` (when its round returned) a holder's acquisition round may have
/// reached a node: a node that said yes and then lost its data before the round returned leaves
/// the lock on fewer nodes than it seems. Two node timeouts of the stress lockers (150 ms): the
/// wait for a connection and the call.
const ROUND_REACH: Duration = Duration::from_millis(300);

/// Whether a refusal the holder of `guard` has seen by now is explained: it was not valid any
/// more when it looked (`was_valid`), or a node lost its data since its acquisition round began.
/// In a child process (no fault log) every refusal counts as explained.
fn refusal_explained(
    acquired_at: tokio::time::Instant,
    was_valid: bool,
    records: &Records,
    may_be_lost: bool,
) -> bool {
    let from = monotonic_ns(acquired_at.into_std()).saturating_sub(ROUND_REACH.as_nanos());
    may_be_lost
        || !was_valid
        || records
            .faults
            .as_ref()
            .is_none_or(|faults| faults.lost_data_between(from, monotonic_ns(Instant::now())))
}

fn still_valid(guard: &Guard) -> bool {
    guard.valid_until() > tokio::time::Instant::now()
}

fn false_loss(guard: &Guard, index: usize, records: &Records, at_release: bool) {
    let start_ns = monotonic_ns(guard.acquired_at().into_std());
    records.false_losses.lock().unwrap().push(FalseLoss {
        resource: index,
        fence: guard.fence(),
        held_ms: (monotonic_ns(Instant::now()) - start_ns) / 1_000_000,
        at_release,
    });
}

/// Releases the hold at `recorded` (if it was recorded) and notes a confirmed release; an
/// `Ok(false)` that nothing explains is a false loss.
async fn release(
    guard: Guard,
    index: usize,
    recorded: Option<usize>,
    records: &Records,
    may_be_lost: bool,
    cut: Option<Duration>,
) {
    let was_valid = still_valid(&guard);
    let (fence, acquired_at) = (guard.fence(), guard.acquired_at());

    let outcome = match cut {
        Some(cut) => match tokio::time::timeout(cut, guard.release()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                records
                    .counts
                    .cancelled_releases
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        None => guard.release().await,
    };
    if trace() {
        eprintln!(
            "trace released fence {fence} at {} outcome {outcome:?}",
            monotonic_ns(Instant::now())
        );
    }
    match outcome {
        Ok(true) => {
            if let Some(at) = recorded {
                records.history.lock().unwrap()[at].confirmed_ns =
                    Some(monotonic_ns(Instant::now()));
            }
        }
        // Judged once the release has returned: a data loss during the release round counts.
        Ok(false) if !refusal_explained(acquired_at, was_valid, records, may_be_lost) => {
            records.false_losses.lock().unwrap().push(FalseLoss {
                resource: index,
                fence,
                held_ms: acquired_at.elapsed().as_millis(),
                at_release: true,
            });
        }
        _ => {}
    }
}

/// Records the hold if the holder still believes it holds the lock, writing its fence to the
/// resource's register at that moment; its place in the history. A lock declared lost by a
/// refusal that nothing explains is a false loss.
fn record(guard: &Guard, index: usize, records: &Records, may_be_lost: bool) -> Option<usize> {
    let counts = &records.counts;
    if guard.is_lost() {
        counts.lost.fetch_add(1, Ordering::Relaxed);
        if !refusal_explained(
            guard.acquired_at(),
            still_valid(guard),
            records,
            may_be_lost,
        ) {
            false_loss(guard, index, records, false);
        }
        return None;
    }
    let mut history = records.history.lock().unwrap();
    let believed_until = Instant::now();
    let previous = records.registers[index].fetch_max(guard.fence(), Ordering::SeqCst);
    if previous >= guard.fence() {
        counts.register_rejections.fetch_add(1, Ordering::Relaxed);
    }
    history.push(Hold {
        resource: index,
        fence: guard.fence(),
        start_ns: monotonic_ns(guard.acquired_at().into_std()),
        believed_ns: monotonic_ns(believed_until),
        confirmed_ns: None,
    });
    Some(history.len() - 1)
}

/// Injects one fault at a time on a random node, on a seeded schedule, until the deadline, and
/// logs when each was active.
async fn nemesis(
    nodes: Arc<Vec<Mutex<Node>>>,
    mut rng: StdRng,
    deadline: Instant,
    counts: Arc<Counts>,
    log: Arc<FaultLog>,
) {
    loop {
        let pause = Duration::from_millis(rng.random_range(100..500));
        if Instant::now() + pause >= deadline {
            return;
        }
        tokio::time::sleep(pause).await;
        let node = rng.random_range(0..nodes.len());
        let length = Duration::from_millis(rng.random_range(50..500));
        counts.faults.fetch_add(1, Ordering::Relaxed);
        let started = monotonic_ns(Instant::now());
        let url = nodes[node].lock().unwrap().server.url();
        match rng.random_range(0..12) {
            0 => {
                let latency = Duration::from_millis(rng.random_range(5..120));
                nodes[node]
                    .lock()
                    .unwrap()
                    .proxy
                    .set(Fault::Latency(latency));
                tokio::time::sleep(length).await;
                nodes[node].lock().unwrap().proxy.set(Fault::None);
            }
            1 => {
                nodes[node].lock().unwrap().proxy.set(Fault::Blackhole);
                tokio::time::sleep(length).await;
                nodes[node].lock().unwrap().proxy.set(Fault::None);
            }
            2 => nodes[node].lock().unwrap().proxy.reset_connections(),
            3 => {
                command(
                    &url,
                    &["CLIENT", "PAUSE", &length.as_millis().to_string(), "ALL"],
                )
                .await;
                tokio::time::sleep(length).await;
            }
            4 => {
                nodes[node].lock().unwrap().server.pause();
                tokio::time::sleep(length).await;
                nodes[node].lock().unwrap().server.resume();
            }
            5 => {
                // A crash, and a restart only after the longest TTL (Redlock's delayed restart:
                // a node without persistence must not come back while locks it held could live).
                tokio::task::block_in_place(|| nodes[node].lock().unwrap().server.kill());
                tokio::time::sleep(length.max(MAX_TTL + Duration::from_millis(50))).await;
                tokio::task::block_in_place(|| nodes[node].lock().unwrap().server.restart());
            }
            6 => {
                // Data loss: the node forgets every lock and fence counter at once. Logged as
                // open before it is injected (workers judge refusals while the run goes on),
                // closed once it has surely happened.
                counts.data_losses.fetch_add(1, Ordering::Relaxed);
                let at = log.open_data_loss(started);
                command(&url, &["FLUSHALL"]).await;
                log.close_data_loss(at);
            }
            7 => {
                // A crash and an immediate restart, empty (no persistence, no delay).
                counts.data_losses.fetch_add(1, Ordering::Relaxed);
                let at = log.open_data_loss(started);
                tokio::task::block_in_place(|| nodes[node].lock().unwrap().server.restart());
                log.close_data_loss(at);
            }
            8 => {
                // Millisecond stalls of one node while the others answer: its answers come a
                // few ms after theirs, so votes split and late yeses arrive.
                let stall = format!("0.00{}", rng.random_range(1..=6));
                let until = Instant::now() + length;
                while Instant::now() < until {
                    command(&url, &["DEBUG", "SLEEP", &stall]).await;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
                }
            }
            9 => {
                // Bursts of very short pauses: commands queue for a millisecond or three.
                let until = Instant::now() + length;
                while Instant::now() < until {
                    let ms = rng.random_range(1..=3).to_string();
                    command(&url, &["CLIENT", "PAUSE", &ms, "ALL"]).await;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(2..20))).await;
                }
            }
            11 => {
                // The first node's wall clock steps, by 50–300 ms, within ±1 s of the real
                // time (NTP stepping a clock; the fence's clock assumption allows any step
                // back shorter than a counter outlives its lock). Forward, keys there expire
                // early: a data loss on that node. Back, nothing may go wrong at all: keys
                // live longer, and fences must still rise (`last + 1` absorbs the step).
                let Some(old) = nodes[0].lock().unwrap().clock_offset_ms else {
                    continue;
                };
                let step = rng.random_range(50..=300) * if rng.random_bool(0.5) { 1 } else { -1 };
                let new = (old + step).clamp(-1000, 1000);
                counts.clock_steps.fetch_add(1, Ordering::Relaxed);
                let forward = new > old;
                let at = forward.then(|| {
                    counts.data_losses.fetch_add(1, Ordering::Relaxed);
                    log.open_data_loss(started)
                });
                {
                    let mut node = nodes[0].lock().unwrap();
                    node.server.set_clock_offset(new);
                    node.clock_offset_ms = Some(new);
                }
                // libfaketime reads the offset within a second.
                tokio::time::sleep(Duration::from_millis(1100)).await;
                if let Some(at) = at {
                    log.close_data_loss(at);
                }
            }
            _ => {
                // A blocked thread of the callers' runtime (a handler calling something
                // blocking): only the tasks on that thread may stall.
                let blocked = tokio::spawn(async move { std::thread::sleep(length) });
                let _ = blocked.await;
            }
        }
        log.windows
            .lock()
            .unwrap()
            .push((started, monotonic_ns(Instant::now())));
    }
}

/// One command on a fresh connection to `url`, ignoring failures (the node may be down).
async fn command(url: &str, args: &[&str]) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let connecting = client.get_multiplexed_async_connection();
    let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(1), connecting).await else {
        return;
    };
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        cmd.query_async::<redis::Value>(&mut conn),
    )
    .await;
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on every thread (the lock's background thread included), keeping the default
/// report.
fn install_panic_counter() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}
