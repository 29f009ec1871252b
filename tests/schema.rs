//! The OpenAPI document says exactly what the service does: schemathesis, a schema-driven
//! fuzzer, runs every one of its checks against the real service, from `/openapi.json`, and
//! finds nothing. People's calls carry a bearer token and the systems' calls are signed, by the
//! hooks in tests/schemathesis/hooks.py.
//!
//! Schemathesis comes from PyPI, pinned in tests/schemathesis/requirements.txt, in a virtual
//! environment at `target/schemathesis-venv`; the test makes it when it is missing or holds
//! another version (`.ci/run` makes it first). The run's settings beyond the command line are in
//! tests/schemathesis/schemathesis.toml. `LEDGER_FUZZ_OUTPUT=FILE` keeps schemathesis' whole
//! report in FILE, passed or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{purchase_order, TestApp, ERP_SECRET};

/// Test cases per operation and phase: enough to find the gaps the fuzzer found before, few
/// enough for a run well under two minutes on two cores.
const MAX_EXAMPLES: &str = "30";
/// A fixed seed, so a failure found once is found again.
const SEED: &str = "14";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv() -> PathBuf {
    repo().join("target/schemathesis-venv")
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} could not start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The schemathesis executable of the pinned version, installed first when missing.
fn schemathesis() -> PathBuf {
    let requirements = repo().join("tests/schemathesis/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let version = pinned
        .lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .expect("a pinned schemathesis")
        .to_owned();
    let bin = venv().join("bin/schemathesis");
    let installed = Command::new(&bin).arg("--version").output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .ends_with(&version)
    });
    if !installed {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv()));
        run(Command::new(venv().join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_every_check() {
    let bin = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let app = TestApp::spawn().await;
    // Requests in alice's inbox, so that answers hold items to check against the schema.
    let id = app.submit_ok(&purchase_order("PO-SCHEMA")).await;
    app.submit_ok(&purchase_order("PO-SYSTEM")).await;
    // An absence of alice's to end, far ahead so that it takes none of her items meanwhile.
    let absence: serde_json::Value = app
        .post_as(
            "alice",
            "/v1/me/absences",
            &serde_json::json!({"deputy": "fuzz-deputy", "from": "2098-01-01T00:00:00Z",
                                "until": "2098-01-02T00:00:00Z"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let hooks = repo().join("tests/schemathesis/hooks.py");
    let config = repo().join("tests/schemathesis/schemathesis.toml");
    let mut command = Command::new(bin);
    command
        .current_dir(repo().join("target"))
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("LEDGER_FUZZ_TOKEN", app.token("alice"))
        .env(
            "LEDGER_FUZZ_ADMIN_TOKEN",
            app.token_with("root", &["admin"]),
        )
        .env("LEDGER_FUZZ_ABSENCE_ID", absence["id"].as_str().unwrap())
        .env("LEDGER_FUZZ_SYSTEM_SECRET", ERP_SECRET)
        .env("LEDGER_FUZZ_REQUEST_ID", id)
        .env("LEDGER_FUZZ_EXTERNAL_REF", "PO-SYSTEM")
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", app.address)])
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        .args(["--workers", "2", "--no-shrink"]);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("schemathesis starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Ok(path) = std::env::var("LEDGER_FUZZ_OUTPUT") {
        let _ = std::fs::write(path, &*stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures ({:?}):\n{stdout}\n{stderr}",
        started.elapsed()
    );
    eprintln!("schemathesis passed in {:?}", started.elapsed());
}
