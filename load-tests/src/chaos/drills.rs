//! The drills: load through the load balancer, a fault injected after a warm-up, lifted, load
//! a while longer, then the checkers. One function per drill; the timeline is in its
//! `TIMELINE` text and in the report.

use super::checks::{self, seconds, Window};
use super::driver::{Answer, Driver, History, Stream};
use super::storm::{self, Storm};
use super::{blocking, Cx};
use crate::verify::Check;
use fencelock_testkit::Component;
use std::time::Duration;

/// The deduct handler's lock ttl (`ttl_ms = 5000`, no auto-extend).
pub const TTL: Duration = Duration::from_millis(5000);
/// Load before the fault.
const WARM: Duration = Duration::from_secs(8);
/// How long a fault stays in force (kills: until the restart begins).
const FAULT: Duration = Duration::from_secs(10);
/// The lock holder's pause: past 2 × ttl.
const PAUSE: Duration = Duration::from_millis(2 * 5000 + 1000);
/// Load after the fault is lifted.
const AFTER: Duration = Duration::from_secs(10);
/// Clients through the load balancer, back to back.
const LB_CLIENTS: usize = 16;
/// Clients straight at each instance (holder pause), so that the lock's other contenders keep
/// asking while every client of the load balancer may be stuck on the paused instance.
const DIRECT_CLIENTS: usize = 2;
/// Hang-up clients per target (the load balancer and each instance).
const STORM_CLIENTS: usize = 8;
/// The probe's pause between requests during the storm.
const PROBE_PACE: Duration = Duration::from_millis(200);
/// Stock large enough never to run out.
const INITIAL: i64 = 100_000_000;
/// Holder pause: how long after the SIGSTOP in-flight writes may still land, then how long no
/// other instance may write for the paused one to count as the holder.
const IN_FLIGHT: Duration = Duration::from_millis(300);
const QUIET: Duration = Duration::from_millis(800);
const HOLDER_ATTEMPTS: usize = 12;
/// Majority hung: from this long after the fault began, requests must be refused promptly and
/// nothing may be written.
const GRACE: Duration = Duration::from_secs(2);
/// "Promptly": well inside the lock's wait budget (20 s).
const PROMPT: Duration = TTL;
/// The codes a request may be refused with while a majority is hung. The service's own answer;
/// a load balancer that takes every instance out of rotation answers `lb_no_server` instead,
/// which hides whether the service itself fails fast.
const MAJORITY_CODES: [&str; 1] = ["lock_unavailable"];
/// Storm: a lock left behind by a hung-up request would stand for the ttl; anything under half
/// of it means the next waiter got the lock without waiting for expiry.
const GAP_LIMIT: Duration = Duration::from_millis(2500);

/// Every drill, in the order `all` runs them; the quorum ones need `up --quorum`.
pub const ALL: [&str; 7] = [
    "holder-pause",
    "redis-kill",
    "postgres-kill",
    "app-kill",
    "hangup-storm",
    "node-hang",
    "majority-hang",
];
pub const QUORUM_ONLY: [&str; 2] = ["node-hang", "majority-hang"];

/// What a drill leaves for the verdict and the report.
#[derive(Debug)]
pub struct Drill {
    pub name: &'static str,
    /// The product the drill deducted from.
    pub product: i64,
    /// What happened when, in one paragraph.
    pub timeline: String,
    pub history: History,
    pub window: Window,
    pub recovery: Option<Duration>,
    pub checks: Vec<Check>,
    /// What the nemesis did, as it happened.
    pub notes: Vec<String>,
}

pub async fn run(cx: &Cx, name: &str) -> Result<Drill, String> {
    match name {
        "holder-pause" => holder_pause(cx).await,
        "redis-kill" => redis_kill(cx).await,
        "postgres-kill" => kill_and_restart(cx, "postgres-kill", vec![Component::Postgres]).await,
        "app-kill" => app_kill(cx).await,
        "hangup-storm" => hangup_storm(cx).await,
        "node-hang" => node_hang(cx).await,
        "majority-hang" => majority_hang(cx).await,
        other => Err(format!("unknown drill {other:?}: {}", ALL.join(", "))),
    }
}

