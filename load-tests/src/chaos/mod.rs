//! `cargo xtask chaos [DRILL…] [--report DIR] [--seed N]`: fault drills against the running
//! native cluster. Each drill runs load through the load balancer, injects a fault after a
//! warm-up, lifts it, keeps the load a while longer, and checks the history and the ledger:
//! invariants (stock = initial − Σ ledger, fences rising, every 200 written), availability
//! (failed share, every error JSON with a stable code, time to recover) and the drill's own
//! expectation. The report (`chaos.md`, one chart per drill) goes to `.local/reports/chaos/`.
//!
//! One concern per module, each importing only modules listed before it: `driver` (load and
//! history), `storm` (hang-up clients), `faults` (the nemesis), `checks` (the checkers),
//! `cluster` (the cluster under drill and its readiness), `drills` (the table and the
//! timelines), `report` (`chaos.md` and the charts); this module runs the suite.

mod checks;
mod cluster;
mod drills;
mod driver;
mod faults;
mod report;
mod storm;

use crate::verdict;
use crate::verdict::{Check, Outcome};
use cluster::{blocking, Cluster};
use drills::DrillOutcome;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The whole suite; `Ok(true)` when every check passed.
pub async fn run(args: &[String]) -> Result<bool, String> {
    let usage = || {
        format!(
            "usage: chaos [DRILL…] [--report DIR] [--seed N]; drills: {} (the last two need `up --quorum`)",
            drills::names().collect::<Vec<_>>().join(", ")
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
            "all" => names.extend(drills::names().map(String::from)),
            "-h" | "--help" => return Err(usage()),
            name if drills::find(name).is_some() => names.push(name.to_string()),
            other => return Err(format!("unknown drill {other:?}; {}", usage())),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let cluster = Cluster::from_env(seed)?;
    let explicit = !names.is_empty();
    if !explicit {
        names.extend(drills::names().map(String::from));
    }
    if !cluster.env.quorum && names.iter().any(|n| drills::needs_quorum(n)) {
        if explicit && names.iter().all(|n| drills::needs_quorum(n)) {
            let quorum_only: Vec<&str> = drills::DRILLS
                .iter()
                .filter(|drill| drill.needs_quorum)
                .map(|drill| drill.name)
                .collect();
            return Err(format!(
                "{} need the 5-node cluster: `cargo xtask down && cargo xtask up --quorum`",
                quorum_only.join(" and ")
            ));
        }
        names.retain(|n| !drills::needs_quorum(n));
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|name| seen.insert(name.clone()));
    let dir = report_dir.unwrap_or_else(|| crate::workspace().join(".local/reports/chaos"));
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|err| format!("cannot watch for Ctrl-C: {err}"))?;
    println!(
        "chaos: {} ({}), seed {seed}",
        names.join(", "),
        report::mode(&cluster)
    );

    let suite = Instant::now();
    let mut checks: Vec<Check> = Vec::new();
    let mut sections = String::new();
    let mut rows = String::new();
    for name in &names {
        println!("\n=== chaos: {name} ===");
        let began = Instant::now();
        let ready = tokio::select! {
            ready = cluster::ready(&cluster) => Some(ready),
            _ = interrupt.recv() => None,
        };
        let not_ready = matches!(ready, Some(Err(_)));
        let outcome = match ready {
            None => None,
            Some(Err(err)) => Some(Err(err)),
            Some(Ok(())) => tokio::select! {
                drill = run_drill(&cluster, name) => Some(drill),
                _ = interrupt.recv() => None,
            },
        };
        // Finally: whatever the drill left in force is lifted, after an error or Ctrl-C too.
        let faults = cluster.faults.clone();
        if let Err(err) = blocking(move || faults.lift_all()).await {
            checks.push(Check::new(name, "faults lifted", false, err));
        }
        let took = began.elapsed();
        match outcome {
            Some(Ok(drill)) => {
                let passed = !drill.checks.iter().any(|c| c.outcome == Outcome::Fail);
                report::print_drill(&drill, took);
                let chart = report::chart(&drill);
                std::fs::write(dir.join(format!("chaos-{name}.svg")), chart)
                    .map_err(|err| err.to_string())?;
                rows.push_str(&report::summary_row(&drill, passed));
                sections.push_str(&report::section(&drill, passed, took));
                checks.extend(drill.checks);
            }
            Some(Err(err)) => {
                eprintln!("chaos: {name}: {err}");
                let (row, section) = report::failed_row_and_section(name, &err);
                rows.push_str(&row);
                sections.push_str(&section);
                checks.push(Check::new(name, "drill ran to the end", false, err));
                if not_ready {
                    // The next drills would only wait for the same broken cluster.
                    println!("chaos: the cluster is not whole; the remaining drills are skipped");
                    break;
                }
            }
            None => {
                let err = "interrupted (Ctrl-C)".to_string();
                rows.push_str(&report::interrupted_row(name, &err));
                checks.push(Check::new(name, "drill ran to the end", false, err));
                break;
            }
        }
    }
    let passed = verdict::print_verdict(&checks);
    let page = report::page(passed, &cluster, suite.elapsed(), &rows, &sections);
    let file = dir.join("chaos.md");
    std::fs::write(&file, page).map_err(|err| err.to_string())?;
    println!(
        "suite time {:.0} s; report: {}",
        suite.elapsed().as_secs_f64(),
        file.display()
    );
    Ok(passed)
}

/// The drill called `name` (the command line only lets known names through).
async fn run_drill(cluster: &Cluster, name: &str) -> Result<DrillOutcome, String> {
    match drills::find(name) {
        Some(drill) => drill.run(cluster).await,
        None => Err(format!(
            "unknown drill {name:?}: {}",
            drills::names().collect::<Vec<_>>().join(", ")
        )),
    }
}
