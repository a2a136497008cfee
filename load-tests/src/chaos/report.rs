//! The chaos report: each drill's console summary, its row and section in `chaos.md`, its
//! chart, and the page that holds them.

use super::checks;
use super::cluster::Cluster;
use super::drills::DrillOutcome;
use crate::report::{checks_table, machine};
use crate::svg;
use std::time::Duration;

/// `1 Redis node` or `5 Redis nodes (quorum)`.
pub fn mode(cluster: &Cluster) -> String {
    if cluster.env.quorum {
        format!("{} Redis nodes (quorum)", cluster.redis.len())
    } else {
        "1 Redis node".into()
    }
}

fn recovery_text(drill: &DrillOutcome) -> String {
    drill
        .recovery
        .map_or_else(|| "none".into(), checks::seconds)
}

/// The drill's console summary.
pub fn print_drill(drill: &DrillOutcome, took: Duration) {
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

/// The drill's row in the summary table.
pub fn summary_row(drill: &DrillOutcome, passed: bool) -> String {
    format!(
        "| [{0}](#{0}) | {1} | {2:.2}% | {3} | {4} |\n",
        drill.name,
        drill.history.records.len(),
        drill.history.failed_share() * 100.0,
        recovery_text(drill),
        if passed { "PASS" } else { "FAIL" }
    )
}

/// The drill's section: timeline, figures, the per-second table, the chart and the checks.
pub fn section(drill: &DrillOutcome, passed: bool, took: Duration) -> String {
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
        checks_table(&drill.checks)
    )
}

/// Every second of the run: successes, errors by code, and whether the fault was in force.
fn per_second(drill: &DrillOutcome) -> String {
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

/// Answers per second, the fault window shaded.
pub fn chart(drill: &DrillOutcome) -> String {
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

/// The row and section of a drill that did not run to the end.
pub fn failed_row_and_section(name: &str, err: &str) -> (String, String) {
    let cell = err.replace('|', "/");
    (
        format!("| {name} | — | — | — | FAIL: {cell} |\n"),
        format!("\n## {name}\n\nThe drill did not run to the end: {cell}\n"),
    )
}

/// The row of a drill cut short by Ctrl-C (it has no section).
pub fn interrupted_row(name: &str, err: &str) -> String {
    format!("| {name} | — | — | — | {err} |\n")
}

/// The whole page: the verdict, the cluster, the seed that replays it, the summary table, then
/// the sections.
pub fn page(
    passed: bool,
    cluster: &Cluster,
    suite_time: Duration,
    rows: &str,
    sections: &str,
) -> String {
    let seed = cluster.seed;
    format!(
        "# Chaos report\n\nVerdict: **{}**. Cluster: 3 app instances behind HAProxy, PostgreSQL, {} — all on loopback. \
         Seed {seed} (`cargo xtask chaos --seed {seed}` replays the storm's delays). Suite time {:.0} s.\n\nMachine: {}.\n\n\
         | drill | requests | failed | recovery | verdict |\n|---|---:|---:|---:|---|\n{rows}{sections}",
        if passed { "PASS" } else { "FAIL" },
        mode(cluster),
        suite_time.as_secs_f64(),
        machine(),
    )
}
