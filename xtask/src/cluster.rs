//! The native cluster: PostgreSQL, Redis (1 node, or 5 with `--quorum`), three release-built
//! app instances and HAProxy in front, all on loopback, all tracked by pid files under
//! `.local/cluster/` so that `down` stops exactly what `up` started.

use crate::install::{self, find};
use fencelock_testkit::component::{alive, signal};
use fencelock_testkit::{haproxy, Component};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The load balancer's port: the one URL clients use.
pub const LB_PORT: u16 = 8080;
/// The app instances' ports (app1, app2, app3).
pub const APP_PORTS: [u16; 3] = [8081, 8082, 8083];
/// PostgreSQL's port (off the default 5432, so a system PostgreSQL does not collide).
pub const PG_PORT: u16 = 55432;
/// Redis: one node in single mode, five in quorum mode.
pub const REDIS_SINGLE_PORT: u16 = 6390;
pub const REDIS_QUORUM_PORTS: [u16; 5] = [6391, 6392, 6393, 6394, 6395];

/// Where the cluster keeps its data, pid files and logs.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// What `up` recorded about the running cluster, read back by `status` and the load tests.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub quorum: bool,
    pub lb_url: String,
    pub database_url: String,
    pub redis_urls: Vec<String>,
}

impl Layout {
    pub fn new(workspace: &Path) -> Layout {
        Layout {
            root: workspace.join(".local/cluster"),
        }
    }

    /// `.local/cluster`: pid files under `run/`, logs under `logs/` (read by the chaos drills).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pid_file(&self, component: Component) -> PathBuf {
        self.root.join("run").join(format!("{component}.pid"))
    }

    fn log_file(&self, component: Component) -> PathBuf {
        self.root.join("logs").join(format!("{component}.log"))
    }

    fn info_file(&self) -> PathBuf {
        self.root.join("cluster.env")
    }

    fn pg_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    fn redis_dir(&self, node: usize) -> PathBuf {
        self.root.join("redis").join(format!("node{node}"))
    }

    /// The pid recorded for `component`, if that process is alive.
    fn running(&self, component: Component) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file(component))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    pub fn info(&self) -> Option<ClusterInfo> {
        let text = std::fs::read_to_string(self.info_file()).ok()?;
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
        };
        Some(ClusterInfo {
            quorum: value("MODE")? == "quorum",
            lb_url: value("LB_URL")?,
            database_url: value("DATABASE_URL")?,
            redis_urls: value("REDIS_URLS")?.split(',').map(String::from).collect(),
        })
    }
}

fn redis_ports(quorum: bool) -> Vec<u16> {
    if quorum {
        REDIS_QUORUM_PORTS.to_vec()
    } else {
        vec![REDIS_SINGLE_PORT]
    }
}

fn database_url() -> String {
    format!("postgres://postgres@127.0.0.1:{PG_PORT}/fencelock")
}

