//! `load-tests`: oha scenarios against the running cluster (start it with `cargo xtask up`),
//! each ending in a verdict table, plus a report directory with a markdown summary and charts.
//!
//! Run through `cargo xtask load <scenario|all> [--report DIR]`, which passes the cluster's
//! addresses in the environment. `cargo xtask chaos` runs the fault drills (`load-tests chaos`,
//! the [`chaos`] module) the same way.

mod chaos;
mod contract;
mod scenarios;
mod svg;
mod tools;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use tools::Env;

const ALL: [&str; 7] = [
    "classic",
    "oversell",
    "strategies",
    "balance",
    "transfer",
    "spread",
    "contract",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.split_first() {
        Some((first, rest)) if first == "chaos" => chaos::run(rest).await,
        _ => run(args).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("load-tests: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Vec<String>) -> Result<bool, String> {
    let mut args = args.into_iter();
    let mut names: Vec<String> = Vec::new();
    let mut report_dir: Option<PathBuf> = None;
    let mut all = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => {
                report_dir = Some(args.next().ok_or("--report needs a directory")?.into())
            }
            "all" => all = true,
            name => names.push(name.to_string()),
        }
    }
    let env = Env::from_env()?;
    if all {
        names.extend(ALL.iter().map(|name| name.to_string()));
        // The quorum drill only makes sense on the 5-node cluster.
        if env.quorum {
            names.push("quorum".into());
        }
    }
    if names.is_empty() {
        return Err(format!(
            "name a scenario: {}, quorum, or all",
            ALL.join(", ")
        ));
    }
    let dir = report_dir.unwrap_or_else(|| workspace().join(".local/reports/latest"));
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;

    let mut checks = Vec::new();
    let mut summary = String::new();
    let machine = machine();
    for name in &names {
        println!("\n=== {name} ===");
        let outcome = match name.as_str() {
            "classic" => scenarios::classic(&env, &dir).await,
            "oversell" => scenarios::oversell(&env, &dir).await,
            "strategies" => scenarios::strategies(&env, &dir).await,
            "balance" => scenarios::balance(&env, &dir).await,
            "transfer" => scenarios::transfer(&env, &dir).await,
            "spread" => scenarios::spread(&env, &dir).await,
            "quorum" => scenarios::quorum(&env, &dir).await,
            "contract" => contract::contract(&env).await,
            other => Err(format!(
                "unknown scenario {other:?}: {}, quorum, all",
                ALL.join(", ")
            )),
        }?;
        for load in &outcome.loads {
            println!(
                "{:<24} {:>6} requests  {:>7.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {}",
                load.label,
                load.requests,
                load.requests_per_sec,
                load.p50_ms,
                load.p99_ms,
                load.statuses_text()
            );
        }
        for (file, chart) in &outcome.charts {
            std::fs::write(dir.join(file), chart).map_err(|err| err.to_string())?;
        }
        summary.push_str(&format!(
            "\n## {name}\n\n{}\n{}",
            outcome.markdown,
            checks_table(&outcome.checks)
        ));
        checks.extend(outcome.checks);
    }
    let passed = verify::print_verdict(&checks);
    let report = format!(
        "# Load report\n\nVerdict: **{}**. Scenarios: {}.\n\nMachine: {machine}. Cluster: 3 app instances (release build) behind HAProxy, PostgreSQL, {} — all on loopback.\n{summary}",
        if passed { "PASS" } else { "FAIL" },
        names.join(", "),
        if env.quorum { "5 Redis nodes (quorum)" } else { "1 Redis node" },
    );
    std::fs::write(dir.join("README.md"), report).map_err(|err| err.to_string())?;
    println!("report: {}", dir.join("README.md").display());
    Ok(passed)
}

/// The workspace root (`load-tests/..`), where `.local/` lives.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn checks_table(checks: &[verify::Check]) -> String {
    let mut table = String::from("\n| run | invariant | verdict | detail |\n|---|---|---|---|\n");
    for check in checks {
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            check.scenario,
            check.name,
            verify::label(check.outcome),
            check.detail
        ));
    }
    table
}

/// "N cores, model, RAM", read from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({model}), {memory_gib:.0} GiB RAM, Linux")
}
