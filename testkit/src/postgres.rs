//! An ephemeral PostgreSQL cluster: `initdb` into a temp dir, trust auth on 127.0.0.1.

use crate::guardian::{wrap_as, DirGuardian, Guarded};
use crate::programs::running_as_root;
use crate::{find_program, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A real PostgreSQL server owned by a test, with durability off (fsync) for speed.
/// When the test process runs as root, the server runs as the `postgres` user (it refuses root).
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    process: Option<Guarded>,
    dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<&'static str>,
    _dir_guardian: DirGuardian,
}

impl PostgresServer {
    /// Creates a cluster and starts it; takes about a second.
    pub fn start() -> PostgresServer {
        let bin_dir = postgres_bin_dir();
        let run_as = running_as_root().then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("fencelock-pg-")
            .tempdir()
            .expect("create a temp dir for PostgreSQL")
            .keep();
        let dir_guardian = DirGuardian::watch(&dir);
        if let Some(user) = run_as {
            run(
                Command::new("chown").arg("-R").arg(user).arg(&dir),
                "chown the PostgreSQL dir",
            );
        }
        run(
            wrap_as(run_as, &bin_dir.join("initdb").display().to_string())
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
                .stdout(std::process::Stdio::null()),
            "initdb",
        );
        let mut server = PostgresServer {
            port: free_port(),
            process: None,
            dir,
            bin_dir,
            run_as,
            _dir_guardian: dir_guardian,
        };
        server.restart();
        server
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database (names are quoted; pass plain identifiers).
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Runs one SQL command with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin_dir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server abruptly (SIGKILL to the postmaster, children follow).
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal("KILL");
            drop(process);
            let deadline = Instant::now() + Duration::from_secs(15);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "postgres on {} would not die",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            // Orphaned backends exit once they notice the postmaster is gone; wait for the pid file's lock.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let args = [
            "-D".to_string(),
            self.dir.join("data").display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.dir.display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "synchronous_commit=off".into(),
            "-c".into(),
            "full_page_writes=off".into(),
            "-c".into(),
            "max_connections=300".into(),
        ];
        let log = self.dir.join("postgres.log");
        self.process = Some(Guarded::spawn(
            self.run_as,
            &self.bin_dir.join("postgres"),
            &args,
            "INT",
            &log,
        ));
        self.wait_until_ready(&log);
    }

    fn wait_until_ready(&self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("PostgreSQL on port {} not ready in 30 s:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Debian keeps server binaries in a versioned folder off PATH (the newest is found first).
/// A PATH entry may be a lone symlink (initdb but no pg_isready): resolve to the real folder.
fn postgres_bin_dir() -> PathBuf {
    let initdb = find_program("initdb", "postgresql");
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    initdb
        .parent()
        .expect("initdb has a parent dir")
        .to_path_buf()
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(status.success(), "{what} failed with {status}");
}
