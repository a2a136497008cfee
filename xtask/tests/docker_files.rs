//! The Docker files, checked by every means available without a Docker engine: the compose
//! file must parse (default and quorum profiles) and HAProxy must accept its configuration.

use std::path::PathBuf;
use std::process::Command;

fn docker_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docker")
}

fn run(program: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} ({err}): install the Debian package `{package}`")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn compose_file_parses_with_and_without_the_quorum_profile() {
    let compose = docker_dir().join("compose.yml");
    let compose = compose.to_str().unwrap();
    let services = run(
        "docker-compose",
        "docker-compose",
        &["-f", compose, "config", "--services"],
    );
    for service in ["postgres", "redis", "app1", "app2", "app3", "lb"] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} missing:\n{services}"
        );
    }
    let quorum = run(
        "docker-compose",
        "docker-compose",
        &["-f", compose, "--profile", "quorum", "config", "--services"],
    );
    assert_eq!(
        quorum
            .lines()
            .filter(|line| line.starts_with("redis"))
            .count(),
        6,
        "{quorum}"
    );
    let config = run(
        "docker-compose",
        "docker-compose",
        &["-f", compose, "config"],
    );
    // The five quorum nodes sit behind their profile (compose 1.29 lists them regardless).
    assert_eq!(config.matches("- quorum").count(), 5, "{config}");
    assert_eq!(
        config.matches("condition: service_healthy").count(),
        9,
        "apps wait for db+redis, lb for apps"
    );
}

#[test]
fn haproxy_accepts_the_load_balancer_config() {
    let config = docker_dir().join("haproxy.cfg");
    run(
        "haproxy",
        "haproxy",
        &["-c", "-q", "-f", config.to_str().unwrap()],
    );
}