/// Starts whatever is not running yet and waits until the load balancer reports healthy.
pub fn up(workspace: &Path, quorum: bool) -> Result<ClusterInfo, String> {
    install::ensure(install::CLUSTER)?;
    // The load runs need oha; installing it here keeps `up` then `load` free of surprises.
    install::ensure_oha()?;
    let layout = Layout::new(workspace);
    if let Some(info) = layout.info() {
        if info.quorum != quorum && layout.running(Component::App(1)).is_some() {
            return Err(format!(
                "the cluster is up in {} mode; run `cargo xtask down` first",
                if info.quorum { "quorum" } else { "single" }
            ));
        }
    }
    for dir in ["run", "logs", "redis"] {
        std::fs::create_dir_all(layout.root.join(dir)).map_err(|err| err.to_string())?;
    }
    eprintln!("xtask: building the app (release)");
    install::run(install::cargo().current_dir(workspace).args([
        "build",
        "--release",
        "-q",
        "-p",
        "fencelock-app",
    ]))?;

    start_postgres(&layout)?;
    let ports = redis_ports(quorum);
    for (index, port) in ports.iter().enumerate() {
        start_redis(&layout, index + 1, *port)?;
    }
    let info = ClusterInfo {
        quorum,
        lb_url: format!("http://127.0.0.1:{LB_PORT}"),
        database_url: database_url(),
        redis_urls: ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect(),
    };
    std::fs::write(
        layout.info_file(),
        format!(
            "MODE={}\nLB_URL={}\nDATABASE_URL={}\nREDIS_URLS={}\n",
            if quorum { "quorum" } else { "single" },
            info.lb_url,
            info.database_url,
            info.redis_urls.join(",")
        ),
    )
    .map_err(|err| err.to_string())?;
    for (index, _) in APP_PORTS.iter().enumerate() {
        start_app(workspace, &layout, &info, index + 1)?;
    }
    for (index, port) in APP_PORTS.iter().enumerate() {
        let app = Component::App(index + 1);
        wait_healthy(&app.to_string(), *port, Duration::from_secs(60))?;
    }
    start_lb(&layout)?;
    wait_healthy("load balancer", LB_PORT, Duration::from_secs(20))?;
    println!(
        "cluster up ({} Redis node{}):",
        ports.len(),
        if ports.len() == 1 { "" } else { "s" }
    );
    println!(
        "  load balancer  {}   (round robin, /health/live checks)",
        info.lb_url
    );
    for (index, port) in APP_PORTS.iter().enumerate() {
        println!("  app{}           http://127.0.0.1:{port}", index + 1);
    }
    println!("  PostgreSQL     {}", info.database_url);
    println!("  Redis          {}", info.redis_urls.join(" "));
    println!("  logs           {}", layout.root.join("logs").display());
    Ok(info)
}

/// Stops everything `up` started, by pid, newest tier first.
pub fn down(workspace: &Path) -> Result<(), String> {
    let layout = Layout::new(workspace);
    let mut components = vec![Component::Lb];
    components.extend((1..=APP_PORTS.len()).map(Component::App));
    components.extend((1..=REDIS_QUORUM_PORTS.len()).map(Component::Redis));
    components.push(Component::Postgres);
    for component in components {
        if let Some(pid) = layout.running(component) {
            stop(pid, component)?;
            println!("stopped {component} (pid {pid})");
        }
        let _ = std::fs::remove_file(layout.pid_file(component));
    }
    Ok(())
}

/// Prints each component with its pid, or `down`.
pub fn status(workspace: &Path) -> Result<(), String> {
    let layout = Layout::new(workspace);
    let Some(info) = layout.info() else {
        println!("no cluster has been started here (run `cargo xtask up`)");
        return Ok(());
    };
    println!(
        "mode: {}",
        if info.quorum {
            "quorum (5 Redis nodes)"
        } else {
            "single Redis node"
        }
    );
    let mut rows: Vec<(Component, String)> = vec![(Component::Lb, info.lb_url.clone())];
    for (index, port) in APP_PORTS.iter().enumerate() {
        rows.push((
            Component::App(index + 1),
            format!("http://127.0.0.1:{port}"),
        ));
    }
    for (index, url) in info.redis_urls.iter().enumerate() {
        rows.push((Component::Redis(index + 1), url.clone()));
    }
    rows.push((Component::Postgres, info.database_url.clone()));
    for (component, url) in rows {
        let state = match layout.running(component) {
            Some(pid) => format!("up (pid {pid})"),
            None => "down".into(),
        };
        // `Display` ignores width: pad the name, not the component.
        let name = component.to_string();
        println!("  {name:<9} {state:<16} {url}");
    }
    Ok(())
}

/// Fault drill: SIGKILL one component.
pub fn kill(workspace: &Path, component: Component) -> Result<(), String> {
    let layout = Layout::new(workspace);
    let pid = layout
        .running(component)
        .ok_or_else(|| format!("{component} is not running (see `cargo xtask status`)"))?;
    let _ = signal(pid, "KILL");
    wait_dead(pid, Duration::from_secs(10))?;
    let _ = std::fs::remove_file(layout.pid_file(component));
    println!("killed {component} (pid {pid})");
    Ok(())
}

