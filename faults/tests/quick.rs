//! CI's quick subset of the fault suite (`fault-suite --quick`): the scenarios that disturb
//! neither PostgreSQL nor RabbitMQ as a whole: the service killed with deliveries failing, a worker
//! killed between its effects and their acks, a long-open and a rolled-back transaction, poison
//! messages. It runs the debug build of the service, which `cargo test --workspace` builds for the
//! service's own integration tests. The full suite is `scripts/fault-suite.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// The service binary next to this test's directory (`target/debug/approval-ledger`).
fn service_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join(format!("approval-ledger{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn the_quick_fault_scenarios_hold() {
    let service = service_binary();
    assert!(
        service.exists(),
        "{} is missing: run `cargo build -p approval-ledger` (or `cargo test --workspace`)",
        service.display()
    );
    let out_dir = std::env::temp_dir().join(format!("fault-suite-quick-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_fault-suite"))
        .arg("--quick")
        .arg("--service")
        .arg(&service)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(output.status.success(), "a scenario did not hold: {last}");
    assert!(
        last.starts_with("faults: 4 scenarios, 4 held,") && last.contains(" lost=0 duplicated=0 "),
        "{last}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
