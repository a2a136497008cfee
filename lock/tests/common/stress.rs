//! The seeded fault-injection stress run shared by `tests/stress.rs` and `cargo xtask soak`.
//!
//! Jepsen's shape: workers record a *history* of holds, a *nemesis* injects faults on its own
//! schedule, and *checkers* state the properties afterwards:
//! - safety: no two holds of one resource overlap while both holders believed they held it
//!   (from `acquired_at` to the last moment the holder saw `!is_lost()`), and fences rise in
//!   the order of the holds; a fenced register accepts every believed holder's write;
//! - liveness: once the faults are lifted, every locker takes every resource within the TTL
//!   plus a stated slack;
//! - hygiene: no panic anywhere, and afterwards no lock key on any node, every key expiring.
//!
//! Every random choice comes from one seed, printed first, so a failing schedule can be run
//! again (`FENCELOCK_STRESS_SEED`); the interleaving itself is up to the machine.

use fencelock::{Guard, LockError, LockOptions, Locker, LockerConfig};
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
}

impl Hold {
    fn to_line(self) -> String {
        format!(
            "{} {} {} {}\n",
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
    pub faults: AtomicUsize,
    pub register_rejections: AtomicUsize,
}

struct Node {
    server: RedisServer,
    proxy: FaultProxy,
}

/// The servers, proxies and lockers of one run.
pub struct Stress {
    config: StressConfig,
    nodes: Arc<Vec<Mutex<Node>>>,
    history: Arc<Mutex<Vec<Hold>>>,
    /// Fenced registers, one per resource: a write carrying a fence below the last one is a
    /// stale writer getting through.
    registers: Arc<Vec<AtomicU64>>,
    pub counts: Arc<Counts>,
}

pub fn resource(index: usize) -> String {
    format!("stress:{index}")
}

impl Stress {
    pub fn start(config: StressConfig) -> Stress {
        install_panic_counter();
        let nodes = (0..config.nodes)
            .map(|_| {
                let server = RedisServer::start();
                let proxy = FaultProxy::start(server.port());
                Mutex::new(Node { server, proxy })
            })
            .collect();
        Stress {
            registers: Arc::new((0..config.resources).map(|_| AtomicU64::new(0)).collect()),
            config,
            nodes: Arc::new(nodes),
            history: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// The URLs lockers use: through the proxies.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.lock().unwrap().proxy.redis_url())
            .collect()
    }

    pub fn locker(&self) -> Locker {
        stress_locker(self.urls())
    }

    /// The whole run: workload and nemesis, then lift the faults, then the checks. Panics with
    /// the seed in the message on any violation.
    pub async fn run(&self) {
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
        let lockers: Vec<Locker> = (0..config.lockers).map(|_| self.locker()).collect();
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
            &self.history,
            &self.registers,
            &self.counts,
        );
        let nemesis = tokio::spawn(nemesis(
            Arc::clone(&self.nodes),
            StdRng::seed_from_u64(config.seed),
            deadline,
            Arc::clone(&self.counts),
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
        self.check_hygiene().await;
        let panics = PANICS.load(Ordering::SeqCst);
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
            "{} holds, {} busy, {} unavailable, {} lost, cancelled: {} acquires / {} holds / {} releases, {} faults, {} stale register writes rejected",
            c.holds.load(Ordering::Relaxed),
            c.busy.load(Ordering::Relaxed),
            c.unavailable.load(Ordering::Relaxed),
            c.lost.load(Ordering::Relaxed),
            c.cancelled_acquires.load(Ordering::Relaxed),
            c.cancelled_holds.load(Ordering::Relaxed),
            c.cancelled_releases.load(Ordering::Relaxed),
            c.faults.load(Ordering::Relaxed),
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
        check_history(self.config.seed, &self.history.lock().unwrap());
    }

    /// After every release: no lock key anywhere, and every key expires.
    async fn check_hygiene(&self) {
        // A child process may have ended while a fault kept its last release from a node: like
        // any holder that is gone, its lock may then live out its TTL.
        let settle = if self.config.child_processes > 0 {
            MAX_TTL
        } else {
            Duration::from_millis(200)
        };
        tokio::time::sleep(settle).await;
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
pub fn check_history(seed: u64, history: &[Hold]) {
    let mut by_resource: HashMap<usize, Vec<Hold>> = HashMap::new();
    for hold in history {
        by_resource.entry(hold.resource).or_default().push(*hold);
    }
    for (resource, mut holds) in by_resource {
        holds.sort_by_key(|hold| hold.start_ns);
        for pair in holds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.believed_ns <= b.start_ns,
                "seed {seed}: safety: two holds of resource {resource} overlapped by {} µs: {a:?} and {b:?}",
                (a.believed_ns - b.start_ns) / 1000
            );
            assert!(
                a.fence < b.fence,
                "seed {seed}: safety: fence went backwards on resource {resource}: {a:?} then {b:?}"
            );
        }
    }
}

/// Starts `tasks_per_locker` workers on each locker, each with its own seeded generator.
#[allow(clippy::too_many_arguments)]
fn spawn_workers(
    lockers: &[Locker],
    seed: u64,
    tasks_per_locker: usize,
    deadline: Instant,
    resources: usize,
    history: &Arc<Mutex<Vec<Hold>>>,
    registers: &Arc<Vec<AtomicU64>>,
    counts: &Arc<Counts>,
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
                Arc::clone(history),
                Arc::clone(registers),
                Arc::clone(counts),
            )));
        }
    }
    workers
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
    let lockers: Vec<Locker> = (0..2).map(|_| stress_locker(urls.clone())).collect();
    let history = Arc::new(Mutex::new(Vec::new()));
    let registers = Arc::new((0..resources).map(|_| AtomicU64::new(0)).collect());
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + run_for;
    let workers = spawn_workers(
        &lockers, seed, tasks, deadline, resources, &history, &registers, &counts,
    );
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