/// Starts one component again (a Redis node comes back empty: persistence is off).
pub fn restart(workspace: &Path, component: Component) -> Result<(), String> {
    let layout = Layout::new(workspace);
    let info = layout
        .info()
        .ok_or("no cluster here; run `cargo xtask up`")?;
    if let Some(pid) = layout.running(component) {
        stop(pid, component)?;
    }
    match component {
        Component::App(index) => {
            let port = *APP_PORTS
                .get(index.wrapping_sub(1))
                .ok_or("apps are app1, app2, app3")?;
            start_app(workspace, &layout, &info, index)?;
            wait_healthy(&component.to_string(), port, Duration::from_secs(60))?;
        }
        Component::Redis(node) => {
            let port = redis_ports(info.quorum)
                .get(node.wrapping_sub(1))
                .copied()
                .ok_or_else(|| format!("no Redis node {node} in this mode"))?;
            start_redis(&layout, node, port)?;
        }
        Component::Postgres => start_postgres(&layout)?,
        Component::Lb => start_lb(&layout)?,
    }
    println!("restarted {component}");
    Ok(())
}

fn start_postgres(layout: &Layout) -> Result<(), String> {
    if layout.running(Component::Postgres).is_some() {
        return Ok(());
    }
    let run_as = install::is_root().then_some("postgres");
    let dir = postgres_home(layout, run_as)?;
    let data = dir.join("data");
    let as_user = |program: &str| -> Result<Command, String> {
        let path =
            find(program).ok_or_else(|| format!("{program} not found (package postgresql)"))?;
        Ok(match run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        })
    };
    if !data.join("PG_VERSION").is_file() {
        eprintln!(
            "xtask: creating the PostgreSQL cluster in {}",
            data.display()
        );
        std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
        if let Some(user) = run_as {
            install::run(Command::new("chown").arg("-R").arg(user).arg(&dir))?;
        }
        install::run(
            as_user("initdb")?
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .stdout(Stdio::null()),
        )?;
    }
    let options = format!(
        "-p {PG_PORT} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
        dir.display()
    );
    install::run(
        as_user("pg_ctl")?
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-o", &options, "start"])
            .stdout(Stdio::null()),
    )?;
    let pid = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().map(str::to_string))
        .ok_or("PostgreSQL started but wrote no postmaster.pid")?;
    std::fs::write(layout.pid_file(Component::Postgres), pid).map_err(|err| err.to_string())?;
    let psql = find("psql").ok_or("psql not found (package postgresql-client)")?;
    // psql as the superuser on the cluster's PostgreSQL.
    let psql = || {
        let mut command = Command::new(&psql);
        command.args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &PG_PORT.to_string(),
            "-U",
            "postgres",
        ]);
        command
    };
    let exists = psql()
        .args([
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'fencelock'",
        ])
        .output()
        .map_err(|err| err.to_string())?;
    if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
        install::run(psql().args(["-c", "CREATE DATABASE fencelock"]))?;
    }
    Ok(())
}

/// `.local/cluster/pg`, as long as the `postgres` user (which runs the server when we are root)
/// can reach it. A checkout under a private home (`/root/...`) is not reachable: then the data
/// lives in `/var/lib/fencelock-cluster/<checkout path>/pg` and `.local/cluster/pg` links to it.
fn postgres_home(layout: &Layout, run_as: Option<&str>) -> Result<PathBuf, String> {
    let dir = layout.pg_dir();
    let Some(user) = run_as else {
        return Ok(dir);
    };
    if let Ok(target) = std::fs::read_link(&dir) {
        return Ok(target);
    }
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(&layout.root)
        .status()
        .is_ok_and(|status| status.success());
    if reachable {
        return Ok(dir);
    }
    let flattened = layout.root.display().to_string().replace('/', "_");
    let outside = PathBuf::from("/var/lib/fencelock-cluster")
        .join(flattened.trim_start_matches('_'))
        .join("pg");
    std::fs::create_dir_all(&outside).map_err(|err| format!("{}: {err}", outside.display()))?;
    if !dir.exists() {
        std::os::unix::fs::symlink(&outside, &dir).map_err(|err| err.to_string())?;
    }
    eprintln!(
        "xtask: the postgres user cannot reach {}; PostgreSQL data lives in {}",
        layout.root.display(),
        outside.display()
    );
    Ok(outside)
}

