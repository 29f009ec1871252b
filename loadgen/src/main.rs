//! `loadgen`: the load generator of approval-ledger's benchmark (`scripts/bench.sh` runs it).
//!
//! # Layout
//! - [`model`]: the systems, people and requests of the benchmark; the service's DTO and the
//!   aggregate decide what each command does.
//! - [`seed`]: writes a data set into the event store in bulk, as the service would, and waits
//!   until the projections have folded it.
//! - [`run`]: phase 1 (open loop at a fixed rate) and phase 2 (closed loop, saturation).
//! - [`lists`]: the lists phase, the requesters' own lists and searches.
//! - [`fake`]: the fake legacy callback and FCM endpoints.
//! - [`stats`]: histograms, the results file, the table and the `bench:` line.
//!
//! It reads the service's own configuration file (`--config`), so tokens, signatures and the
//! database are the service's.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use approval_ledger::config::Settings;
use clap::{Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

mod fake;
mod lists;
mod model;
mod run;
mod seed;
mod stats;

/// Load generator of approval-ledger's benchmark.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The people of the benchmark.
#[derive(Debug, Clone, clap::Args)]
struct PeopleArgs {
    /// Approvers (`a00000`...).
    #[arg(long, default_value_t = 5000)]
    approvers: usize,
    /// Requesters (`p0000`...).
    #[arg(long, default_value_t = 500)]
    requesters: usize,
}

impl PeopleArgs {
    fn population(&self) -> model::Population {
        model::Population {
            approvers: self.approvers.max(4),
            requesters: self.requesters.max(1),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a data set into the service's event store, as a past that the legacy systems and
    /// phones already received (the relay's checkpoint moves past it), then, unless `--no-wait`,
    /// wait until the running service's projections and audit reader have folded it.
    Seed {
        /// The service's configuration file (database URL).
        #[arg(long)]
        config: PathBuf,
        /// Requests to write.
        #[arg(long, default_value_t = 110_000)]
        requests: usize,
        /// Requests per transaction.
        #[arg(long, default_value_t = 250)]
        batch: usize,
        /// Parallel connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Random seed of the data set.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Longest wait for the projections, in seconds.
        #[arg(long, default_value_t = 900)]
        wait: u64,
        /// Write only; `loadgen wait` waits later, once the service runs.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        people: PeopleArgs,
    },
    /// Delete the RabbitMQ queues and exchanges named after the configuration's exchange (the
    /// benchmark's own, at its end).
    DropTopology {
        /// The service's configuration file (broker URL and exchange).
        #[arg(long)]
        config: PathBuf,
    },
    /// Wait until the running service's projections and audit reader have folded every event.
    Wait {
        /// The service's configuration file (database URL).
        #[arg(long)]
        config: PathBuf,
        /// Longest wait, in seconds.
        #[arg(long, default_value_t = 900)]
        wait: u64,
        /// A reader not to wait for, because the build under test has none of that name (an
        /// older build, measured against this one); repeatable.
        #[arg(long = "ignore-reader")]
        ignore: Vec<String>,
    },
    /// Drive phase 1 (fixed rate) and phase 2 (saturation) against a running service and write
    /// the results as JSON.
    Run {
        /// The service's configuration file (secrets, database URL).
        #[arg(long)]
        config: PathBuf,
        /// The service's base URL.
        #[arg(long)]
        base: String,
        /// The fake endpoints' base URL.
        #[arg(long)]
        fake: Option<String>,
        /// Phase 1's commands per second.
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        /// Phase 1's inbox reads per second.
        #[arg(long, default_value_t = 50.0)]
        inbox_rate: f64,
        /// Seconds of each phase and of each saturation level.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Unmeasured seconds at phase 1's rate first.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Phase 2's levels of commands in flight, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "16,64")]
        concurrency: Vec<usize>,
        /// Devices to register, one per approver.
        #[arg(long, default_value_t = 5000)]
        devices: usize,
        /// Seconds to wait for an answer before counting a failure.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// The service's process id, to price commands in CPU time.
        #[arg(long)]
        service_pid: Option<u32>,
        /// Where to write the results.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        people: PeopleArgs,
    },
    /// Drive the lists phase against a running service: the seed's requesters read their own
    /// lists and search them, each at `--rate` per second, and write the results as JSON.
    Lists {
        /// The service's configuration file (the token secret).
        #[arg(long)]
        config: PathBuf,
        /// The service's base URL.
        #[arg(long)]
        base: String,
        /// Lists per second, and as many searches.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Seconds to wait for an answer before counting a failure.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Where to write the results.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        people: PeopleArgs,
    },
    /// Serve the fake legacy callback and FCM endpoints.
    FakeEndpoints {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        bind: String,
    },
    /// Print the table and the closing `bench:` line of a results file.
    Report {
        /// The results of `run`.
        #[arg(long)]
        results: PathBuf,
        /// The pgbench ceiling, transactions per second.
        #[arg(long)]
        pg_tps: Option<f64>,
        /// The service's resident set, MB.
        #[arg(long)]
        rss_mb: Option<f64>,
        /// The results of `lists`, if it ran.
        #[arg(long)]
        lists: Option<PathBuf>,
    },
}

async fn pool_for(settings: &Settings, connections: u32) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(settings.database.url.expose())
        .await
        .context("connecting to the service's database")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Seed {
                config,
                requests,
                batch,
                connections,
                seed,
                wait,
                no_wait,
                people,
            } => {
                let settings = Settings::load(Some(&config), None)?;
                let pool = pool_for(&settings, u32::try_from(connections)?.max(1)).await?;
                let plan = seed::SeedPlan {
                    requests,
                    batch: batch.max(1),
                    connections,
                    population: people.population(),
                    seed,
                };
                let started = std::time::Instant::now();
                let events = seed::write(&pool, &plan).await?;
                eprintln!(
                    "seed: wrote {requests} requests, {events} events in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                sqlx::query("ANALYZE events").execute(&pool).await?;
                seed::mark_published(&pool).await?;
                if !no_wait {
                    seed::wait_for_projections(&pool, Duration::from_secs(wait), &[]).await?;
                    sqlx::query("ANALYZE").execute(&pool).await?;
                }
                Ok(())
            }
            Command::DropTopology { config } => {
                let settings = Settings::load(Some(&config), None)?;
                let topology = approval_ledger::broker::Topology::new(&settings.broker.exchange);
                let connection = lapin::Connection::connect(
                    settings.broker.url.expose(),
                    lapin::ConnectionProperties::default(),
                )
                .await?;
                let channel = connection.create_channel().await?;
                topology.delete(&channel).await?;
                connection.close(200, "bye".into()).await?;
                Ok(())
            }
            Command::Wait {
                config,
                wait,
                ignore,
            } => {
                let settings = Settings::load(Some(&config), None)?;
                let pool = pool_for(&settings, 1).await?;
                seed::wait_for_projections(&pool, Duration::from_secs(wait), &ignore).await?;
                sqlx::query("ANALYZE").execute(&pool).await?;
                Ok(())
            }
            Command::Run {
                config,
                base,
                fake,
                rate,
                inbox_rate,
                duration,
                warmup,
                concurrency,
                devices,
                timeout,
                service_pid,
                out,
                people,
            } => {
                let settings = Settings::load(Some(&config), None)?;
                let pool = pool_for(&settings, 2).await?;
                let plan = run::RunPlan {
                    base,
                    fake,
                    rate: rate.max(1.0),
                    inbox_rate: inbox_rate.max(1.0),
                    duration: Duration::from_secs(duration.max(1)),
                    warmup: Duration::from_secs(warmup),
                    concurrency,
                    devices,
                    population: people.population(),
                    timeout: Duration::from_secs(timeout.max(1)),
                    service_pid,
                };
                let results = run::run(&settings, &pool, &plan).await?;
                std::fs::write(&out, serde_json::to_vec_pretty(&results)?)
                    .with_context(|| format!("writing {}", out.display()))?;
                if let Some(best) = &results.best {
                    println!("BEST_CONCURRENCY={}", best.concurrency);
                }
                Ok(())
            }
            Command::Lists {
                config,
                base,
                rate,
                duration,
                timeout,
                out,
                people,
            } => {
                let settings = Settings::load(Some(&config), None)?;
                let plan = lists::ListsPlan {
                    base,
                    rate: rate.max(1.0),
                    duration: Duration::from_secs(duration.max(1)),
                    population: people.population(),
                    timeout: Duration::from_secs(timeout.max(1)),
                };
                let results = lists::run(&settings, &plan).await?;
                eprintln!(
                    "lists: {} lists (p99 {:?} ms), {} searches (p99 {:?} ms)",
                    results.list.count,
                    results.list.p99_ms,
                    results.search.count,
                    results.search.p99_ms
                );
                std::fs::write(&out, serde_json::to_vec_pretty(&results)?)
                    .with_context(|| format!("writing {}", out.display()))?;
                Ok(())
            }
            Command::FakeEndpoints { bind } => fake::serve(&bind).await,
            Command::Report {
                results,
                pg_tps,
                rss_mb,
                lists,
            } => {
                let text = std::fs::read(&results)
                    .with_context(|| format!("reading {}", results.display()))?;
                let results: stats::Results = serde_json::from_slice(&text)?;
                let lists: Option<lists::ListsResults> = match lists {
                    Some(path) => {
                        let text = std::fs::read(&path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        Some(serde_json::from_slice(&text)?)
                    }
                    None => None,
                };
                println!(
                    "{}",
                    stats::report(&results, pg_tps, rss_mb, lists.as_ref())
                );
                Ok(())
            }
        }
    })
}
