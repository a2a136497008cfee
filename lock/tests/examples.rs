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
    let output = Command::new(example(name))
        .env("REDIS_URL", shared_redis().url())
        .output()
        .expect("the example runs");
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

/// Starts a server example on a free port, waits for its "listening" line, POSTs to `path`.
fn serve_and_post(name: &str, path: &str) -> (u16, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(example(name))
        .env("REDIS_URL", shared_redis().url())
        .env("BIND", &bind)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening"), "{line}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("http://{bind}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the example answers");
        (response.status().as_u16(), response.text().await.unwrap())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    answer
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
