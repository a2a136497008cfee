//! `transfer`: three users, transfers of 1 in all six directions at once (one oha process per
//! direction, since oha sends one body). Every transfer holds two of the three users' locks, so
//! every pair of requests contends and opposite directions meet all the time. Each user is
//! charged what it could send in all, so no transfer can be short: every answer must be a 200
//! in time (no deadlock, no lock wait run out), and Σ balances and each balance = Σ its ledger
//! must hold.

use super::common::Outcome;
use super::common::{join_oha, oha_in_background};
use crate::env::Env;
use crate::invariants;
use crate::oha::{Load, OhaRun};
use crate::report::load_table;
use crate::verdict::Check;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const NAME: &str = "transfer";
/// Transfers per direction, and the oha connections of each.
const TRANSFERS_PER_DIRECTION: u32 = 300;
const TRANSFER_CONCURRENCY: u32 = 8;
/// Far above any honest answer (a lock wait is at most 10 s): a request still unanswered after
/// it is stuck, which is how a deadlock between opposite transfers would show.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(25);

/// Set-up, run, checks, outcome.
pub async fn run(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let users = fund_fresh_users(env).await?;
    let total_before = total_balance(env, &users)?;
    let runs = every_direction(env, &users);
    let started = Instant::now();
    let loads = all_at_once(env, &runs, dir)?;
    let elapsed = started.elapsed();
    let ledgers = Ledgers::read(env, &users)?;
    let checks = verify(&users, &loads, runs.len(), elapsed, total_before, &ledgers);
    let requests: u64 = loads.iter().map(|l| l.requests).sum();
    let total_rate: f64 = loads.iter().map(|l| l.requests_per_sec).sum();
    Ok(Outcome {
        markdown: format!(
            "{}\nAll six directions together: {requests} transfers in {:.1} s (≈ {total_rate:.0} req/s).\n",
            load_table(&loads),
            elapsed.as_secs_f64()
        ),
        checks,
        loads,
        charts: Vec::new(),
    })
}

/// Three users of this run's own (the `balance` scenario uses 1 000 000 + pid), each charged
/// what it can send in all.
async fn fund_fresh_users(env: &Env) -> Result<[i64; 3], String> {
    let base = 10_000_000 + 3 * i64::from(std::process::id());
    let users = [base, base + 1, base + 2];
    let funding = 2 * i64::from(TRANSFERS_PER_DIRECTION);
    for user in users {
        let (status, body) = env
            .post(
                &format!("/balance/{user}/charge"),
                json!({"amount": funding}),
            )
            .await?;
        if status != 200 || body["balance"].as_i64() != Some(funding) {
            return Err(format!(
                "charging user {user} answered {status} {body}; run again"
            ));
        }
    }
    Ok(users)
}