/// A run in progress: the product it deducts from and its clients.
#[derive(Debug)]
struct Run {
    product: i64,
    driver: Driver,
    notes: Vec<String>,
    /// When an instance was SIGKILLed (see [`checks::error_shape`]).
    killed_at: Option<Duration>,
}

impl Run {
    /// Resets to one product and starts the clients.
    async fn start(cx: &Cx, streams: &[Stream]) -> Result<Run, String> {
        let product = cx.env.reset(INITIAL).await?;
        Ok(Run {
            product,
            killed_at: None,
            driver: Driver::start(&cx.client, product, streams),
            notes: Vec::new(),
        })
    }

    fn note(&mut self, text: String) {
        println!("  {:>5.1} s  {text}", self.driver.now().as_secs_f64());
        self.notes.push(text);
    }

    /// Lifts every fault still in force (always, whatever `injected` says), keeps the load
    /// [`AFTER`] more, stops it and runs the checks every drill shares.
    async fn finish(
        mut self,
        cx: &Cx,
        name: &'static str,
        timeline: String,
        start: Duration,
        injected: Result<(), String>,
        expect_no_failures: bool,
    ) -> Result<Drill, String> {
        let faults = cx.faults.clone();
        let pending = faults.any_pending();
        // The fault's end is the moment before it is lifted: lifting runs on a blocking thread
        // and takes milliseconds, and a service that recovers within them would otherwise have
        // its first writes after the lift counted as written during the fault.
        let end = self.driver.now();
        let lifted = blocking(move || faults.lift_all()).await;
        if pending {
            self.note(match &lifted {
                Ok(()) => "fault lifted".into(),
                Err(err) => format!("lifting the fault failed: {err}"),
            });
        }
        if injected.is_ok() && lifted.is_ok() {
            self.driver.sleep_until(end + AFTER).await;
        }
        let history = self.driver.finish().await;
        injected?;
        lifted?;
        let window = Window { start, end };
        let (env, product, recorded) = (cx.env.clone(), self.product, history.clone());
        let mut checks =
            blocking(move || checks::invariants(&env, name, product, INITIAL, &recorded)).await?;
        checks.push(checks::error_shape(name, &history, self.killed_at));
        let recovery = checks::recovery(&history, window);
        checks.push(checks::recovery_check(name, recovery));
        checks.push(checks::failed_share(name, &history, expect_no_failures));
        Ok(Drill {
            name,
            product,
            timeline,
            history,
            window,
            recovery,
            checks,
            notes: self.notes,
        })
    }
}

fn lb(cx: &Cx) -> Stream {
    Stream {
        label: "lb".into(),
        base: cx.env.lb_url.trim_end_matches('/').to_string(),
        clients: LB_CLIENTS,
        pace: Duration::ZERO,
    }
}

/// The instance that wrote the product's newest ledger row: under load the lock stays on one
/// instance for a streak of local handoffs, so this is likely the holder right now.
async fn newest_writer(cx: &Cx, product: i64) -> Result<Option<Component>, String> {
    let env = cx.env.clone();
    let rows = blocking(move || {
        env.sql(&format!(
            "SELECT instance FROM stock_ledger WHERE product_id = {product} ORDER BY id DESC LIMIT 1"
        ))
    })
    .await?;
    Ok(rows
        .first()
        .and_then(|row| row.first()?.parse::<Component>().ok())
        .filter(|writer| cx.apps.iter().any(|(app, _)| app == writer)))
}

async fn ledger_count(cx: &Cx, product: i64) -> Result<i64, String> {
    let env = cx.env.clone();
    blocking(move || {
        env.sql_i64(&format!(
            "SELECT count(*) FROM stock_ledger WHERE product_id = {product}"
        ))
    })
    .await
}

