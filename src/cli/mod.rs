//! The command line: `serve`, `migrate`, `token`, `audit`, `projections`, `report` and
//! `dead-letters`. Each subcommand lives in its own module; `main` only parses and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod audit;
pub mod dead_letters;
pub mod meter;
pub mod projections;
pub mod report;
pub mod token;

/// approval-ledger: one approval inbox in front of many legacy systems.
#[derive(Debug, Parser)]
#[command(name = "approval-ledger", version, about, long_about = None)]
pub struct Cli {
    /// A TOML configuration file (default: ./approval-ledger.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A part of the service that `serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The HTTP API and the command path.
    Api,
    /// Projections, the relay, the legacy-sync and push handlers, the scheduler.
    Worker,
    /// Both.
    All,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: applies migrations (creating the database if missing), then serves
    /// until SIGINT or SIGTERM, draining in-flight work before it exits.
    Serve {
        /// The parts to run, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
        role: Vec<Role>,
    },
    /// Apply pending migrations (creating the database if missing) and exit.
    Migrate,
    /// Print a signed bearer token for USER (development and tests).
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// A role to grant: `auditor` or `admin`; repeat for several.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// A group the person is in (the token's `groups` claim); repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// How long the token is valid: `90s`, `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Audit the ledger: replay a request as it was, verify the tamper evidence, export the
    /// history and the audit checkpoints.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Operate the read models.
    Projections {
        /// What to do.
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Print the approvals report: outcomes, decision times and missed deadlines of the
    /// requests submitted in a window, by system, kind, step or approver (the figures of
    /// GET /v1/analytics/approvals).
    Report {
        /// Only rounds submitted at or after this moment (RFC 3339); default: 30 days before
        /// --to.
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// Only rounds submitted before this moment (RFC 3339); default: now.
        #[arg(long, value_name = "RFC3339")]
        to: Option<String>,
        /// What the groups are.
        #[arg(long, value_enum, default_value = "system")]
        group_by: report::GroupBy,
        /// How to print it.
        #[arg(long, value_enum, default_value = "table")]
        format: report::Format,
    },
    /// Show and re-drive deliveries (callbacks, pushes) that exhausted their retries or were
    /// refused.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(DeadLetters),
}

/// `dead-letters` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// List every dead letter, and the undecodable messages in RabbitMQ's dead-letter queues.
    List,
    /// Put a dead letter (or all) back in line, with fresh attempts.
    Retry {
        /// The dead letter's id, as `list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

impl Command {
    /// The roles `serve` was asked to run.
    pub fn roles(roles: &[Role]) -> crate::startup::Roles {
        let all = roles.is_empty() || roles.contains(&Role::All);
        crate::startup::Roles {
            api: all || roles.contains(&Role::Api),
            worker: all || roles.contains(&Role::Worker),
        }
    }
}
