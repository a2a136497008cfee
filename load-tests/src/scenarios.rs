//! The load scenarios: setup through the API, an oha run through the load balancer, then
//! verification against the API and the database.

use crate::svg;
use crate::tools::{oha, Env, Load, OhaRun};
use crate::verify::{self, Check};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What a scenario leaves for the report.
#[derive(Debug, Default)]
pub struct Outcome {
    pub checks: Vec<Check>,
    pub loads: Vec<Load>,
    pub markdown: String,
    /// (file name, SVG) pairs.
    pub charts: Vec<(String, String)>,
}

const STRATEGY_SECONDS: u64 = 8;

fn deduct_url(env: &Env, product: i64, strategy: &str) -> String {
    format!(
        "{}/product/{product}/deduct?strategy={strategy}",
        env.lb_url
    )
}

fn load_table(loads: &[Load]) -> String {
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

fn share_per_instance(env: &Env, product: i64) -> Result<Vec<(String, f64)>, String> {
    Ok(env
        .sql(&format!("SELECT instance, count(*) FROM stock_ledger WHERE product_id = {product} GROUP BY instance ORDER BY instance"))?
        .into_iter()
        .map(|row| (row[0].clone(), row[1].parse().unwrap_or(0.0)))
        .collect())
}

fn exact_statuses(scenario: &str, load: &Load, expected: &[(u16, u64)]) -> Check {
    let mut wanted: BTreeMap<u16, u64> = expected.iter().copied().collect();
    wanted.retain(|_, n| *n > 0);
    let ok = load.statuses == wanted && load.errors == 0;
    let expected_text = expected
        .iter()
        .map(|(s, n)| format!("{n}×{s}"))
        .collect::<Vec<_>>()
        .join(", ");
    Check::new(
        scenario,
        "exact outcome",
        ok,
        format!("got {}; expected {expected_text}", load.statuses_text()),
    )
}

/// The original demo: 1000 in stock, 1050 buyers at 350 concurrency.
pub async fn classic(env: &Env, dir: &Path) -> Result<Outcome, String> {
    run_classic(env, dir, "classic", None).await
}

/// `classic`, optionally with a fault injected shortly after the load starts.
async fn run_classic(
    env: &Env,
    dir: &Path,
    name: &str,
    fault: Option<&str>,
) -> Result<Outcome, String> {
    let product = env.reset(1000).await?;
    let run = OhaRun::count(name, deduct_url(env, product, "lock"), "{}", 350, 1050);
    let load = if let Some(component) = fault {
        let (env2, run2, dir2) = (env.clone(), run.clone(), dir.to_path_buf());
        let background = std::thread::spawn(move || oha(&env2, &run2, &dir2));
        tokio::time::sleep(Duration::from_millis(150)).await;
        env.xtask("kill", component)?;
        background.join().map_err(|_| "oha thread panicked")??
    } else {
        oha(env, &run, dir)?
    };
    let mut checks = vec![exact_statuses(name, &load, &[(200, 1000), (409, 50)])];
    checks.extend(verify::stock_checks(env, name, product, 1000, true)?);
    let holds = verify::holds(env, product)?;
    checks.extend(verify::hold_checks(name, &holds));
    let share = share_per_instance(env, product)?;
    let mut lanes: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for hold in &holds {
        lanes
            .entry(hold.instance.clone())
            .or_default()
            .push((hold.start_us, hold.end_us));
    }
    let lanes: Vec<(String, Vec<(i64, i64)>)> = lanes.into_iter().collect();
    let zoomed: Vec<(String, Vec<(i64, i64)>)> = {
        // 40 ms around the first time the lock moved between instances, where single holds
        // and the gaps between them are visible.
        let switch = holds
            .windows(2)
            .find(|pair| pair[0].instance != pair[1].instance)
            .map_or_else(
                || holds.first().map_or(0, |h| h.start_us),
                |pair| pair[1].start_us,
            );
        let (from, to) = (switch - 20_000, switch + 20_000);
        lanes
            .iter()
            .map(|(name, bars)| {
                (
                    name.clone(),
                    bars.iter()
                        .copied()
                        .filter(|b| b.0 >= from && b.1 <= to)
                        .collect(),
                )
            })
            .collect()
    };
    let charts = vec![
        (
            format!("{name}-per-instance.svg"),
            svg::bars(
                &format!("{name}: successful deductions per instance"),
                "",
                &share,
            ),
        ),
        (
            format!("{name}-timeline.svg"),
            svg::timeline(
                &format!("{name}: lock holds of product:{product} by instance"),
                &lanes,
            ),
        ),
        (
            format!("{name}-timeline-40ms.svg"),
            svg::timeline(
                &format!("{name}: 40 ms around a move between instances"),
                &zoomed,
            ),
        ),
    ];
    let markdown = format!(
        "{}\nSuccessful deductions per instance: {}.\n\n![per instance]({name}-per-instance.svg)\n\n![timeline]({name}-timeline.svg)\n\n![timeline zoomed]({name}-timeline-40ms.svg)\n",
        load_table(std::slice::from_ref(&load)),
        share.iter().map(|(i, n)| format!("{i} {n:.0}")).collect::<Vec<_>>().join(", ")
    );
    Ok(Outcome {
        checks,
        loads: vec![load],
        markdown,
        charts,
    })
}

/// 1000 in stock, 3000 buyers at 64 concurrency: exactly 1000 sales, stock 0, never below.
pub async fn oversell(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let product = env.reset(1000).await?;
    let load = oha(
        env,
        &OhaRun::count("oversell", deduct_url(env, product, "lock"), "{}", 64, 3000),
        dir,
    )?;
    let mut checks = vec![exact_statuses(
        "oversell",
        &load,
        &[(200, 1000), (409, 2000)],
    )];
    checks.extend(verify::stock_checks(env, "oversell", product, 1000, true)?);
    checks.extend(verify::hold_checks(
        "oversell",
        &verify::holds(env, product)?,
    ));
    Ok(Outcome {
        markdown: load_table(std::slice::from_ref(&load)),
        checks,
        loads: vec![load],
        charts: Vec::new(),
    })
}

/// One hot product under each strategy at 64 concurrency, with ample stock.
pub async fn strategies(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let initial = 100_000_000;
    let mut outcome = Outcome::default();
    for strategy in ["none", "lock", "db-row", "atomic"] {
        let product = env.reset(initial).await?;
        let label = format!("strategy-{strategy}");
        let load = oha(
            env,
            &OhaRun::timed(
                &label,
                deduct_url(env, product, strategy),
                64,
                Duration::from_secs(STRATEGY_SECONDS),
            ),
            dir,
        )?;
        let name = format!("strategies/{strategy}");
        outcome.checks.extend(verify::stock_checks(
            env,
            &name,
            product,
            initial,
            strategy != "none",
        )?);
        if strategy == "lock" {
            outcome
                .checks
                .extend(verify::hold_checks(&name, &verify::holds(env, product)?));
        }
        let non_200 = load.requests - load.count(200);
        outcome.checks.push(if strategy == "none" {
            Check::expected_broken(
                &name,
                "all requests succeed",
                non_200 == 0,
                load.statuses_text(),
            )
        } else {
            Check::new(
                &name,
                "all requests succeed",
                non_200 == 0,
                load.statuses_text(),
            )
        });
        outcome.loads.push(load);
    }
    let label = |load: &Load| load.label.trim_start_matches("strategy-").to_string();
    outcome.charts = vec![
        (
            "strategies-throughput.svg".into(),
            svg::bars(
                "Deductions per second on one hot product (64 concurrent clients)",
                "req/s",
                &outcome
                    .loads
                    .iter()
                    .map(|l| (label(l), l.requests_per_sec))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "strategies-latency.svg".into(),
            svg::paired_bars(
                "Latency per strategy",
                "ms",
                ["p50", "p99"],
                &outcome
                    .loads
                    .iter()
                    .map(|l| (label(l), l.p50_ms, l.p99_ms))
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    outcome.markdown = format!(
        "{}\n![throughput](strategies-throughput.svg)\n\n![latency](strategies-latency.svg)\n",
        load_table(&outcome.loads)
    );
    Ok(outcome)
}

/// Charge 50, then 70 concurrent uses of 1: exactly 50 succeed, 20 are refused, balance 0.
pub async fn balance(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let user = 1_000_000 + i64::from(std::process::id());
    let (status, body) = env
        .post(&format!("/balance/{user}/charge"), json!({"amount": 50}))
        .await?;
    if status != 200 {
        return Err(format!("charge answered {status} {body}"));
    }
    let start_balance = body["balance"].as_i64().unwrap_or(0);
    // Top up or drain to exactly 50 in case this user was used before.
    if start_balance != 50 {
        return Err(format!(
            "user {user} already had a balance ({start_balance}); run again"
        ));
    }
    let load = oha(
        env,
        &OhaRun::count(
            "balance",
            format!("{}/balance/{user}/use", env.lb_url),
            r#"{"amount": 1}"#,
            70,
            70,
        ),
        dir,
    )?;
    let final_balance = env.sql_i64(&format!(
        "SELECT balance FROM balances WHERE user_id = {user}"
    ))?;
    let ledger = env.sql_i64(&format!(
        "SELECT {} FROM balance_ledger WHERE user_id = {user}",
        verify::LEDGER_SUM
    ))?;
    let checks = vec![
        exact_statuses("balance", &load, &[(200, 50), (409, 20)]),
        Check::new(
            "balance",
            "no overspend (balance 0, never below)",
            final_balance == 0,
            format!("balance {final_balance}"),
        ),
        Check::new(
            "balance",
            "no lost update (balance = Σ charges − Σ uses)",
            ledger == final_balance,
            format!("ledger {ledger}, balance {final_balance}"),
        ),
    ];
    Ok(Outcome {
        markdown: load_table(std::slice::from_ref(&load)),
        checks,
        loads: vec![load],
        charts: Vec::new(),
    })
}

/// Transfers per direction in the `transfer` scenario, and the oha connections of each.
const TRANSFERS_PER_DIRECTION: u32 = 300;
const TRANSFER_CONCURRENCY: u32 = 8;
/// Far above any honest answer (a lock wait is at most 10 s): a request still unanswered after
/// it is stuck, which is how a deadlock between opposite transfers would show.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(25);

/// Three users, transfers of 1 in all six directions at once (one oha process per direction,
/// since oha sends one body): every transfer holds two of the three users' locks, so every
/// pair of requests contends and opposite directions meet all the time. Each user is charged
/// what it could send in all, so no transfer can be short: every answer must be a 200 in
/// time (no deadlock, no lock wait run out), and Σ balances and each balance = Σ its ledger
/// must hold.
pub async fn transfer(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let name = "transfer";
    // Fresh users per run (the `balance` scenario uses 1 000 000 + pid).
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
    let list = users.map(|u| u.to_string()).join(", ");
    let total_before = env.sql_i64(&format!(
        "SELECT sum(balance) FROM balances WHERE user_id IN ({list})"
    ))?;
    let runs: Vec<OhaRun> = users
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
        .collect();
    // All directions at once, each oha on a thread of its own (it blocks until done).
    let started = std::time::Instant::now();
    let threads: Vec<_> = runs
        .iter()
        .map(|run| {
            let (env, run, dir) = (env.clone(), run.clone(), dir.to_path_buf());
            std::thread::spawn(move || oha(&env, &run, &dir))
        })
        .collect();
    let mut loads = Vec::new();
    for thread in threads {
        loads.push(thread.join().map_err(|_| "oha thread panicked")??);
    }
    let elapsed = started.elapsed();

    let expected = u64::from(TRANSFERS_PER_DIRECTION) * runs.len() as u64;
    let requests: u64 = loads.iter().map(|l| l.requests).sum();
    let answered_ok: u64 = loads.iter().map(|l| l.count(200)).sum();
    let errors: u64 = loads.iter().map(|l| l.errors).sum();
    let lock_busy: u64 = loads.iter().map(|l| l.count(423)).sum();
    let statuses = loads
        .iter()
        .map(|l| format!("{}: {}", l.label, l.statuses_text()))
        .collect::<Vec<_>>()
        .join("; ");
    // One statement, one snapshot: balances and ledgers read at the same instant.
    let rows = env.sql(&format!(
        "SELECT b.user_id, b.balance, \
                (SELECT {} FROM balance_ledger l WHERE l.user_id = b.user_id), \
                (SELECT count(*) FROM balance_ledger l WHERE l.user_id = b.user_id AND l.kind = 'transfer_out'), \
                (SELECT count(*) FROM balance_ledger l WHERE l.user_id = b.user_id AND l.kind = 'transfer_in'), \
                (SELECT count(*) FILTER (WHERE fence <= prev) FROM \
                    (SELECT fence, lag(fence) OVER (ORDER BY id) AS prev FROM balance_ledger l \
                     WHERE l.user_id = b.user_id) t) \
         FROM balances b WHERE b.user_id IN ({list}) ORDER BY b.user_id",
        verify::LEDGER_SUM
    ))?;
    let number = |row: &Vec<String>, i: usize| -> Result<i64, String> {
        row.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad row {row:?}"))
    };
    let (mut total_after, mut mismatches, mut outs, mut ins, mut out_of_order) =
        (0, Vec::new(), 0, 0, 0);
    for row in &rows {
        let (user, balance, ledger) = (number(row, 0)?, number(row, 1)?, number(row, 2)?);
        total_after += balance;
        if balance != ledger || balance < 0 {
            mismatches.push(format!("user {user}: balance {balance}, ledger {ledger}"));
        }
        outs += number(row, 3)?;
        ins += number(row, 4)?;
        out_of_order += number(row, 5)?;
    }
    let checks = vec![
        Check::new(
            name,
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
            name,
            "every transfer succeeds (none can be short)",
            answered_ok == expected,
            statuses,
        ),
        Check::new(
            name,
            "Σ balances unchanged",
            rows.len() == users.len() && total_after == total_before,
            format!("before {total_before}, after {total_after}"),
        ),
        Check::new(
            name,
            "each balance = Σ its ledger",
            rows.len() == users.len() && mismatches.is_empty(),
            if mismatches.is_empty() {
                format!("{} users", rows.len())
            } else {
                mismatches.join("; ")
            },
        ),
        Check::new(
            name,
            "one transfer_out and one transfer_in per 200",
            i64::try_from(answered_ok).is_ok_and(|ok| outs == ok && ins == ok),
            format!("{answered_ok}×200, {outs} out, {ins} in"),
        ),
        Check::new(
            name,
            "fences strictly increasing per user",
            out_of_order == 0,
            format!("{out_of_order} ledger rows out of order"),
        ),
    ];
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

/// 100 products, requests spread over them, against one hot product: how the lock scales
/// when contention is spread.
pub async fn spread(env: &Env, dir: &Path) -> Result<Outcome, String> {
    let initial = 100_000_000;
    let hot = env.reset(initial).await?;
    let mut products = vec![hot];
    for i in 1..100 {
        products.push(env.create_product(&format!("spread {i}"), initial).await?);
    }
    let hot_load = oha(
        env,
        &OhaRun::timed(
            "spread-hot",
            deduct_url(env, hot, "lock"),
            64,
            Duration::from_secs(STRATEGY_SECONDS),
        ),
        dir,
    )?;
    let alternatives = products[1..]
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("|");
    let spread_load = oha(
        env,
        &OhaRun::timed(
            "spread-100",
            format!("{}/product/({alternatives})/deduct", env.lb_url),
            64,
            Duration::from_secs(STRATEGY_SECONDS),
        )
        .url_regex(),
        dir,
    )?;
    let mut checks = Vec::new();
    let mut broken = 0;
    let mut out_of_order = 0;
    for product in &products {
        let stock = verify::stock_checks(env, "spread", *product, initial, true)?;
        broken += stock
            .iter()
            .filter(|c| c.outcome == verify::Outcome::Fail)
            .count();
        let holds = verify::hold_checks("spread", &verify::holds(env, *product)?);
        out_of_order += holds
            .iter()
            .filter(|c| c.outcome == verify::Outcome::Fail)
            .count();
    }
    checks.push(Check::new(
        "spread",
        "no lost update on any of 100 products",
        broken == 0,
        format!("{broken} product checks failed"),
    ));
    checks.push(Check::new(
        "spread",
        "fences and holds in order on every product",
        out_of_order == 0,
        format!("{out_of_order} product checks failed"),
    ));
    checks.push(Check::new(
        "spread",
        "all requests succeed",
        hot_load.count(200) == hot_load.requests && spread_load.count(200) == spread_load.requests,
        format!(
            "hot: {}; spread: {}",
            hot_load.statuses_text(),
            spread_load.statuses_text()
        ),
    ));
    let loads = vec![hot_load, spread_load];
    let chart = svg::bars(
        "Lock strategy: one hot product vs 100 products (64 clients)",
        "req/s",
        &[
            ("1 hot product".into(), loads[0].requests_per_sec),
            ("100 products".into(), loads[1].requests_per_sec),
        ],
    );
    Ok(Outcome {
        markdown: format!("{}\n![spread](spread-throughput.svg)\n", load_table(&loads)),
        checks,
        loads,
        charts: vec![("spread-throughput.svg".into(), chart)],
    })
}

/// `classic` against the 5-node quorum with one node killed mid-run (no errors), then a
/// majority killed (503s, nothing written); the nodes are restarted afterwards.
pub async fn quorum(env: &Env, dir: &Path) -> Result<Outcome, String> {
    if !env.quorum {
        return Err("the quorum scenario needs the 5-node cluster: `cargo xtask down && cargo xtask up --quorum`".into());
    }
    let mut outcome = run_classic(env, dir, "quorum-1-down", Some("redis1")).await?;
    for node in ["redis2", "redis3"] {
        env.xtask("kill", node)?;
    }
    let product = env.reset(100).await?;
    let load = oha(
        env,
        &OhaRun::count(
            "quorum-majority-down",
            deduct_url(env, product, "lock"),
            "{}",
            10,
            100,
        ),
        dir,
    );
    let restarted: Result<Vec<()>, String> = ["redis1", "redis2", "redis3"]
        .into_iter()
        .map(|node| env.xtask("restart", node))
        .collect();
    let load = load?;
    restarted?;
    let written = env.sql_i64(&format!(
        "SELECT count(*) FROM stock_ledger WHERE product_id = {product}"
    ))?;
    let stock = env.sql_i64(&format!("SELECT stock FROM products WHERE id = {product}"))?;
    outcome.checks.push(Check::new(
        "quorum-3-down",
        "majority down: every request refused (503)",
        load.count(503) == load.requests,
        load.statuses_text(),
    ));
    outcome.checks.push(Check::new(
        "quorum-3-down",
        "majority down: nothing written",
        written == 0 && stock == 100,
        format!("{written} ledger rows, stock {stock} of 100"),
    ));
    outcome.markdown.push_str(&format!(
        "\nWith 3 of 5 nodes down:\n\n{}",
        load_table(std::slice::from_ref(&load))
    ));
    outcome.loads.push(load);
    Ok(outcome)
}