fn start_redis(layout: &Layout, node: usize, port: u16) -> Result<(), String> {
    let name = Component::Redis(node);
    if layout.running(name).is_some() {
        return Ok(());
    }
    let dir = layout.redis_dir(node);
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let pid_file = dir.join("redis.pid");
    let _ = std::fs::remove_file(&pid_file);
    let redis = find("redis-server").ok_or("redis-server not found (package redis-server)")?;
    install::run(
        Command::new(redis)
            .args(fencelock_testkit::redis_args(port, &dir))
            .args(["--daemonize", "yes", "--maxclients", "10000"])
            .arg("--pidfile")
            .arg(&pid_file)
            .arg("--logfile")
            .arg(layout.log_file(name)),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            break pid;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not start; see {}",
                layout.log_file(name).display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(layout.pid_file(name), pid.to_string()).map_err(|err| err.to_string())
}

fn start_app(
    workspace: &Path,
    layout: &Layout,
    info: &ClusterInfo,
    index: usize,
) -> Result<(), String> {
    let name = Component::App(index);
    if layout.running(name).is_some() {
        return Ok(());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let binary = target.join("release/fencelock-app");
    let log = std::fs::File::create(layout.log_file(name)).map_err(|err| err.to_string())?;
    let child = Command::new(&binary)
        .env("DATABASE_URL", &info.database_url)
        .env("REDIS_URLS", info.redis_urls.join(","))
        .env("BIND", format!("127.0.0.1:{}", APP_PORTS[index - 1]))
        .env("INSTANCE_ID", name.to_string())
        .env("ALLOW_RESET", "true")
        .env("LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,fencelock_app=info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|err| err.to_string())?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal later does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
    std::fs::write(layout.pid_file(name), child.id().to_string()).map_err(|err| err.to_string())
}

fn start_lb(layout: &Layout) -> Result<(), String> {
    if layout.running(Component::Lb).is_some() {
        return Ok(());
    }
    let config = layout.root.join("haproxy.cfg");
    let servers: Vec<(String, String)> = APP_PORTS
        .iter()
        .enumerate()
        .map(|(index, port)| {
            (
                Component::App(index + 1).to_string(),
                format!("127.0.0.1:{port}"),
            )
        })
        .collect();
    let placement = haproxy::Placement {
        bind: format!("127.0.0.1:{LB_PORT}"),
        errors_dir: haproxy::errors_dir().display().to_string(),
        docker_dns: false,
    };
    std::fs::write(&config, haproxy::config(&placement, &servers))
        .map_err(|err| err.to_string())?;
    let haproxy = find("haproxy").ok_or("haproxy not found (package haproxy)")?;
    install::run(
        Command::new(&haproxy)
            .arg("-c")
            .arg("-q")
            .arg("-f")
            .arg(&config),
    )?;
    install::run(
        Command::new(haproxy)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(layout.pid_file(Component::Lb)),
    )
}

fn wait_healthy(name: &str, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if http_get_status(port, "/health") == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} on port {port} not healthy after {within:?}; see .local/cluster/logs/"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The status code of `GET path` on a loopback port (a plain HTTP/1.1 request).
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn stop(pid: u32, component: Component) -> Result<(), String> {
    // A failed signal shows as the process still alive below.
    let _ = signal(pid, "TERM");
    if wait_dead(pid, Duration::from_secs(30)).is_err() {
        eprintln!("xtask: {component} ignored SIGTERM for 30 s; killing it");
        let _ = signal(pid, "KILL");
        wait_dead(pid, Duration::from_secs(10))?;
    }
    Ok(())
}

fn wait_dead(pid: u32, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(format!("pid {pid} still alive after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
