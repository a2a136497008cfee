//! `cargo xtask docker-check --engine`: the Docker files run for real on a Docker engine.
//!
//! No image registry answers here, so the base images `docker/` names are built locally as
//! stand-ins, tagged with the same names: Debian bookworm from `debootstrap`, the Rust image
//! from this machine's toolchain, Redis, PostgreSQL and HAProxy from Debian's packages, with
//! entry points that honour what the compose file relies on. Nothing of them goes into
//! `docker/`: its files stay written for the official images. The app image is built from
//! `docker/Dockerfile` unchanged (with the host's network: containers have no route out).
//! Then `compose up` (single node, then the quorum profile), the `classic` and `contract`
//! scenarios through the published port, and everything is torn down.

use crate::install::{self, find, Requirement};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NEEDS: &[Requirement] = &[
    Requirement {
        program: "dockerd",
        debian_package: "docker.io",
    },
    Requirement {
        program: "debootstrap",
        debian_package: "debootstrap",
    },
    Requirement {
        program: "docker-compose",
        debian_package: "docker-compose",
    },
    Requirement {
        program: "psql",
        debian_package: "postgresql-client",
    },
];

/// The compose project name: containers, networks and volumes are `fencelock-check_*`.
const PROJECT: &str = "fencelock-check";
/// What the compose file publishes on 127.0.0.1.
const LB_URL: &str = "http://127.0.0.1:8080";
const DATABASE_URL: &str = "postgres://postgres:fencelock@127.0.0.1:55432/fencelock";
const QUORUM_REDIS_URLS: &str = "redis://redis1:6379/,redis://redis2:6379/,redis://redis3:6379/,redis://redis4:6379/,redis://redis5:6379/";

