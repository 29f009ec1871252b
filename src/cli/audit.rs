//! `approval-ledger audit replay|verify|export|checkpoints`: the auditor's and operator's view of
//! the ledger, straight from the event store. Data goes to stdout, progress to stderr.
//! `verify` exits 0 when the store is intact, 3 when it is not ([`NotIntact`]), and 1 when the
//! check could not run.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use approval_aggregates::RequestId;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Subcommand, ValueEnum};
use uuid::Uuid;

use crate::audit::replay::{Cut, History};
use crate::audit::verify::{self, Report};
use crate::audit::{anchors, export};
use crate::cli::meter::Meter;
use crate::config::Settings;
use crate::http::dto::RuleDto;
use crate::http::history::HistoryAnswer;
use crate::store::db;

/// The exit code of `audit verify` when the store is not intact.
pub const NOT_INTACT_EXIT_CODE: u8 = 3;

/// How many findings `audit verify` prints.
const SHOWN_FINDINGS: usize = 50;

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// A request's state and timeline as they were at a moment or version, rebuilt from the event
    /// store alone with the aggregate's own code (old event versions upcast).
    Replay {
        /// The request's id.
        request_id: Uuid,
        /// The moment, RFC 3339: events recorded up to and including it count (default: now).
        #[arg(long, conflicts_with = "version")]
        at: Option<DateTime<Utc>>,
        /// The version instead: the request just after its event with this sequence.
        #[arg(long)]
        version: Option<u64>,
        /// Print the JSON of GET /v1/requests/{id}/history instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the tamper evidence of the stored events: exit 0 when intact; 3 when not, naming
    /// the first event (request and sequence) that fails and why; 1 when the check cannot run.
    Verify {
        /// Check only this request's hash chain and last event.
        request_id: Option<Uuid>,
        /// Also check the store against a file of exported checkpoints (the output of `audit
        /// checkpoints`, kept and countersigned outside the database); repeatable.
        #[arg(
            long = "checkpoints",
            value_name = "FILE",
            conflicts_with = "request_id"
        )]
        checkpoints: Vec<PathBuf>,
    },
    /// Write every stored event to stdout, one line each, in feed order, exactly as stored
    /// with its hash.
    Export {
        /// Only events recorded at or after this moment (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// `jsonl` (one JSON object per line) or `csv` (with a header line).
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Write the audit checkpoints and the audit reader's latest state to stdout as JSON lines,
    /// to be countersigned and kept outside the database (see docs/operations.md).
    Checkpoints,
}

/// The formats of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

/// The store is not intact: `audit verify` found something. `main` exits with
/// [`NOT_INTACT_EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("NOT INTACT: {first}")]
pub struct NotIntact {
    /// The first finding.
    pub first: String,
}

/// Runs an `audit` subcommand.
pub async fn run(settings: &Settings, command: AuditCommand) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database)
        .await
        .context("cannot connect to the database")?;
    let result = match command {
        AuditCommand::Replay {
            request_id,
            at,
            version,
            json,
        } => replay(&pool, request_id, at, version, json).await,
        AuditCommand::Verify {
            request_id: Some(id),
            ..
        } => {
            let report = verify::verify_request(&pool, id)
                .await?
                .ok_or_else(|| anyhow!("no request {id} in the event store or the audit ledger"))?;
            conclude(&report, Some(id))
        }
        AuditCommand::Verify {
            request_id: None,
            checkpoints,
        } => {
            let mut external = vec![];
            for file in &checkpoints {
                external.extend(anchors::from_file(file)?);
            }
            let mut meter = Meter::new("verified");
            let report = verify::verify_all(&pool, external, &mut |n| meter.tick(n)).await?;
            eprintln!(
                "verified {} events in {:.1} s ({:.0} events/s)",
                report.events,
                meter.elapsed().as_secs_f64(),
                meter.rate(report.events)
            );
            conclude(&report, None)
        }
        AuditCommand::Export { since, format } => {
            let format = match format {
                ExportFormat::Jsonl => export::Format::Jsonl,
                ExportFormat::Csv => export::Format::Csv,
            };
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut meter = Meter::new("exported");
            let written =
                export::export(&pool, since, format, &mut out, &mut |n| meter.tick(n)).await?;
            eprintln!(
                "exported {written} events in {:.1} s",
                meter.elapsed().as_secs_f64()
            );
            Ok(())
        }
        AuditCommand::Checkpoints => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for line in anchors::export(&pool).await? {
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
            Ok(())
        }
    };
    pool.close().await;
    result
}

async fn replay(
    pool: &sqlx::PgPool,
    id: Uuid,
    at: Option<DateTime<Utc>>,
    version: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let history = History::load(pool, RequestId(id)).await?;
    if history.current().is_none() {
        return Err(anyhow!("no request {id} in the event store"));
    }
    let cut = match (at, version) {
        (Some(at), _) => Cut::At(at),
        (None, Some(version)) => Cut::Version(version),
        (None, None) => Cut::Latest,
    };
    let replay = history
        .as_of(cut)
        .ok_or_else(|| anyhow!("request {id} had not been submitted yet then"))?;
    let answer = HistoryAnswer::of(replay);
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", render(&answer));
    }
    Ok(())
}