async fn pause(cx: &Cx, name: Component) -> Result<u32, String> {
    let faults = cx.faults.clone();
    blocking(move || faults.pause(name)).await
}

async fn resume(cx: &Cx, name: Component) -> Result<(), String> {
    let faults = cx.faults.clone();
    blocking(move || faults.resume(name)).await
}

async fn kill(cx: &Cx, name: Component) -> Result<(), String> {
    let faults = cx.faults.clone();
    blocking(move || faults.kill(name)).await
}

/// The lock holder paused past 2 × ttl: its lock must expire and pass to another instance long
/// before it resumes, and its late write must be fenced out.
async fn holder_pause(cx: &Cx) -> Result<Drill, String> {
    let name = "holder-pause";
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer and {DIRECT_CLIENTS} straight at each instance deduct back to back. \
         At +{} SIGSTOP the instance holding `product:{{id}}` (the newest ledger writer, confirmed when no other instance writes for {} after the pause; up to {HOLDER_ATTEMPTS} tries), \
         SIGCONT it {} later (> 2 × ttl {}), then {} more load.",
        seconds(WARM), seconds(QUIET), seconds(PAUSE), seconds(TTL), seconds(AFTER)
    );
    let mut streams = vec![lb(cx)];
    streams.extend(cx.apps.iter().map(|(app, base)| Stream {
        label: app.to_string(),
        base: base.clone(),
        clients: DIRECT_CLIENTS,
        pace: Duration::ZERO,
    }));
    let mut run = Run::start(cx, &streams).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let injected = pause_holder(cx, &mut run).await;
    if let Ok(paused) = &injected {
        run.driver.sleep_until(paused.at + PAUSE).await;
    }
    let outcome = injected.as_ref().map(|_| ()).map_err(Clone::clone);
    let mut drill = run
        .finish(cx, name, timeline, start, outcome, false)
        .await?;
    let paused = injected?;
    let resumed = drill.window.end;
    drill.checks.push(Check::new(
        name,
        "drill: the paused instance held the lock",
        paused.confirmed,
        format!(
            "{} paused at +{}: {}",
            paused.name,
            seconds(paused.at),
            if paused.confirmed {
                format!("no other instance wrote for {} after", seconds(QUIET))
            } else {
                format!("others kept writing on all {HOLDER_ATTEMPTS} tries")
            }
        ),
    ));
    let takeover = checks::first_success_after(&drill.history, paused.at + IN_FLIGHT)
        .map(|end| end.saturating_sub(paused.at));
    drill.checks.push(Check::new(
        name,
        "another instance takes the lock before the holder resumes",
        takeover.is_some_and(|t| paused.at + t < resumed),
        match takeover {
            Some(t) => format!(
                "first success {} after the SIGSTOP (ttl {}); the holder resumed after {}",
                seconds(t),
                seconds(TTL),
                seconds(resumed.saturating_sub(paused.at))
            ),
            None => "no success after the SIGSTOP".into(),
        },
    ));
    // In flight at the SIGCONT after waiting over a second: mostly the requests that sat on the
    // paused instance, the holder's own among them (fenced out: 409 lock_lost).
    let across = drill.history.answers_text(|r| {
        r.start < resumed && r.end >= resumed && r.latency() > Duration::from_secs(1)
    });
    drill.checks.push(Check::note(
        name,
        "requests stuck over the pause, answered after SIGCONT",
        across,
    ));
    Ok(drill)
}

#[derive(Debug)]
struct Paused {
    name: Component,
    at: Duration,
    confirmed: bool,
}

