//! The examples in `examples/` run, against a real Redis: the ones that finish are run to the
//! end (they assert their own outcome), the servers answer a request. `cargo test` builds the
//! examples before running tests; a filtered run (`cargo test --test examples`) does not, so
//! build them first: `cargo build -p fencelock --all-features --examples`.

use fencelock_testkit::{free_port, shared_redis};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let path = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p fencelock --all-features --examples` first",
        path.display()
    );
    path
}

fn run_to_the_end(name: &str) -> String {
    let mut child = Command::new(example(name))
        .env("REDIS_URL", shared_redis().url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example runs");
    // Bounded: an example that hangs is killed after 60 s and fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for the example").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("the example's output");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{name} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn by_hand() {
    let out = run_to_the_end("by_hand");
    assert!(out.contains("a second holder: lock_busy"), "{out}");
    assert!(out.contains("it was still ours: true"), "{out}");
}

#[test]
fn transfer() {
    let out = run_to_the_end("transfer");
    assert!(out.contains("total 2000"), "{out}");
}

#[test]
fn scheduled_job() {
    let out = run_to_the_end("scheduled_job");
    assert!(out.contains("3 ticks, 3 runs"), "{out}");
}

/// A server example's process, killed when the test ends (a failed assertion included).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server example on a free port, waits (at most 30 s) for its "listening" line,
/// POSTs to `path`.
fn serve_and_post(name: &str, path: &str) -> (u16, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let mut server = Running(
        Command::new(example(name))
            .env("REDIS_URL", shared_redis().url())
            .env("BIND", &bind)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts"),
    );
    let stdout = server.0.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example says where it listens within 30 s");
    assert!(line.starts_with("listening"), "{line}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("http://{bind}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the example answers");
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

#[test]
fn actix_server() {
    let (status, body) = serve_and_post("actix", "/product/42/deduct");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("product 42 under fence"), "{body}");
}

#[test]
fn axum_server() {
    let (status, body) = serve_and_post("axum", "/transfer/1/2");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("1 → 2 under fences"), "{body}");
}