/// Prints the verdict on the whole store, or on request `one`; an error when it is not intact.
fn conclude(report: &Report, one: Option<Uuid>) -> anyhow::Result<()> {
    let Some(first) = report.findings.first() else {
        match one {
            Some(id) => println!(
                "intact: request {id}: {} events chained, none missing that the audit ledger saw",
                report.events
            ),
            None => println!(
                "intact: {} events of {} requests; {} audit checkpoints agree",
                report.events, report.requests, report.anchors
            ),
        }
        return Ok(());
    };
    println!(
        "NOT INTACT: {} finding(s) in {} events",
        report.findings.len(),
        report.events
    );
    for finding in report.findings.iter().take(SHOWN_FINDINGS) {
        println!("  {finding}");
    }
    if report.findings.len() > SHOWN_FINDINGS {
        println!("  ... and {} more", report.findings.len() - SHOWN_FINDINGS);
    }
    Err(NotIntact {
        first: first.to_string(),
    }
    .into())
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A step's rule, to be followed by "of <approvers>".
fn rule(r: &RuleDto) -> String {
    match r {
        RuleDto::Any => "any one".into(),
        RuleDto::All => "all".into(),
        RuleDto::AtLeast(n) => format!("at least {n}"),
    }
}

/// The human-readable form of a replayed request.
pub fn render(answer: &HistoryAnswer) -> String {
    let r = &answer.request;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Request {} ({} {}, {})",
        r.id, r.system, r.external_ref, r.kind
    );
    let _ = writeln!(out, "  {}", r.title);
    let _ = write!(out, "  requested by {}", r.requester);
    if let Some(amount) = &r.amount {
        let _ = write!(out, ", {} {}", amount.value, amount.currency);
    }
    if let Some(due) = &r.due_at {
        let _ = write!(out, ", due {}", time(due));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "As of {}: {} at version {}",
        time(&answer.as_of),
        r.status,
        r.version
    );
    if r.round > 1 {
        let _ = writeln!(out, "  round {} (resubmitted)", r.round);
    }
    if !r.awaiting.is_empty() {
        let _ = writeln!(out, "  awaiting {}", r.awaiting.join(", "));
    }
    if let Some(q) = &r.awaiting_answer {
        let _ = writeln!(
            out,
            "  question by {} at {}, awaiting the answer: {:?}",
            q.asked_by,
            time(&q.asked_at),
            q.question
        );
    }
    for earlier in &r.earlier_rounds {
        let _ = writeln!(
            out,
            "Round {} (submitted {})",
            earlier.round,
            time(&earlier.submitted_at)
        );
        render_steps(&mut out, &earlier.steps);
        if let Some(outcome) = &earlier.outcome {
            let _ = write!(out, "  ended at {}", time(&outcome.at));
            if let Some(by) = &outcome.by {
                let _ = write!(out, " by {by}");
            }
            let _ = writeln!(out);
        }
    }
    if let Some(outcome) = &r.outcome {
        let _ = write!(out, "  ended at {}", time(&outcome.at));
        if let Some(by) = &outcome.by {
            let _ = write!(out, " by {by}");
        }
        if let Some(comment) = &outcome.comment {
            let _ = write!(out, ": {comment:?}");
        }
        let _ = writeln!(out);
    }
    if r.earlier_rounds.is_empty() {
        let _ = writeln!(out, "Steps");
    } else {
        let _ = writeln!(out, "Steps of round {}", r.round);
    }
    render_steps(&mut out, &r.steps);
    let _ = writeln!(out, "Timeline");
    for t in &r.timeline {
        let _ = write!(
            out,
            "  #{:<3} {}  {}",
            t.sequence,
            time(&t.recorded_at),
            t.event_type
        );
        if let Some(actor) = &t.actor {
            let _ = write!(out, " by {actor}");
        }
        if let Some(step) = t.step {
            let _ = write!(out, " at step {}", step + 1);
        }
        if let Some(delegate) = &t.delegate {
            let _ = write!(out, " to {delegate}");
        }
        if let Some(comment) = &t.comment {
            let _ = write!(out, ": {comment:?}");
        }
        let _ = writeln!(out);
    }
    out
}

/// The steps of a round with their hand-overs and decisions.
fn render_steps(out: &mut String, steps: &[crate::http::dto::StepOut]) {
    for step in steps {
        let _ = write!(
            out,
            "  {}. {} of {}: {}",
            step.index + 1,
            rule(&step.rule),
            step.approvers.join(", "),
            step.state
        );
        if let Some(done) = &step.completed_at {
            let _ = write!(out, " at {}", time(done));
        }
        let _ = writeln!(out);
        for d in &step.delegations {
            let _ = writeln!(
                out,
                "       {} delegated to {} at {}",
                d.from,
                d.to,
                time(&d.at)
            );
        }
        for d in &step.decisions {
            let _ = write!(out, "       {} by {} at {}", d.decision, d.by, time(&d.at));
            if let Some(seen) = d.seen_version {
                let _ = write!(out, " (on version {seen})");
            }
            if let Some(comment) = &d.comment {
                let _ = write!(out, ": {comment:?}");
            }
            let _ = writeln!(out);
        }
    }
}
