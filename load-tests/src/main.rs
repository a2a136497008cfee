//! `load-tests`: oha scenarios against the running cluster (start it with `cargo xtask up`),
//! each ending in a verdict table, plus a report directory with a markdown summary and charts.
//!
//! Run through `cargo xtask load <scenario|all> [--report DIR]`, which passes the cluster's
//! addresses in the environment. `cargo xtask chaos` runs the fault drills (`load-tests chaos`,
//! the [`chaos`] module) the same way.

// The layers, bottom to top; each module imports only modules before it: env, oha, verdict,
// invariants, svg, report, scenarios, chaos (rustfmt keeps the declarations sorted).
mod chaos;
mod env;
mod invariants;
mod oha;
mod report;
mod scenarios;
mod svg;
mod verdict;

use env::Env;
use std::path::PathBuf;
use std::process::ExitCode;

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

/// `load-tests <scenario…|all> [--report DIR]`: runs the scenarios in the order named, prints
/// the verdict table and writes the report; `Ok(true)` when every check passed.
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
        // The quorum scenario only makes sense on the 5-node cluster.
        names.extend(
            scenarios::SCENARIOS
                .iter()
                .filter(|scenario| !scenario.needs_quorum || env.quorum)
                .map(|scenario| scenario.name.to_string()),
        );
    }
    if names.is_empty() {
        return Err(format!("name a scenario: {}, or all", scenarios::names()));
    }
    let dir = report_dir.unwrap_or_else(|| workspace().join(".local/reports/latest"));
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;

    let mut checks = Vec::new();
    let mut sections = String::new();
    let machine = report::machine();
    for name in &names {
        println!("\n=== {name} ===");
        let scenario = scenarios::find(name)
            .ok_or_else(|| format!("unknown scenario {name:?}: {}, all", scenarios::names()))?;
        let outcome = scenario.run(&env, &dir).await?;
        report::print_loads(&outcome.loads);
        for (file, chart) in &outcome.charts {
            std::fs::write(dir.join(file), chart).map_err(|err| err.to_string())?;
        }
        sections.push_str(&report::section(name, &outcome.markdown, &outcome.checks));
        checks.extend(outcome.checks);
    }
    let passed = verdict::print_verdict(&checks);
    let page = report::page(passed, &names, env.quorum, &machine, &sections);
    std::fs::write(dir.join("README.md"), page).map_err(|err| err.to_string())?;
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
