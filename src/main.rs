//! The `approval-ledger` binary: parses the command line, loads the configuration, starts
//! logging, and runs the subcommand. Everything else lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use approval_ledger::cli::{self, Cli, Command};
use approval_ledger::config::Settings;
use approval_ledger::startup::Application;
use approval_ledger::{store, telemetry};
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("approval-ledger: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approval-ledger: {e:#}");
            if e.downcast_ref::<cli::audit::NotIntact>().is_some() {
                ExitCode::from(cli::audit::NOT_INTACT_EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref(), None)?;
    telemetry::init(&settings.log);
    match cli.command {
        Command::Serve { role } => serve(settings, Command::roles(&role)).await,
        Command::Migrate => {
            let pool = store::db::prepare(&settings.database).await?;
            pool.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Token {
            user,
            roles,
            groups,
            ttl,
        } => {
            println!(
                "{}",
                cli::token::run(&settings, &user, &roles, &groups, &ttl)?
            );
            Ok(())
        }
        Command::DeadLetters(command) => {
            let pool = store::db::prepare(&settings.database).await?;
            let result = match command {
                cli::DeadLetters::List => cli::dead_letters::list(&settings, &pool).await,
                cli::DeadLetters::Retry { id, all } => {
                    cli::dead_letters::retry(&pool, id, all).await
                }
            };
            pool.close().await;
            result
        }
        Command::Audit { command } => cli::audit::run(&settings, command).await,
        Command::Projections { command } => cli::projections::run(&settings, command).await,
        Command::Report {
            from,
            to,
            group_by,
            format,
        } => cli::report::run(&settings, from.as_deref(), to.as_deref(), group_by, format).await,
    }
}

async fn serve(settings: Settings, roles: approval_ledger::startup::Roles) -> anyhow::Result<()> {
    let dev_secrets = settings.development_secrets_in_use();
    if !dev_secrets.is_empty() {
        tracing::warn!(
            secrets = %dev_secrets.join(", "),
            "RUNNING WITH DEVELOPMENT SECRETS: anyone can mint tokens and sign system calls. \
             Set real secrets and app.environment before exposing this service."
        );
    }
    let app = Application::build(settings, roles)
        .await
        .context("cannot start the service")?;
    if let Some(port) = app.port() {
        tracing::info!(port, "serving HTTP");
    }
    tracing::info!(api = roles.api, worker = roles.worker, "started");
    let stop = app.stop_token();
    tokio::spawn(stop_on_signal(stop));
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `stop` on SIGINT or SIGTERM.
async fn stop_on_signal(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stopping: draining in-flight work");
    stop.cancel();
}