/// The lockers of a run: short node timeout, short yield window.
fn stress_locker(urls: Vec<String>) -> Locker {
    Locker::new(
        LockerConfig::new(urls)
            .node_timeout(Duration::from_millis(150))
            .yield_window(Duration::from_millis(1)),
    )
    .unwrap()
}

async fn worker(
    locker: Locker,
    mut rng: StdRng,
    deadline: Instant,
    resources: usize,
    history: Arc<Mutex<Vec<Hold>>>,
    registers: Arc<Vec<AtomicU64>>,
    counts: Arc<Counts>,
) {
    while Instant::now() < deadline {
        let index = rng.random_range(0..resources);
        let ttl = Duration::from_millis(rng.random_range(200..=MAX_TTL.as_millis() as u64));
        let options = LockOptions::new()
            .ttl(ttl)
            .wait(Duration::from_millis(rng.random_range(0..800)))
            .auto_extend(rng.random_bool(0.3));
        let name = resource(index);
        let acquire = locker.acquire(&name, &options);
        // Cancel one acquisition in ten at a random point.
        let outcome = if rng.random_bool(0.1) {
            let cut = Duration::from_micros(rng.random_range(0..30_000));
            match tokio::time::timeout(cut, acquire).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    counts.cancelled_acquires.fetch_add(1, Ordering::Relaxed);
                    continue;
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
        // Now and then a holder outlives its TTL (a stall, a GC pause): without auto-extend it
        // must then see its lock lost, and nobody else may have been in while it believed not.
        let work = if rng.random_bool(0.03) {
            ttl * 3 / 2
        } else {
            Duration::from_micros(rng.random_range(0..15_000))
        };
        let cancel_hold = rng.random_bool(0.05);
        if cancel_hold {
            // The holder's future is dropped mid-hold: the guard goes with it.
            let hold = async {
                tokio::time::sleep(work * 4).await;
            };
            let _ = tokio::time::timeout(work, hold).await;
            record(&guard, index, &history, &registers, &counts);
            counts.cancelled_holds.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            continue;
        }
        tokio::time::sleep(work).await;
        record(&guard, index, &history, &registers, &counts);
        if rng.random_bool(0.1) {
            let cut = Duration::from_micros(rng.random_range(0..2_000));
            if tokio::time::timeout(cut, guard.release()).await.is_err() {
                counts.cancelled_releases.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let _ = guard.release().await;
        }
    }
}

/// Records the hold if the holder still believes it holds the lock, writing its fence to the
/// resource's register at that moment.
fn record(
    guard: &Guard,
    index: usize,
    history: &Mutex<Vec<Hold>>,
    registers: &[AtomicU64],
    counts: &Counts,
) {
    let mut history = history.lock().unwrap();
    if guard.is_lost() {
        counts.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let believed_until = Instant::now();
    let previous = registers[index].fetch_max(guard.fence(), Ordering::SeqCst);
    if previous >= guard.fence() {
        counts.register_rejections.fetch_add(1, Ordering::Relaxed);
    }
    history.push(Hold {
        resource: index,
        fence: guard.fence(),
        start_ns: monotonic_ns(guard.acquired_at().into_std()),
        believed_ns: monotonic_ns(believed_until),
    });
}

/// Injects one fault at a time on a random node, on a seeded schedule, until the deadline.
async fn nemesis(
    nodes: Arc<Vec<Mutex<Node>>>,
    mut rng: StdRng,
    deadline: Instant,
    counts: Arc<Counts>,
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
        match rng.random_range(0..6) {
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
                let url = nodes[node].lock().unwrap().server.url();
                if let Ok(mut conn) = redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                {
                    let _: Result<(), _> = redis::cmd("CLIENT")
                        .arg("PAUSE")
                        .arg(length.as_millis() as u64)
                        .arg("ALL")
                        .query_async(&mut conn)
                        .await;
                }
                tokio::time::sleep(length).await;
            }
            4 => {
                nodes[node].lock().unwrap().server.pause();
                tokio::time::sleep(length).await;
                nodes[node].lock().unwrap().server.resume();
            }
            _ => {
                // A crash, and a restart only after the longest TTL (Redlock's delayed restart:
                // a node without persistence must not come back while locks it held could live).
                tokio::task::block_in_place(|| nodes[node].lock().unwrap().server.kill());
                tokio::time::sleep(length.max(MAX_TTL + Duration::from_millis(50))).await;
                tokio::task::block_in_place(|| nodes[node].lock().unwrap().server.restart());
            }
        }
    }
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
