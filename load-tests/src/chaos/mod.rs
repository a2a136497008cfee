//! `cargo xtask chaos [DRILL…] [--report DIR] [--seed N]`: fault drills against the running
//! native cluster. Each drill runs load through the load balancer, injects a fault after a
//! warm-up, lifts it, keeps the load a while longer, and checks the history and the ledger:
//! invariants (stock = initial − Σ ledger, fences rising, every 200 written), availability
//! (failed share, every error JSON with a stable code, time to recover) and the drill's own
//! expectation. The report (`chaos.md`, one chart per drill) goes to `.local/reports/chaos/`.
//!
//! One concern per module: `driver` (load and history), `faults` (the nemesis), `storm`
//! (hang-up clients), `checks` (the checkers), `drills` (the timelines).

mod checks;
mod drills;
mod driver;
mod faults;
mod storm;

use crate::svg;
use crate::tools::Env;
use crate::verify::{self, Check, Outcome};
use drills::Drill;
use faults::Faults;
use fencelock_testkit::Component;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the cluster may take to be whole and healthy before a drill.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the drills need to know about the cluster.
#[derive(Debug, Clone)]
pub struct Cx {
    pub env: Env,
    /// Client for the load: per-request timeout, loopback only.
    pub client: reqwest::Client,
    /// Each app instance and its base URL: `(App(1), "http://127.0.0.1:8081")`.
    pub apps: Vec<(Component, String)>,
    /// The Redis nodes, `Redis(1)`…
    pub redis: Vec<Component>,
    pub faults: Faults,
    /// Seeds the storm's delays; printed, and `--seed` replays it.
    pub seed: u64,
}

impl Cx {
    fn from_env(seed: u64) -> Result<Cx, String> {
        let env = Env::from_env()?;
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| format!("{name} is not set; run through `cargo xtask chaos`"))
        };
        socket_addr(&env.lb_url)?;
        let apps: Vec<(Component, String)> = var("APP_URLS")?
            .split(',')
            .filter(|url| !url.is_empty())
            .enumerate()
            .map(|(index, url)| {
                socket_addr(url)?;
                Ok((
                    Component::App(index + 1),
                    url.trim_end_matches('/').to_string(),
                ))
            })
            .collect::<Result<_, String>>()?;
        if apps.is_empty() {
            return Err("APP_URLS lists no instance".into());
        }
        let redis: Vec<Component> = (1..=var("REDIS_URLS")?.split(',').count())
            .map(Component::Redis)
            .collect();
        let xtask = env
            .xtask
            .clone()
            .ok_or("XTASK is not set; run through `cargo xtask chaos`")?;
        Ok(Cx {
            faults: Faults::new(PathBuf::from(var("CLUSTER_DIR")?), xtask),
            client: reqwest::Client::builder()
                .timeout(driver::REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(2))
                .build()
                .map_err(|err| err.to_string())?,
            env,
            apps,
            redis,
            seed,
        })
    }
}

/// Runs blocking work (psql, kill, xtask) off the runtime, so the load keeps going meanwhile.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| format!("blocking task failed: {err}"))?
}

