//! `cargo xtask <chore>`: the project's chores that are more than one command.
//!
//! - `test [args…]`   install the servers the tests need (Debian packages), then run every test
//!   of the workspace (`cargo test --workspace args…`).
//! - `bench [args…]`  the lock runtime's benchmark (`cargo bench -p dlock`), JSON lines on stdout.

use std::process::{Command, ExitCode};

/// A program the tests need, and the Debian package that provides it.
struct Requirement {
    program: &'static str,
    debian_package: &'static str,
}

const TEST_REQUIREMENTS: &[Requirement] = &[
    Requirement {
        program: "redis-server",
        debian_package: "redis-server",
    },
    Requirement {
        program: "initdb",
        debian_package: "postgresql",
    },
    Requirement {
        program: "pg_isready",
        debian_package: "postgresql",
    },
    Requirement {
        program: "psql",
        debian_package: "postgresql-client",
    },
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let chore = args.next();
    let rest: Vec<String> = args.collect();
    let result = match chore.as_deref() {
        Some("test") => ensure_installed(TEST_REQUIREMENTS).and_then(|()| {
            cargo(&["test", "--workspace"], &rest)
        }),
        Some("bench") => ensure_installed(&TEST_REQUIREMENTS[..1])
            .and_then(|()| cargo(&["bench", "-p", "dlock", "--bench", "lock"], &rest)),
        _ => Err(
            "usage: cargo xtask <chore>\n  test [args…]   install what tests need, run all tests\n  \
             bench [args…]  run the lock benchmark (JSON lines)"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn cargo(args: &[&str], extra: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .args(extra)
        .status()
        .map_err(|err| format!("cannot run {cargo}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Installs the Debian packages behind missing programs when we are root; otherwise says
/// exactly what to install.
fn ensure_installed(requirements: &[Requirement]) -> Result<(), String> {
    let mut missing: Vec<&str> = requirements
        .iter()
        .filter(|req| !program_exists(req.program))
        .map(|req| req.debian_package)
        .collect();
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
    run_root(Command::new("apt-get").args(["update", "-q"]))?;
    run_root(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    match requirements.iter().find(|req| !program_exists(req.program)) {
        None => Ok(()),
        Some(req) => Err(format!(
            "`{}` still missing after installing {}",
            req.program, req.debian_package
        )),
    }
}

fn run_root(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{command:?} failed ({status})"))
}

/// On PATH, or (PostgreSQL server tools) in Debian's versioned `/usr/lib/postgresql/*/bin`.
fn program_exists(program: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    on_path
        || std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|version| version.path().join("bin").join(program).is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
