//! The load scenarios: set-up through the API, oha through the load balancer, then checks
//! against the API and the database. One file per scenario, each reading set-up → run →
//! verify → outcome; [`common`] holds what several of them use. [`SCENARIOS`] is the one list
//! of them: the command line and `all` are derived from it.

mod balance;
mod classic;
mod common;
mod contract;
mod oversell;
mod quorum;
mod spread;
mod strategies;
mod transfer;

pub use common::Outcome;

use crate::env::Env;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// A scenario running: it borrows the environment and the report directory.
type Running<'a> = Pin<Box<dyn Future<Output = Result<Outcome, String>> + 'a>>;

/// One scenario: its name on the command line and the function that runs it.
#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// Only on the 5-node cluster: `all` leaves it out on a single node.
    pub needs_quorum: bool,
    run: for<'a> fn(&'a Env, &'a Path) -> Running<'a>,
}

impl Scenario {
    /// Runs it; charts and oha's JSON go to `dir`.
    pub async fn run(&self, env: &Env, dir: &Path) -> Result<Outcome, String> {
        (self.run)(env, dir).await
    }
}

/// Every scenario, in the order `all` runs them.
pub static SCENARIOS: [Scenario; 8] = [
    // The original demo: 1000 in stock, 1050 buyers at 350 concurrency.
    Scenario {
        name: "classic",
        needs_quorum: false,
        run: |env, dir| Box::pin(classic::run(env, dir)),
    },
    // 1000 in stock, 3000 buyers: exactly 1000 sales.
    Scenario {
        name: "oversell",
        needs_quorum: false,
        run: |env, dir| Box::pin(oversell::run(env, dir)),
    },
    // One hot product under each strategy.
    Scenario {
        name: "strategies",
        needs_quorum: false,
        run: |env, dir| Box::pin(strategies::run(env, dir)),
    },
    // 50 in the balance, 70 concurrent uses of 1.
    Scenario {
        name: "balance",
        needs_quorum: false,
        run: |env, dir| Box::pin(balance::run(env, dir)),
    },
    // Transfers in all six directions between three users at once.
    Scenario {
        name: "transfer",
        needs_quorum: false,
        run: |env, dir| Box::pin(transfer::run(env, dir)),
    },
    // One hot product against 100 products.
    Scenario {
        name: "spread",
        needs_quorum: false,
        run: |env, dir| Box::pin(spread::run(env, dir)),
    },
    // The HTTP API, request by request.
    Scenario {
        name: "contract",
        needs_quorum: false,
        run: |env, _| Box::pin(contract::run(env)),
    },
    // `classic` with one Redis node of five killed, then a majority killed.
    Scenario {
        name: "quorum",
        needs_quorum: true,
        run: |env, dir| Box::pin(quorum::run(env, dir)),
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|scenario| scenario.name == name)
}

/// `classic, oversell, …, quorum`: every name, for messages.
pub fn names() -> String {
    SCENARIOS
        .iter()
        .map(|scenario| scenario.name)
        .collect::<Vec<_>>()
        .join(", ")
}
