//! Running the built `approval-ledger` binary against a test's database, as an operator would.

use std::process::Command;

use super::TestApp;

/// What a run of the binary gave.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `approval-ledger ARGS` with its database set to `database_url`.
pub fn run_cli(database_url: &str, args: &[&str]) -> CliRun {
    let output = Command::new(env!("CARGO_BIN_EXE_approval-ledger"))
        .args(args)
        .env("APPROVAL_LEDGER_DATABASE__URL", database_url)
        .env("APPROVAL_LEDGER_DATABASE__MAX_CONNECTIONS", "4")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl TestApp {
    /// Runs `approval-ledger ARGS` against this service's database, off the async runtime.
    pub async fn cli(&self, args: &[&str]) -> CliRun {
        let url = self.db.url();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&url, &args)
        })
        .await
        .expect("the CLI task")
    }
}