/// SIGSTOPs the newest writer; it holds the lock if nobody else writes for [`QUIET`]. If
/// others do, resumes it and tries again; the last try stays paused either way.
async fn pause_holder(cx: &Cx, run: &mut Run) -> Result<Paused, String> {
    for attempt in 1..=HOLDER_ATTEMPTS {
        let holder = newest_writer(cx, run.product)
            .await?
            .unwrap_or(cx.apps[0].0);
        let pid = pause(cx, holder).await?;
        let at = run.driver.now();
        run.note(format!("SIGSTOP {holder} (pid {pid}), try {attempt}"));
        tokio::time::sleep(IN_FLIGHT).await;
        let before = ledger_count(cx, run.product).await?;
        tokio::time::sleep(QUIET).await;
        let written = ledger_count(cx, run.product).await? - before;
        if written == 0 {
            run.note(format!(
                "no write for {}: {holder} holds the lock",
                seconds(QUIET)
            ));
            return Ok(Paused {
                name: holder,
                at,
                confirmed: true,
            });
        }
        if attempt == HOLDER_ATTEMPTS {
            run.note(format!(
                "{written} rows written by others: {holder} is not the holder; keeping it paused anyway"
            ));
            return Ok(Paused {
                name: holder,
                at,
                confirmed: false,
            });
        }
        resume(cx, holder).await?;
        run.note(format!(
            "{written} rows written by others: {holder} is not the holder; SIGCONT, try again"
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("no attempt to pause the holder".into())
}

/// Redis killed and restarted: the single node, or a majority of the quorum (one node of five
/// is a non-event, see `cargo xtask load quorum`). Restarted nodes come back empty.
async fn redis_kill(cx: &Cx) -> Result<Drill, String> {
    let nodes: Vec<Component> = if cx.env.quorum {
        cx.redis
            .iter()
            .take(cx.redis.len() / 2 + 1)
            .copied()
            .collect()
    } else {
        cx.redis.iter().take(1).copied().collect()
    };
    kill_and_restart(cx, "redis-kill", nodes).await
}

/// SIGKILL `victims` at +8 s, restart them 10 s later (`cargo xtask restart`, which returns once
/// each is up), then 10 s of load.
async fn kill_and_restart(
    cx: &Cx,
    name: &'static str,
    victims: Vec<Component>,
) -> Result<Drill, String> {
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGKILL {} (`cargo xtask kill`), \
         after {} restart (`cargo xtask restart`; the fault counts as lifted when that returns), then {} more load.",
        seconds(WARM), names(&victims), seconds(FAULT), seconds(AFTER)
    );
    let mut run = Run::start(cx, &[lb(cx)]).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let injected = kill_all(cx, &mut run, &victims).await;
    if injected.is_ok() {
        run.driver.sleep_until(start + FAULT).await;
    }
    run.finish(cx, name, timeline, start, injected, false).await
}

async fn kill_all(cx: &Cx, run: &mut Run, victims: &[Component]) -> Result<(), String> {
    for &victim in victims {
        kill(cx, victim).await?;
        run.note(format!("SIGKILL {victim}"));
    }
    Ok(())
}

/// An instance SIGKILLed and restarted: the newest ledger writer, so most likely with the lock
/// in hand; its lock must expire within the ttl.
async fn app_kill(cx: &Cx) -> Result<Drill, String> {
    let name = "app-kill";
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGKILL the newest ledger writer (likely the lock holder), \
         after {} restart it (`cargo xtask restart` waits until it is healthy; the fault counts as lifted then), then {} more load.",
        seconds(WARM), seconds(FAULT), seconds(AFTER)
    );
    let mut run = Run::start(cx, &[lb(cx)]).await?;
    run.driver.sleep_until(WARM).await;
    let victim = newest_writer(cx, run.product)
        .await?
        .unwrap_or(cx.apps[0].0);
    let start = run.driver.now();
    run.killed_at = Some(start);
    let injected = kill_all(cx, &mut run, std::slice::from_ref(&victim)).await;
    if injected.is_ok() {
        run.driver.sleep_until(start + FAULT).await;
    }
    let mut drill = run
        .finish(cx, name, timeline, start, injected, false)
        .await?;
    let next = checks::first_success_after(&drill.history, start);
    drill.checks.push(Check::note(
        name,
        "next success after the kill",
        match next {
            Some(end) => format!(
                "{} after killing {victim} (a lock it held expires within the ttl, {})",
                seconds(end.saturating_sub(start)),
                seconds(TTL)
            ),
            None => format!("none after killing {victim}"),
        },
    ));
    Ok(drill)
}

/// Many clients send a deduction and hang up 30–100 ms later, through the load balancer and
/// straight at each instance, while the normal load and a paced probe go on.
async fn hangup_storm(cx: &Cx) -> Result<Drill, String> {
    let name = "hangup-storm";
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back, and a probe through it every {} ms. \
         From +{} for {}, {STORM_CLIENTS} storm clients per target (the load balancer and each instance) send a deduction and hang up after {}–{} ms \
         (half close, half reset); then {} more load.",
        PROBE_PACE.as_millis(), seconds(WARM), seconds(FAULT), storm::HANG_UP_MS.0, storm::HANG_UP_MS.1, seconds(AFTER)
    );
    let probe = Stream {
        label: "probe".into(),
        clients: 1,
        pace: PROBE_PACE,
        ..lb(cx)
    };
    let mut targets = vec![("lb".to_string(), super::socket_addr(&cx.env.lb_url)?)];
    for (app, base) in &cx.apps {
        targets.push((app.to_string(), super::socket_addr(base)?));
    }
    let mut run = Run::start(cx, &[lb(cx), probe]).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let storm = Storm::start(&targets, STORM_CLIENTS, run.product, cx.seed);
    run.note(format!(
        "storm: {} hang-up clients",
        STORM_CLIENTS * targets.len()
    ));
    run.driver.sleep_until(start + FAULT).await;
    let tallies = storm.stop().await;
    run.note("storm over".into());
    let mut drill = run.finish(cx, name, timeline, start, Ok(()), true).await?;
    let end = drill.window.end;
    let (env, product, epoch_us) = (cx.env.clone(), drill.product, drill.history.epoch_us);
    let gap =
        blocking(move || checks::longest_ledger_gap(&env, product, epoch_us, start, end)).await?;
    drill.checks.push(Check::new(
        name,
        "the lock moves on at once after hang-ups",
        gap < GAP_LIMIT,
        format!(
            "longest time without a write during the storm: {:.0} ms (a lock left to expire stands for {})",
            gap.as_secs_f64() * 1000.0,
            seconds(TTL)
        ),
    ));
    if let Some(probe) = drill.history.stream("probe") {
        let during: Vec<_> = drill
            .history
            .records
            .iter()
            .filter(|r| r.stream == probe && r.start >= start && r.start < end)
            .collect();
        let after: Vec<_> = drill
            .history
            .records
            .iter()
            .filter(|r| r.stream == probe && r.start >= end)
            .collect();
        drill.checks.push(Check::note(
            name,
            "probe: time to get the lock and answer",
            format!(
                "during the storm {}; after it {}",
                checks::latency_text(&during),
                checks::latency_text(&after)
            ),
        ));
    }
    drill.checks.push(Check::note(
        name,
        "storm connections",
        tallies
            .iter()
            .map(|(target, t)| {
                format!(
                    "{target}: {} hung up, {} answered first, {} failed",
                    t.hung_up, t.answered, t.failed
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    ));
    Ok(drill)
}

/// Quorum: one node of five SIGSTOPped for 10 s. The runtime suspects it after one node
/// timeout and skips it: no request may fail.
async fn node_hang(cx: &Cx) -> Result<Drill, String> {
    let name = "node-hang";
    let node = cx.redis[0];
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGSTOP {node} (one of {}), SIGCONT {} later, then {} more load. \
         Expected: no failed request.",
        seconds(WARM), cx.redis.len(), seconds(FAULT), seconds(AFTER)
    );
    hang(cx, name, timeline, std::slice::from_ref(&node), true).await
}

/// Quorum: a majority SIGSTOPped for 10 s: requests are refused promptly with 503
/// `lock_unavailable` (not left to wait out the wait budget, not 423), nothing is written, and
/// the service recovers after SIGCONT.
async fn majority_hang(cx: &Cx) -> Result<Drill, String> {
    let name = "majority-hang";
    let nodes: Vec<Component> = cx
        .redis
        .iter()
        .take(cx.redis.len() / 2 + 1)
        .copied()
        .collect();
    let timeline = format!(
        "{LB_CLIENTS} clients through the load balancer deduct back to back. At +{} SIGSTOP {} (a majority of {}), SIGCONT {} later, then {} more load. \
         Expected from {} into the fault on: every request refused within {} with 503 `lock_unavailable`, no 423, nothing written.",
        seconds(WARM), names(&nodes), cx.redis.len(), seconds(FAULT), seconds(AFTER), seconds(GRACE), seconds(PROMPT)
    );
    let mut drill = hang(cx, name, timeline, &nodes, false).await?;
    let (from, to) = (drill.window.start + GRACE, drill.window.end);
    let in_fault: Vec<_> = drill
        .history
        .records
        .iter()
        .filter(|r| r.start >= from && r.start < to && !r.ok())
        .collect();
    let prompt_refusals = in_fault
        .iter()
        .filter(|r| {
            matches!(&r.answer, Answer::Refused { status: 503, code: Some(code), .. } if MAJORITY_CODES.contains(&code.as_str()))
                && r.latency() <= PROMPT
        })
        .count();
    let busy = in_fault
        .iter()
        .filter(|r| matches!(&r.answer, Answer::Refused { status: 423, .. }))
        .count();
    drill.checks.push(Check::new(
        name,
        "majority hung: refused promptly with 503 lock_unavailable",
        !in_fault.is_empty() && prompt_refusals == in_fault.len(),
        format!(
            "{} of {} failures started from +{} were a 503 lock_unavailable within {} ({busy} × 423); answers: {}; {}",
            prompt_refusals,
            in_fault.len(),
            seconds(from),
            seconds(PROMPT),
            drill
                .history
                .answers_text(|r| r.start >= from && r.start < to),
            checks::latency_text(&in_fault)
        ),
    ));
    let (env, product, epoch_us) = (cx.env.clone(), drill.product, drill.history.epoch_us);
    let written =
        blocking(move || checks::ledger_rows_between(&env, product, epoch_us, from, to)).await?;
    drill.checks.push(Check::new(
        name,
        "majority hung: nothing written",
        written == 0,
        format!(
            "{written} ledger rows between +{} and the SIGCONT",
            seconds(from)
        ),
    ));
    Ok(drill)
}

/// SIGSTOP `nodes` at +8 s, SIGCONT them 10 s later.
async fn hang(
    cx: &Cx,
    name: &'static str,
    timeline: String,
    nodes: &[Component],
    expect_no_failures: bool,
) -> Result<Drill, String> {
    let mut run = Run::start(cx, &[lb(cx)]).await?;
    run.driver.sleep_until(WARM).await;
    let start = run.driver.now();
    let mut injected = Ok(());
    for &node in nodes {
        match pause(cx, node).await {
            Ok(pid) => run.note(format!("SIGSTOP {node} (pid {pid})")),
            Err(err) => {
                injected = Err(err);
                break;
            }
        }
    }
    if injected.is_ok() {
        run.driver.sleep_until(start + FAULT).await;
    }
    run.finish(cx, name, timeline, start, injected, expect_no_failures)
        .await
}

/// `redis1, redis2, redis3`: components as the timelines name them.
fn names(components: &[Component]) -> String {
    components
        .iter()
        .map(Component::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
