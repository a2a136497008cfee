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

pub fn check(workspace: &Path, full: bool) -> Result<(), String> {
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
    // Checked with the error pages at their place in the checkout (compose mounts them at
    // /usr/local/etc/haproxy/errors in the container).
    let config = std::fs::read_to_string(docker.join("haproxy.cfg"))
        .map_err(|err| err.to_string())?
        .replace(
            "/usr/local/etc/haproxy/errors",
            &fencelock_testkit::haproxy::errors_dir()
                .display()
                .to_string(),
        );
    let checked = workspace.join(".local/haproxy-docker-check.cfg");
    std::fs::create_dir_all(workspace.join(".local")).map_err(|err| err.to_string())?;
    std::fs::write(&checked, config).map_err(|err| err.to_string())?;
    let haproxy = find("haproxy").ok_or("haproxy not found")?;
    install::run(Command::new(haproxy).args(["-c", "-q", "-f"]).arg(&checked))?;
    println!("ok  haproxy.cfg (and its error pages) accepted by `haproxy -c`");

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
    install::run(install::cargo().current_dir(workspace).args([
        "build",
        "--release",
        "--locked",
        "--package",
        "fencelock-app",
    ]))?;
    println!("ok  `cargo build --release --locked --package fencelock-app` (the Dockerfile's build step) succeeds");
    if !full {
        println!(
            "--  the cargo-chef stages were not replayed (`cargo xtask docker-check --full` does)"
        );
        return Ok(());
    }
    let chef =
        find("cargo-chef").ok_or("`--full` needs cargo-chef: cargo install cargo-chef --locked")?;
    replay_build_stages(workspace, &chef)?;
    Ok(())
}

/// The Dockerfile's planner and build stages, natively, in a scratch directory: `cargo chef
/// prepare` on the sources, `cargo chef cook` from the recipe alone (the cached dependency
/// layer), then the sources copied in and the release build.
fn replay_build_stages(workspace: &Path, chef: &Path) -> Result<(), String> {
    let scratch =
        std::env::temp_dir().join(format!("fencelock-docker-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|err| err.to_string())?;
    let recipe = scratch.join("recipe.json");
    install::run(
        Command::new(chef)
            .current_dir(workspace)
            .args(["chef", "prepare", "--recipe-path"])
            .arg(&recipe),
    )?;
    println!("ok  planner stage: `cargo chef prepare`");
    let build = scratch.join("src");
    std::fs::create_dir_all(&build).map_err(|err| err.to_string())?;
    std::fs::copy(&recipe, build.join("recipe.json")).map_err(|err| err.to_string())?;
    install::run(Command::new(chef).current_dir(&build).args([
        "chef",
        "cook",
        "--release",
        "--recipe-path",
        "recipe.json",
        "--package",
        "fencelock-app",
    ]))?;
    println!("ok  build stage: `cargo chef cook --release` (dependency layer)");
    // `COPY . .`: the tracked files, as a Docker build context would see them.
    let files = Command::new("git")
        .current_dir(workspace)
        .args(["ls-files", "-z"])
        .output()
        .map_err(|err| err.to_string())?;
    for file in files
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
    {
        let relative = Path::new(std::str::from_utf8(file).map_err(|err| err.to_string())?);
        let target = build.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|err| err.to_string())?;
        }
        std::fs::copy(workspace.join(relative), &target).map_err(|err| err.to_string())?;
    }
    install::run(install::cargo().current_dir(&build).args([
        "build",
        "--release",
        "--locked",
        "--package",
        "fencelock-app",
    ]))?;
    println!("ok  build stage: `cargo build --release --locked` after `COPY . .`");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
