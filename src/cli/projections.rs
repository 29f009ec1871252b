//! `approval-ledger projections rebuild [NAME]`: rebuilds read models from the event store while
//! the service keeps serving (see `crate::rebuild`). Progress and the outcome go to stderr.

use anyhow::Context;
use clap::Subcommand;

use crate::cli::meter::Meter;
use crate::config::Settings;
use crate::rebuild;
use crate::startup::read_models;
use crate::store::db;

/// The `projections` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild read models from the event store and swap them in, while the service may keep
    /// serving: readers see the old read model until the new one is complete.
    Rebuild {
        /// The projection: requests, inbox, lists, absences or analytics (default: all of them, one
        /// after another).
        name: Option<String>,
        /// Events folded per transaction.
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(i64).range(1..))]
        batch_size: i64,
    },
}

/// Runs a `projections` subcommand.
pub async fn run(settings: &Settings, command: ProjectionsCommand) -> anyhow::Result<()> {
    let ProjectionsCommand::Rebuild { name, batch_size } = command;
    let pool = db::connect(&settings.database)
        .await
        .context("cannot connect to the database")?;
    let names: Vec<String> = match name {
        Some(name) => vec![name],
        None => read_models().map(str::to_owned).collect(),
    };
    let mut result = Ok(());
    for name in names {
        let mut meter = Meter::new(format!("rebuilding {name}"));
        match rebuild::rebuild(&pool, &name, batch_size, &mut |n| meter.tick(n)).await {
            Ok(done) => eprintln!(
                "{}: rebuilt from {} events in {:.2} s ({:.0} events/s) and swapped in at feed \
                 position {}/{}",
                done.name,
                done.events,
                done.elapsed.as_secs_f64(),
                done.rate(),
                done.position.tx_id,
                done.position.global_id
            ),
            Err(e) => {
                result = Err(e).with_context(|| format!("rebuilding {name}"));
                break;
            }
        }
    }
    pool.close().await;
    result
}
