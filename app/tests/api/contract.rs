//! The published contract, checked by a fuzzer no one here wrote: schemathesis (PyPI) reads
//! `GET /openapi.json` and sends what it generates — valid and invalid — to a running instance,
//! with every check it has, a fixed seed and a bounded number of examples.
//!
//! No check is excluded. One is tuned, here and in the README, with its reason: "valid data is
//! accepted" (`positive_data_acceptance`) also accepts 422, the answer to well-formed input the
//! schema cannot rule out — a transfer to oneself (`same_user`: JSON Schema cannot compare two
//! fields) and an `Idempotency-Key` reused with another request (`idempotency_key_reused`: a
//! key belongs to the first request sent with it, which no schema can know). The instance
//! runs with `ALLOW_RESET` off, as in production: a reset between creating a product and
//! reading it would make the fuzzer's "created resource is found" check fail by design.

/// schemathesis' settings (its `--config-file`).
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]
"#;

use crate::helpers::{spawn_cluster_with, Options};
use fencelock_testkit::programs::{schemathesis, SCHEMATHESIS};
use std::process::Command;

/// Reproducible: the same seed generates the same requests.
const SEED: &str = "20261207";
/// Examples per operation and phase: enough to reach every documented status, bounded in time.
const MAX_EXAMPLES: &str = "30";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_nothing_against_the_published_contract() {
    let cluster = spawn_cluster_with(Options {
        instances: 1,
        allow_reset: false,
        ..Options::default()
    })
    .await;
    let base = format!("http://127.0.0.1:{}", cluster.ports[0]);
    let report = tempfile::tempdir().unwrap();
    let config = report.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let args = [
        "--config-file".to_string(),
        config.display().to_string(),
        "run".to_string(),
        format!("{base}/openapi.json"),
        "--url".into(),
        base.clone(),
        "--checks".into(),
        "all".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--seed".into(),
        SEED.into(),
        "--request-timeout".into(),
        "30".into(),
        "--report-dir".into(),
        report.path().display().to_string(),
    ];
    let st = schemathesis().unwrap_or_else(|| {
        panic!(
            "schemathesis' `st` not found: install it from PyPI \
             (`python3 -m pip install {SCHEMATHESIS}`; `cargo xtask test` does)"
        )
    });
    // Its caches (`.schemathesis/`, `.hypothesis/`) go to the temporary directory, not the
    // checkout.
    let workdir = report.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st).args(&args).current_dir(workdir).output()
    })
    .await
    .unwrap()
    .expect("run st");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}"
    );
}