/// `1, 2, 3`: the users as an SQL list.
fn sql_list(users: &[i64]) -> String {
    users
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn total_balance(env: &Env, users: &[i64]) -> Result<i64, String> {
    env.sql_i64(&format!(
        "SELECT sum(balance) FROM balances WHERE user_id IN ({})",
        sql_list(users)
    ))
}

/// One oha run per ordered pair of users (`transfer-1to2`, …).
fn every_direction(env: &Env, users: &[i64]) -> Vec<OhaRun> {
    users
        .iter()
        .enumerate()
        .flat_map(|(i, &from)| {
            users
                .iter()
                .enumerate()
                .filter(move |&(j, _)| j != i)
                .map(move |(j, &to)| (i, from, j, to))
        })
        .map(|(i, from, j, to)| {
            OhaRun::count(
                &format!("transfer-{}to{}", i + 1, j + 1),
                format!("{}/balance/transfer", env.lb_url),
                &json!({"from": from, "to": to, "amount": 1}).to_string(),
                TRANSFER_CONCURRENCY,
                TRANSFERS_PER_DIRECTION,
            )
            .timeout(TRANSFER_TIMEOUT)
        })
        .collect()
}

/// All directions at once, each oha on a thread of its own.
fn all_at_once(env: &Env, runs: &[OhaRun], dir: &Path) -> Result<Vec<Load>, String> {
    let threads: Vec<_> = runs
        .iter()
        .map(|run| oha_in_background(env, run, dir))
        .collect();
    threads.into_iter().map(join_oha).collect()
}

/// The users' balances and ledgers after the run, read in one statement (one snapshot).
#[derive(Debug)]
struct Ledgers {
    /// Users found.
    users: usize,
    total: i64,
    /// Users whose balance is not Σ its ledger, or is negative.
    mismatches: Vec<String>,
    transfers_out: i64,
    transfers_in: i64,
    /// Ledger rows whose fence is not above the previous row's of the same user.
    out_of_order: i64,
}

impl Ledgers {
    fn read(env: &Env, users: &[i64]) -> Result<Ledgers, String> {
        // One statement, one snapshot: balances and ledgers read at the same instant.
        let rows = env.sql(&format!(
            "SELECT b.user_id, b.balance, \
                    (SELECT {} FROM balance_ledger l WHERE l.user_id = b.user_id), \
                    (SELECT count(*) FROM balance_ledger l WHERE l.user_id = b.user_id AND l.kind = 'transfer_out'), \
                    (SELECT count(*) FROM balance_ledger l WHERE l.user_id = b.user_id AND l.kind = 'transfer_in'), \
                    (SELECT count(*) FILTER (WHERE fence <= prev) FROM \
                        (SELECT fence, lag(fence) OVER (ORDER BY id) AS prev FROM balance_ledger l \
                         WHERE l.user_id = b.user_id) t) \
             FROM balances b WHERE b.user_id IN ({}) ORDER BY b.user_id",
            invariants::LEDGER_SUM,
            sql_list(users)
        ))?;
        let number = |row: &Vec<String>, i: usize| -> Result<i64, String> {
            row.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad row {row:?}"))
        };
        let mut ledgers = Ledgers {
            users: rows.len(),
            total: 0,
            mismatches: Vec::new(),
            transfers_out: 0,
            transfers_in: 0,
            out_of_order: 0,
        };
        for row in &rows {
            let (user, balance, ledger) = (number(row, 0)?, number(row, 1)?, number(row, 2)?);
            ledgers.total += balance;
            if balance != ledger || balance < 0 {
                ledgers
                    .mismatches
                    .push(format!("user {user}: balance {balance}, ledger {ledger}"));
            }
            ledgers.transfers_out += number(row, 3)?;
            ledgers.transfers_in += number(row, 4)?;
            ledgers.out_of_order += number(row, 5)?;
        }
        Ok(ledgers)
    }
}

/// No deadlock, every transfer a 200, money kept, each ledger matching its balance, one ledger
/// row per side of each transfer, fences rising.
fn verify(
    users: &[i64],
    loads: &[Load],
    directions: usize,
    elapsed: Duration,
    total_before: i64,
    ledgers: &Ledgers,
) -> Vec<Check> {
    let expected = u64::from(TRANSFERS_PER_DIRECTION) * directions as u64;
    let requests: u64 = loads.iter().map(|l| l.requests).sum();
    let answered_ok: u64 = loads.iter().map(|l| l.count(200)).sum();
    let errors: u64 = loads.iter().map(|l| l.errors).sum();
    let lock_busy: u64 = loads.iter().map(|l| l.count(423)).sum();
    let statuses = loads
        .iter()
        .map(|l| format!("{}: {}", l.label, l.statuses_text()))
        .collect::<Vec<_>>()
        .join("; ");
    let all_users = ledgers.users == users.len();
    let (outs, ins) = (ledgers.transfers_out, ledgers.transfers_in);
    vec![
        Check::new(
            NAME,
            "no deadlock: every request answered in time",
            requests == expected && errors == 0 && lock_busy == 0,
            format!(
                "{requests} of {expected} answered, {errors} errors or timeouts (> {} s), \
                 {lock_busy} lock waits run out (423), all in {:.1} s",
                TRANSFER_TIMEOUT.as_secs(),
                elapsed.as_secs_f64()
            ),
        ),
        Check::new(
            NAME,
            "every transfer succeeds (none can be short)",
            answered_ok == expected,
            statuses,
        ),
        Check::new(
            NAME,
            "Σ balances unchanged",
            all_users && ledgers.total == total_before,
            format!("before {total_before}, after {}", ledgers.total),
        ),
        Check::new(
            NAME,
            "each balance = Σ its ledger",
            all_users && ledgers.mismatches.is_empty(),
            if ledgers.mismatches.is_empty() {
                format!("{} users", ledgers.users)
            } else {
                ledgers.mismatches.join("; ")
            },
        ),
        Check::new(
            NAME,
            "one transfer_out and one transfer_in per 200",
            i64::try_from(answered_ok).is_ok_and(|ok| outs == ok && ins == ok),
            format!("{answered_ok}×200, {outs} out, {ins} in"),
        ),
        Check::new(
            NAME,
            "fences strictly increasing per user",
            ledgers.out_of_order == 0,
            format!("{} ledger rows out of order", ledgers.out_of_order),
        ),
    ]
}
