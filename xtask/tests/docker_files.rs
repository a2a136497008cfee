//! The Docker files, checked by every means available without a Docker engine: the compose
//! file must parse (default and quorum profiles) and HAProxy must accept its configuration.

use fencelock_testkit::haproxy;
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

/// Where compose mounts `docker/haproxy-errors` in the load balancer's container.
const DOCKER_ERRORS_DIR: &str = "/usr/local/etc/haproxy/errors";

fn docker_haproxy_config() -> String {
    let placement = haproxy::Placement {
        bind: ":8080".into(),
        errors_dir: DOCKER_ERRORS_DIR.into(),
        docker_dns: true,
    };
    let servers: Vec<(String, String)> = (1..=3)
        .map(|n| (format!("app{n}"), format!("app{n}:8080")))
        .collect();
    haproxy::config(&placement, &servers)
}

/// One source for the load balancer: docker/haproxy.cfg is what testkit's template gives for
/// the compose services. To update it: `FENCELOCK_WRITE_HAPROXY_CFG=1 cargo test -p xtask`.
#[test]
fn docker_haproxy_cfg_is_the_shared_template() {
    let path = docker_dir().join("haproxy.cfg");
    let expected = docker_haproxy_config();
    if std::env::var_os("FENCELOCK_WRITE_HAPROXY_CFG").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap();
    assert!(
        actual == expected,
        "docker/haproxy.cfg differs from testkit::haproxy::config; regenerate it with \
         FENCELOCK_WRITE_HAPROXY_CFG=1 cargo test -p xtask --test docker_files"
    );
}

#[test]
fn haproxy_accepts_the_load_balancer_config_and_its_error_pages() {
    // The error pages as the container sees them, at their place in the checkout.
    let config =
        docker_haproxy_config().replace(DOCKER_ERRORS_DIR, haproxy::errors_dir().to_str().unwrap());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config).unwrap();
    run(
        "haproxy",
        "haproxy",
        &["-c", "-q", "-f", file.path().to_str().unwrap()],
    );
}

/// Every error page is a complete HTTP response whose body is JSON with a stable `error` code
/// and whose Content-Length is right.
#[test]
fn the_load_balancer_error_pages_are_json_with_codes() {
    for status in [400, 403, 408, 500, 502, 503, 504] {
        let page =
            std::fs::read_to_string(haproxy::errors_dir().join(format!("{status}.http"))).unwrap();
        let (head, body) = page.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{status}: wrong Content-Length"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        let code = json["error"].as_str().expect("an error code");
        assert!(code.starts_with("lb_"), "{code}");
        if status >= 500 {
            assert!(head.contains("Retry-After: "), "{status}: no Retry-After");
        }
    }
}