pub fn check(workspace: &Path) -> Result<(), String> {
    install::ensure(NEEDS)?;
    if !install::is_root() {
        return Err(
            "`docker-check --engine` starts dockerd and debootstrap: run it as root".into(),
        );
    }
    if crate::cluster::http_get_status(8080, "/health/live").is_some() {
        return Err("port 8080 answers: stop the native cluster first (`cargo xtask down`)".into());
    }
    let started = Instant::now();
    let dir = workspace.join(".local/docker");
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let engine = Engine::start(&dir)?;
    let outcome = run_checks(workspace, &dir, &engine);
    engine.stop();
    outcome?;
    println!(
        "docker-check --engine: PASS in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_checks(workspace: &Path, dir: &Path, engine: &Engine) -> Result<(), String> {
    standins(workspace, dir, engine)?;
    let step = Instant::now();
    engine.run(
        Command::new("docker")
            .current_dir(workspace)
            .args(["build", "--network", "host", "-f", "docker/Dockerfile"])
            .args(["-t", "fencelock-app:latest", "."]),
    )?;
    println!(
        "ok  docker/Dockerfile built as fencelock-app:latest ({:.0} s)",
        step.elapsed().as_secs_f64()
    );
    for quorum in [false, true] {
        let stack = Stack {
            workspace,
            engine,
            quorum,
        };
        let outcome = stack.up().and_then(|()| stack.exercise(workspace));
        let down = stack.down();
        outcome?;
        down?;
    }
    Ok(())
}

/// A Docker engine: one that already answers, or a private `dockerd` this run started (and
/// stops, by its pid).
struct Engine {
    host: String,
    started: Option<std::process::Child>,
    /// Its `--exec-root`.
    exec_root: PathBuf,
}

impl Engine {
    fn start(dir: &Path) -> Result<Engine, String> {
        let socket = dir.join("docker.sock");
        let private = Engine {
            host: format!("unix://{}", socket.display()),
            started: None,
            exec_root: dir.join("exec"),
        };
        if private.answers() {
            return Ok(private);
        }
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|err| err.to_string())?;
        let dockerd = find("dockerd").ok_or("dockerd not found (package docker.io)")?;
        let child = Command::new(dockerd)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(&private.exec_root)
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(&private.host)
            // Compose's own bridge network and ports published on 127.0.0.1 only; no NAT to
            // the outside, no default bridge.
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| format!("cannot start dockerd: {err}"))?;
        let engine = Engine {
            started: Some(child),
            ..private
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !engine.answers() {
            if Instant::now() > deadline {
                engine.stop();
                return Err(format!(
                    "dockerd did not answer in 30 s; see {}",
                    dir.join("dockerd.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("ok  private dockerd started ({})", engine.host);
        Ok(engine)
    }

    fn answers(&self) -> bool {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .env("DOCKER_HOST", &self.host)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Runs a `docker`/`docker-compose` command against this engine.
    fn run(&self, command: &mut Command) -> Result<(), String> {
        install::run(command.env("DOCKER_HOST", &self.host))
    }

    fn output(&self, command: &mut Command) -> Result<String, String> {
        let out = command
            .env("DOCKER_HOST", &self.host)
            .output()
            .map_err(|err| format!("cannot run {command:?}: {err}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{command:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn has_image(&self, tag: &str) -> bool {
        self.output(Command::new("docker").args(["image", "inspect", tag]))
            .is_ok()
    }

    /// Stops the dockerd this run started (SIGTERM, then waits; SIGKILL after 20 s).
    fn stop(mut self) {
        let Some(mut child) = self.started.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd leaves its default network namespace mounted under its exec root.
        let _ = Command::new("umount")
            .arg(self.exec_root.join("netns/default"))
            .stderr(Stdio::null())
            .status();
        println!(
            "{}",
            if stopped {
                "ok  private dockerd stopped"
            } else {
                "--  private dockerd killed after 20 s"
            }
        );
    }
}

/// The stand-ins for the images `docker/` pulls, each built once and kept in the engine's data
/// root under `.local/docker/` (delete it to rebuild them).
fn standins(workspace: &Path, dir: &Path, engine: &Engine) -> Result<(), String> {
    let step = Instant::now();
    if !engine.has_image("debian:bookworm-slim") {
        let root = dir.join("bookworm-root");
        let _ = std::fs::remove_dir_all(&root);
        install::run(
            Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(&root)
                .arg(debian_mirror()),
        )?;
        // This machine's own certificate authorities (its egress may inspect TLS): builds that
        // fetch crates must trust what the host trusts. Installed by `update-ca-certificates`
        // wherever an image installs ca-certificates.
        let extra_cas = Path::new("/usr/local/share/ca-certificates");
        if extra_cas.is_dir() {
            install::run(
                Command::new("cp")
                    .arg("-r")
                    .arg(extra_cas)
                    .arg(root.join("usr/local/share/")),
            )?;
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run tar: {err}"))?;
        engine.run(
            Command::new("docker")
                .args(["import", "-", "debian:bookworm-slim"])
                .stdin(tar.stdout.ok_or("no tar output")?),
        )?;
        let _ = std::fs::remove_dir_all(&root);
    }
    let standins = workspace.join("xtask/standins");
    for (tag, folder) in [
        ("redis:7-bookworm", "redis"),
        ("postgres:15-bookworm", "postgres"),
        ("haproxy:2.6-bookworm", "haproxy"),
    ] {
        if !engine.has_image(tag) {
            engine.run(
                Command::new("docker")
                    .args(["build", "--network", "host", "-t", tag])
                    .arg(standins.join(folder)),
            )?;
        }
    }
    if !engine.has_image("rust:1.95-slim-bookworm") {
        let toolchain = rust_toolchain()?;
        // The toolchain is the build context; its documentation stays out of it.
        std::fs::write(toolchain.join(".dockerignore"), "share/doc\nshare/html\n")
            .map_err(|err| format!("{}: {err}", toolchain.display()))?;
        let built = engine.run(
            Command::new("docker")
                .args([
                    "build",
                    "--network",
                    "host",
                    "-t",
                    "rust:1.95-slim-bookworm",
                    "-f",
                ])
                .arg(standins.join("rust/Dockerfile"))
                .arg(&toolchain),
        );
        let _ = std::fs::remove_file(toolchain.join(".dockerignore"));
        built?;
    }
    println!(
        "ok  stand-in base images ready: debian:bookworm-slim, rust:1.95-slim-bookworm, redis:7-bookworm, postgres:15-bookworm, haproxy:2.6-bookworm ({:.0} s)",
        step.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The Debian mirror apt uses here.
fn debian_mirror() -> String {
    [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .flat_map(|text| {
        text.lines()
            .filter_map(|line| {
                line.strip_prefix("URIs:")
                    .map(str::trim)
                    .or_else(|| {
                        line.strip_prefix("deb ").and_then(|rest| {
                            rest.split_whitespace()
                                .find(|word| word.starts_with("http"))
                        })
                    })
                    .map(String::from)
            })
            .collect::<Vec<_>>()
    })
    .next()
    .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The toolchain directory of this machine's `rustc` (its sysroot).
fn rust_toolchain() -> Result<PathBuf, String> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|err| format!("cannot run rustc: {err}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let version = Command::new(sysroot.join("bin/rustc"))
        .arg("--version")
        .output()
        .map_err(|err| err.to_string())?;
    let version = String::from_utf8_lossy(&version.stdout);
    if !version.starts_with("rustc 1.95") {
        return Err(format!(
            "the Dockerfile builds with Rust 1.95; this machine's rustc is {version}"
        ));
    }
    Ok(sysroot)
}

/// The body of `GET path` on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|err| format!("GET {path}: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|err| err.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| format!("GET {path}: {err}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| format!("GET {path}: {err}"))?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response))
}

/// The compose stack in one mode.
struct Stack<'a> {
    workspace: &'a Path,
    engine: &'a Engine,
    quorum: bool,
}

impl Stack<'_> {
    fn compose(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .current_dir(self.workspace)
            .args(["-f", "docker/compose.yml", "-p", PROJECT]);
        if self.quorum {
            command
                .args(["--profile", "quorum"])
                .env("REDIS_URLS", QUORUM_REDIS_URLS);
        }
        command
    }

    fn mode(&self) -> &'static str {
        if self.quorum {
            "quorum profile (5 Redis nodes)"
        } else {
            "single node"
        }
    }

    /// `compose up -d` (the app image is the one just built: no build here), then waits until
    /// the load balancer answers.
    fn up(&self) -> Result<(), String> {
        let step = Instant::now();
        self.engine
            .run(self.compose().args(["up", "-d", "--no-build"]))?;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ready = crate::cluster::http_get_status(8080, "/health/ready") == Some(200);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.engine.run(self.compose().args(["ps"]));
                let _ = self
                    .engine
                    .run(self.compose().args(["logs", "--tail", "30"]));
                return Err(format!("{}: the stack was not ready in 180 s", self.mode()));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        // The instances lock on as many Redis nodes as the mode has.
        let nodes = if self.quorum { 5 } else { 1 };
        let health = http_get(8080, "/health/ready")?;
        if !health.contains(&format!("\"nodes\":{nodes}")) {
            return Err(format!(
                "{}: expected {nodes} Redis node(s) in /health/ready: {health}",
                self.mode()
            ));
        }
        println!(
            "ok  compose up, {}: ready through {LB_URL}, {nodes} Redis node(s) ({:.0} s)",
            self.mode(),
            step.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The `classic` scenario and the HTTP contract through the published port.
    fn exercise(&self, workspace: &Path) -> Result<(), String> {
        let report = workspace.join(format!(
            ".local/reports/docker-{}",
            if self.quorum { "quorum" } else { "single" }
        ));
        install::run_or(
            install::cargo()
                .current_dir(workspace)
                .args([
                    "run",
                    "--release",
                    "-q",
                    "-p",
                    "load-tests",
                    "--",
                    "classic",
                    "contract",
                ])
                .arg("--report")
                .arg(&report)
                .env("LB_URL", LB_URL)
                .env("DATABASE_URL", DATABASE_URL)
                .env(
                    "CLUSTER_MODE",
                    if self.quorum { "quorum" } else { "single" },
                )
                .env("OHA", install::ensure_oha()?),
            &format!("{}: classic + contract: FAIL", self.mode()),
        )?;
        println!("ok  {}: classic and contract PASS", self.mode());
        Ok(())
    }

    fn down(&self) -> Result<(), String> {
        self.engine
            .run(self.compose().args(["down", "-v", "--remove-orphans"]))?;
        println!("ok  compose down, {}", self.mode());
        Ok(())
    }
}
