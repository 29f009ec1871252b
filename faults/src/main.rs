//! `fault-suite`: runs approval-ledger's fault scenarios (see `docs/reliability.md`) against the
//! real service binary, PostgreSQL and RabbitMQ on this machine. It stops and starts those servers:
//! run it on a machine (or at a time) where nothing else needs them. `scripts/fault-suite.sh`
//! builds the release binary and runs this.
//!
//! # Layout
//! - [`world`]: a scenario's database, exchange, service processes and observer queue.
//! - [`fake`]: the legacy callback and FCM endpoints, which can be told to misbehave.
//! - [`load`]: the clients: submissions and decisions, retried as a careful client would.
//! - [`check`]: what was acknowledged against the store, the store against the receivers.
//! - [`scenarios`]: the faults.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

mod check;
mod fake;
mod load;
mod scenarios;
mod world;

/// Fault scenarios against the real service, PostgreSQL and RabbitMQ; one line each, then
/// `faults: <n> scenarios, <n> held, acknowledged=<n> lost=<n> duplicated=<n> redelivered=<n>`.
#[derive(Debug, Parser)]
#[command(name = "fault-suite", about, long_about = None)]
struct Cli {
    /// The service binary to run.
    #[arg(long, default_value = "target/release/approval-ledger")]
    service: PathBuf,
    /// PostgreSQL server, without a database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Only these scenarios (comma-separated names; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only the quick subset (the scenarios that disturb neither PostgreSQL nor RabbitMQ as a
    /// whole), as CI runs it.
    #[arg(long)]
    quick: bool,
    /// Lists the scenarios and exits.
    #[arg(long)]
    list: bool,
    /// Where the service's configuration and logs of each scenario go.
    #[arg(long, default_value = "fault-out")]
    out: PathBuf,
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for s in scenarios::ALL {
            let quick = if s.quick { " (quick)" } else { "" };
            println!("{:<26} {}{quick}", s.name, s.what);
        }
        return std::process::ExitCode::SUCCESS;
    }
    let unknown: Vec<&String> = cli
        .only
        .iter()
        .filter(|n| !scenarios::ALL.iter().any(|s| s.name == n.as_str()))
        .collect();
    if !unknown.is_empty() {
        eprintln!("fault-suite: unknown scenarios {unknown:?}; see --list");
        return std::process::ExitCode::from(2);
    }
    let chosen: Vec<&scenarios::Scenario> = scenarios::ALL
        .iter()
        .filter(|s| {
            (cli.only.is_empty() || cli.only.iter().any(|n| n == s.name)) && (!cli.quick || s.quick)
        })
        .collect();
    let run = world::Run {
        service: cli.service,
        pg_server: cli.pg,
        amqp: cli.amqp,
        out: cli
            .out
            .join(chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string()),
    };
    if !run.service.exists() {
        eprintln!(
            "fault-suite: no service binary at {} (cargo build --release)",
            run.service.display()
        );
        return std::process::ExitCode::from(2);
    }
    let (mut held, mut acknowledged, mut lost, mut duplicated, mut redelivered) = (0, 0, 0, 0, 0);
    for scenario in &chosen {
        let name = scenario.name;
        eprintln!("fault-suite: {name}");
        let started = Instant::now();
        let line = match scenarios::run(&run, scenario).await {
            Ok(f) => {
                acknowledged += f.acknowledged;
                lost += f.lost;
                duplicated += f.duplicated;
                redelivered += f.redelivered;
                if f.held() {
                    held += 1;
                }
                let mut words = f.notes.clone();
                words.extend(f.failures.iter().map(|w| format!("FAILED: {w}")));
                format!(
                    "{name}: {} in {:.0} s; acknowledged={} events={} lost={} duplicated={} redelivered={} reordered={} phantom={}; {}",
                    if f.held() { "held" } else { "NOT HELD" },
                    started.elapsed().as_secs_f64(),
                    f.acknowledged,
                    f.events,
                    f.lost,
                    f.duplicated,
                    f.redelivered,
                    f.reordered,
                    f.phantom,
                    words.join("; ")
                )
            }
            Err(e) => format!("{name}: NOT HELD: the scenario could not run: {e:#}"),
        };
        println!("{line}");
    }
    println!(
        "faults: {} scenarios, {held} held, acknowledged={acknowledged} lost={lost} duplicated={duplicated} redelivered={redelivered}",
        chosen.len()
    );
    if held == chosen.len() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
