//! The load report: the console lines of each run, the markdown tables, a scenario's section
//! and the page that holds them all (`README.md` in the report directory). The chaos report
//! (`chaos::report`) uses the same tables.

use crate::oha::Load;
use crate::verdict;
use crate::verdict::Check;

/// One console line per oha run.
pub fn print_loads(loads: &[Load]) {
    for load in loads {
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
}

/// The oha runs as a markdown table.
pub fn load_table(loads: &[Load]) -> String {
    let mut table = String::from(
        "| run | requests | req/s | p50 ms | p99 ms | statuses |\n|---|---:|---:|---:|---:|---|\n",
    );
    for load in loads {
        table.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} |\n",
            load.label,
            load.requests,
            load.requests_per_sec,
            load.p50_ms,
            load.p99_ms,
            load.statuses_text()
        ));
    }
    table
}

/// The checks as a markdown table.
pub fn checks_table(checks: &[Check]) -> String {
    let mut table = String::from("\n| run | invariant | verdict | detail |\n|---|---|---|---|\n");
    for check in checks {
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            check.scenario,
            check.name,
            verdict::label(check.outcome),
            check.detail
        ));
    }
    table
}

/// One scenario's part of the page: its own markdown, then its checks.
pub fn section(name: &str, markdown: &str, checks: &[Check]) -> String {
    format!("\n## {name}\n\n{markdown}\n{}", checks_table(checks))
}

/// The whole page: the verdict, what ran where, then the sections.
pub fn page(passed: bool, names: &[String], quorum: bool, machine: &str, sections: &str) -> String {
    format!(
        "# Load report\n\nVerdict: **{}**. Scenarios: {}.\n\nMachine: {machine}. Cluster: 3 app instances (release build) behind HAProxy, PostgreSQL, {} — all on loopback.\n{sections}",
        if passed { "PASS" } else { "FAIL" },
        names.join(", "),
        if quorum { "5 Redis nodes (quorum)" } else { "1 Redis node" },
    )
}

/// "N cores, model, RAM", read from /proc.
pub fn machine() -> String {
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
