//! Checks and the verdict: how one invariant came out ([`Check`], [`Outcome`]) and the table
//! printed at the end of a run.

/// How one invariant came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Broken, and expected to be (the `none` strategy shows the race the lock prevents).
    ExpectedBroken,
    /// Not applicable or informational.
    Info,
    /// A measurement reported next to the verdicts, not a verdict (the chaos drills).
    Note,
}

/// One invariant's verdict for one run, as the table and the report show it.
#[derive(Debug, Clone)]
pub struct Check {
    pub scenario: String,
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl Check {
    pub fn new(scenario: &str, name: &str, ok: bool, detail: String) -> Check {
        Check {
            scenario: scenario.into(),
            name: name.into(),
            outcome: if ok { Outcome::Pass } else { Outcome::Fail },
            detail,
        }
    }

    /// A measurement for the table and the report; it never fails the run.
    pub fn note(scenario: &str, name: &str, detail: String) -> Check {
        Check {
            scenario: scenario.into(),
            name: name.into(),
            outcome: Outcome::Note,
            detail,
        }
    }

    /// For runs that are meant to show breakage: broken is expected, intact is noted.
    pub fn expected_broken(scenario: &str, name: &str, ok: bool, detail: String) -> Check {
        Check {
            scenario: scenario.into(),
            name: name.into(),
            outcome: if ok {
                Outcome::Info
            } else {
                Outcome::ExpectedBroken
            },
            detail,
        }
    }
}

/// Prints the verdict table; true when nothing failed.
pub fn print_verdict(checks: &[Check]) -> bool {
    println!(
        "\n{:<12} {:<46} {:<16} detail",
        "scenario", "invariant", "verdict"
    );
    println!("{}", "-".repeat(110));
    for check in checks {
        println!(
            "{:<12} {:<46} {:<16} {}",
            check.scenario,
            check.name,
            label(check.outcome),
            check.detail
        );
    }
    let failed = checks
        .iter()
        .filter(|check| check.outcome == Outcome::Fail)
        .count();
    println!("{}", "-".repeat(110));
    println!(
        "VERDICT: {}",
        if failed == 0 {
            "PASS".to_string()
        } else {
            format!("FAIL ({failed} invariant(s) broken)")
        }
    );
    failed == 0
}

pub fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::ExpectedBroken => "BROKEN (expected)",
        Outcome::Info => "intact (lucky)",
        Outcome::Note => "info",
    }
}