/// `http://127.0.0.1:PORT[/…]` → its socket address; anything but loopback is refused (the
/// drills hammer and hang up on what they are pointed at).
pub fn socket_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: no port"))?;
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_matches(['[', ']'])
            .parse()
            .map_err(|_| format!("{url}: not an IP address"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: the chaos drills only run against loopback addresses"
        ));
    }
    let port = port.parse().map_err(|_| format!("{url}: bad port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Whole (every component's pid alive) and healthy (each instance and the load balancer
/// answer their health check), within [`READY_TIMEOUT`].
async fn ready(cx: &Cx) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut components: Vec<Component> = cx.apps.iter().map(|(app, _)| *app).collect();
    components.extend(cx.redis.iter().copied());
    components.extend([Component::Postgres, Component::Lb]);
    let mut targets: Vec<(Component, String)> = cx.apps.clone();
    targets.push((Component::Lb, cx.env.lb_url.trim_end_matches('/').into()));
    loop {
        let mut missing: Vec<String> = components
            .iter()
            .filter(|name| !cx.faults.running(**name))
            .map(|name| format!("{name} not running"))
            .collect();
        for (name, base) in &targets {
            if !healthy(&cx.client, base).await {
                missing.push(format!("{name} not healthy"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster is not ready after {READY_TIMEOUT:?}: {}",
                missing.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `GET /health/ready` is 200 (or, on a service without it, `GET /health`).
async fn healthy(client: &reqwest::Client, base: &str) -> bool {
    let status = |path: &'static str| {
        let request = client
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(3));
        async move { request.send().await.ok().map(|r| r.status().as_u16()) }
    };
    match status("/health/ready").await {
        Some(404) => status("/health").await == Some(200),
        other => other == Some(200),
    }
}

/// The whole suite; `Ok(true)` when every check passed.
pub async fn run(args: &[String]) -> Result<bool, String> {
    let usage = || {
        format!(
            "usage: chaos [DRILL…] [--report DIR] [--seed N]; drills: {} (the last two need `up --quorum`)",
            drills::ALL.join(", ")
        )
    };
    let mut names: Vec<String> = Vec::new();
    let mut report_dir: Option<PathBuf> = None;
    let mut seed: Option<u64> = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => {
                report_dir = Some(args.next().ok_or_else(usage)?.into());
            }
            "--seed" => {
                seed = Some(args.next().and_then(|s| s.parse().ok()).ok_or_else(usage)?);
            }
            "all" => names.extend(drills::ALL.iter().map(|s| s.to_string())),
            "-h" | "--help" => return Err(usage()),
            name if drills::ALL.contains(&name) => names.push(name.to_string()),
            other => return Err(format!("unknown drill {other:?}; {}", usage())),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let cx = Cx::from_env(seed)?;
    let explicit = !names.is_empty();
    if !explicit {
        names.extend(drills::ALL.iter().map(|s| s.to_string()));
    }
    let quorum_only: Vec<&String> = names
        .iter()
        .filter(|n| drills::QUORUM_ONLY.contains(&n.as_str()))
        .collect();
    if !cx.env.quorum && !quorum_only.is_empty() {
        if explicit
            && names
                .iter()
                .all(|n| drills::QUORUM_ONLY.contains(&n.as_str()))
        {
            return Err("node-hang and majority-hang need the 5-node cluster: `cargo xtask down && cargo xtask up --quorum`".into());
        }
        names.retain(|n| !drills::QUORUM_ONLY.contains(&n.as_str()));
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|name| seen.insert(name.clone()));
    let dir = report_dir.unwrap_or_else(|| crate::workspace().join(".local/reports/chaos"));
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|err| format!("cannot watch for Ctrl-C: {err}"))?;
    println!("chaos: {} ({}), seed {seed}", names.join(", "), mode(&cx));

    let suite = Instant::now();
    let mut checks: Vec<Check> = Vec::new();
    let mut sections = String::new();
    let mut rows = String::new();
    for name in &names {
        println!("\n=== chaos: {name} ===");
        let began = Instant::now();
        let ready = tokio::select! {
            ready = ready(&cx) => Some(ready),
            _ = interrupt.recv() => None,
        };
        let not_ready = matches!(ready, Some(Err(_)));
        let outcome = match ready {
            None => None,
            Some(Err(err)) => Some(Err(err)),
            Some(Ok(())) => tokio::select! {
                drill = drills::run(&cx, name) => Some(drill),
                _ = interrupt.recv() => None,
            },
        };
        // Finally: whatever the drill left in force is lifted, after an error or Ctrl-C too.
        let faults = cx.faults.clone();
        if let Err(err) = blocking(move || faults.lift_all()).await {
            checks.push(Check::new(name, "faults lifted", false, err));
        }
        let took = began.elapsed();
        match outcome {
            Some(Ok(drill)) => {
                let passed = !drill.checks.iter().any(|c| c.outcome == Outcome::Fail);
                print_drill(&drill, took);
                let chart = chart(&drill);
                std::fs::write(dir.join(format!("chaos-{name}.svg")), chart)
                    .map_err(|err| err.to_string())?;
                rows.push_str(&summary_row(&drill, passed));
                sections.push_str(&section(&drill, passed, took));
                checks.extend(drill.checks);
            }
            Some(Err(err)) => {
                eprintln!("chaos: {name}: {err}");
                let cell = err.replace('|', "/");
                rows.push_str(&format!("| {name} | — | — | — | FAIL: {cell} |\n"));
                sections.push_str(&format!(
                    "\n## {name}\n\nThe drill did not run to the end: {cell}\n"
                ));
                checks.push(Check::new(name, "drill ran to the end", false, err));
                if not_ready {
                    // The next drills would only wait for the same broken cluster.
                    println!("chaos: the cluster is not whole; the remaining drills are skipped");
                    break;
                }
            }
            None => {
                let err = "interrupted (Ctrl-C)".to_string();
                rows.push_str(&format!("| {name} | — | — | — | {err} |\n"));
                checks.push(Check::new(name, "drill ran to the end", false, err));
                break;
            }
        }
    }
    let passed = verify::print_verdict(&checks);
    let report = format!(
        "# Chaos report\n\nVerdict: **{}**. Cluster: 3 app instances behind HAProxy, PostgreSQL, {} — all on loopback. \
         Seed {seed} (`cargo xtask chaos --seed {seed}` replays the storm's delays). Suite time {:.0} s.\n\nMachine: {}.\n\n\
         | drill | requests | failed | recovery | verdict |\n|---|---:|---:|---:|---|\n{rows}{sections}",
        if passed { "PASS" } else { "FAIL" },
        mode(&cx),
        suite.elapsed().as_secs_f64(),
        crate::report::machine(),
    );
    let file = dir.join("chaos.md");
    std::fs::write(&file, report).map_err(|err| err.to_string())?;
    println!(
        "suite time {:.0} s; report: {}",
        suite.elapsed().as_secs_f64(),
        file.display()
    );
    Ok(passed)
}

fn mode(cx: &Cx) -> String {
    if cx.env.quorum {
        format!("{} Redis nodes (quorum)", cx.redis.len())
    } else {
        "1 Redis node".into()
    }
}

fn recovery_text(drill: &Drill) -> String {
    drill
        .recovery
        .map_or_else(|| "none".into(), checks::seconds)
}

fn print_drill(drill: &Drill, took: Duration) {
    println!(
        "{}: {} requests, {:.2}% failed, recovered {} after the lift; fault +{:.1}..+{:.1} s; drill took {:.0} s",
        drill.name,
        drill.history.records.len(),
        drill.history.failed_share() * 100.0,
        recovery_text(drill),
        drill.window.start.as_secs_f64(),
        drill.window.end.as_secs_f64(),
        took.as_secs_f64()
    );
    println!("  answers: {}", drill.history.answers_text(|_| true));
}

fn summary_row(drill: &Drill, passed: bool) -> String {
    format!(
        "| [{0}](#{0}) | {1} | {2:.2}% | {3} | {4} |\n",
        drill.name,
        drill.history.records.len(),
        drill.history.failed_share() * 100.0,
        recovery_text(drill),
        if passed { "PASS" } else { "FAIL" }
    )
}

fn section(drill: &Drill, passed: bool, took: Duration) -> String {
    let name = drill.name;
    let streams = drill
        .history
        .streams
        .iter()
        .enumerate()
        .map(|(index, label)| {
            format!(
                "{label}: {}",
                drill.history.answers_text(|r| r.stream == index)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let notes = if drill.notes.is_empty() {
        String::new()
    } else {
        format!("\nWhat the nemesis did: {}.\n", drill.notes.join("; "))
    };
    format!(
        "\n## {name}\n\n{}\n\n| requests | error share | recovery | fault window | verdict |\n|---:|---:|---:|---|---|\n\
         | {} | {:.2}% | {} | +{:.1} s … +{:.1} s | {} |\n\nAnswers by client group: {streams}. Drill time {:.0} s.\n{notes}\n\
         ![{name}](chaos-{name}.svg)\n\n{}\n{}",
        drill.timeline,
        drill.history.records.len(),
        drill.history.failed_share() * 100.0,
        recovery_text(drill),
        drill.window.start.as_secs_f64(),
        drill.window.end.as_secs_f64(),
        if passed { "PASS" } else { "FAIL" },
        took.as_secs_f64(),
        per_second(drill),
        crate::report::checks_table(&drill.checks)
    )
}

/// Every second of the run: successes, errors by code, and whether the fault was in force.
fn per_second(drill: &Drill) -> String {
    let mut table = String::from(
        "<details><summary>Per second</summary>\n\n| second | ok | errors | by code | fault |\n|---:|---:|---:|---|---|\n",
    );
    let (from, to) = (drill.window.start.as_secs(), drill.window.end.as_secs());
    for (second, bucket) in drill.history.buckets().iter().enumerate() {
        let codes = bucket
            .codes
            .iter()
            .map(|(code, n)| format!("{n}×{code}"))
            .collect::<Vec<_>>()
            .join(", ");
        let second = second as u64;
        table.push_str(&format!(
            "| {second} | {} | {} | {codes} | {} |\n",
            bucket.ok,
            bucket.errors,
            if (from..=to).contains(&second) {
                "▓"
            } else {
                ""
            }
        ));
    }
    table.push_str("\n</details>\n");
    table
}

fn chart(drill: &Drill) -> String {
    let buckets = drill.history.buckets();
    let ok: Vec<f64> = buckets.iter().map(|b| b.ok as f64).collect();
    let errors: Vec<f64> = buckets.iter().map(|b| b.errors as f64).collect();
    svg::over_time(
        &format!("{}: answers per second (fault shaded)", drill.name),
        "per second",
        &[("ok", svg::GREEN, &ok), ("errors", svg::RED, &errors)],
        Some((
            drill.window.start.as_secs_f64(),
            drill.window.end.as_secs_f64(),
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(
            socket_addr("http://127.0.0.1:8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            socket_addr("http://localhost:8081/"),
            Ok("127.0.0.1:8081".parse().unwrap())
        );
        assert!(socket_addr("http://10.0.0.1:8080").is_err());
        assert!(socket_addr("https://127.0.0.1:8080").is_err());
        assert!(socket_addr("http://127.0.0.1").is_err());
    }
}
