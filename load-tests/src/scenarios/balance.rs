//! `balance`: charge 50, then 70 concurrent uses of 1: exactly 50 succeed, 20 are refused,
//! balance 0.

use super::common::exact_statuses;
use super::common::Outcome;
use crate::env::Env;
use crate::invariants;
use crate::oha::{oha, Load, OhaRun};
use crate::report::load_table;
use crate::verdict::Check;
use serde_json::json;
use std::path::Path;

const NAME: &str = "balance";
const FUNDING: i64 = 50;

/// Set-up, run, checks, outcome.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let user = fund_a_fresh_user(env).await?;
    let load = oha(
        env,
        &OhaRun::count(
            NAME,
            format!("{}/balance/{user}/use", env.lb_url),
            r#"{"amount": 1}"#,
            70,
            70,
        ),
        dir,
    )?;
    let checks = verify(env, user, &load)?;
    Ok(Outcome {
        markdown: load_table(std::slice::from_ref(&load)),
        checks,
        loads: vec![load],
        charts: Vec::new(),
    })
}

/// Charges 50 to a user of this run's own (the id comes from the pid); returns the user.
async fn fund_a_fresh_user(env: &Env) -> Result<i64, String> {
    let user = 1_000_000 + i64::from(std::process::id());
    let (status, body) = env
        .post(
            &format!("/balance/{user}/charge"),
            json!({"amount": FUNDING}),
        )
        .await?;
    if status != 200 {
        return Err(format!("charge answered {status} {body}"));
    }
    let start_balance = body["balance"].as_i64().unwrap_or(0);
    // A user used before cannot be reset through the API: ask for a fresh run (a new pid).
    if start_balance != FUNDING {
        return Err(format!(
            "user {user} already had a balance ({start_balance}); run again"
        ));
    }
    Ok(user)
}

/// Exactly 50 uses and 20 refusals, balance 0, and the balance equal to its ledger.
fn verify(env: &Env, user: i64, load: &Load) -> Result<Vec<Check>, String> {
    let final_balance = env.sql_i64(&format!(
        "SELECT balance FROM balances WHERE user_id = {user}"
    ))?;
    let ledger = env.sql_i64(&format!(
        "SELECT {} FROM balance_ledger WHERE user_id = {user}",
        invariants::LEDGER_SUM
    ))?;
    Ok(vec![
        exact_statuses(NAME, load, &[(200, 50), (409, 20)]),
        Check::new(
            NAME,
            "no overspend (balance 0, never below)",
            final_balance == 0,
            format!("balance {final_balance}"),
        ),
        Check::new(
            NAME,
            "no lost update (balance = Σ charges − Σ uses)",
            ledger == final_balance,
            format!("ledger {ledger}, balance {final_balance}"),
        ),
    ])
}
