//! `cargo xtask docker-check`: everything about `docker/` that can be checked without a Docker
//! engine (there is none on these machines).

use crate::install::{self, find, Requirement};
use std::path::Path;
use std::process::Command;

const NEEDS: &[Requirement] = &[
    Requirement {
        program: "docker-compose",
        debian_package: "docker-compose",
    },
    Requirement {
        program: "haproxy",
        debian_package: "haproxy",
    },
];

pub fn check(workspace: &Path) -> Result<(), String> {
    install::ensure(NEEDS)?;
    let docker = workspace.join("docker");
    let compose = docker.join("compose.yml");
    for profile in [None, Some("quorum")] {
        let mut command = Command::new("docker-compose");
        command.arg("-f").arg(&compose);
        if let Some(profile) = profile {
            command.args(["--profile", profile]);
        }
        install::run(command.args(["config", "-q"]))?;
        println!(
            "ok  compose.yml parses ({} profile)",
            profile.unwrap_or("default")
        );
    }
    let haproxy = find("haproxy").ok_or("haproxy not found")?;
    install::run(
        Command::new(haproxy)
            .args(["-c", "-q", "-f"])
            .arg(docker.join("haproxy.cfg")),
    )?;
    println!("ok  haproxy.cfg accepted by `haproxy -c`");

    let dockerfile =
        std::fs::read_to_string(docker.join("Dockerfile")).map_err(|err| err.to_string())?;
    for line in dockerfile
        .lines()
        .filter(|line| line.starts_with("COPY ") && !line.contains("--from="))
    {
        let source = line.split_whitespace().nth(1).unwrap_or_default();
        if !workspace.join(source).exists() {
            return Err(format!("Dockerfile copies {source}, which does not exist"));
        }
    }
    println!("ok  every COPY source in the Dockerfile exists");
    // The build stage's last step, run natively: the same command on the same sources.
    install::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace)
            .args(["build", "--release", "--locked", "--package", "dlock-app"]),
    )?;
    println!("ok  `cargo build --release --locked --package dlock-app` (the Dockerfile's build step) succeeds");
    match find("cargo-chef") {
        Some(_) => {
            let recipe = workspace.join("target/recipe.json");
            install::run(
                Command::new("cargo")
                    .current_dir(workspace)
                    .args(["chef", "prepare", "--recipe-path"])
                    .arg(&recipe),
            )?;
            println!("ok  `cargo chef prepare` (the planner stage) succeeds");
        }
        None => println!("--  `cargo chef prepare` not run: cargo-chef is not installed (`cargo install cargo-chef`)"),
    }
    Ok(())
}
