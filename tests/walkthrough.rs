//! The README's walkthrough, run as written (with `BASE` and `LEDGER` pointing at this test's
//! service and binary) against a fresh service with the development secrets it uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use approval_ledger::startup::Roles;
use common::TestApp;

/// The shell blocks between the walkthrough markers of README.md.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("<!-- walkthrough:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- walkthrough:end -->").next())
        .expect("README.md has a walkthrough section");
    let mut script = String::new();
    let mut inside = false;
    for line in section.lines() {
        if line.starts_with("```sh") {
            inside = true;
        } else if line.starts_with("```") {
            inside = false;
        } else if inside {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    let app = TestApp::spawn_with(
        Roles::ALL,
        &[
            ("APPROVAL_LEDGER_AUTH__JWT_SECRET", "dev-only-secret"),
            ("APPROVAL_LEDGER_SYSTEMS__ERP__SECRET", "erp-shared-secret"),
        ],
    )
    .await;
    let script = walkthrough();
    assert!(script.contains("erp POST /v1/systems/erp/requests"));
    let base = app.address.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(&script)
            .current_dir(std::env::temp_dir())
            .env("BASE", base)
            .env("LEDGER", env!("CARGO_BIN_EXE_approval-ledger"))
            .env("RUST_LOG", "error")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "walkthrough failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(r#""status":"pending","version":1"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""status":"approved","version":10"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""external_ref":"PO-4711","status":"approved""#),
        "{stdout}"
    );
    assert!(!stdout.contains(r#""error""#), "{stdout}");
}
