//! Logging with tracing: a readable message plus structured fields, to stderr (stdout belongs to
//! commands' output, such as `token` and `audit export`). `RUST_LOG` overrides the configured
//! level. No secret or token is ever a field: secrets are `Secret`s, which do not print.

use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Always added to the configured level: sqlx's per-query lines, and lapin's dump of a returned
/// message (its whole body, bytes by bytes; the relay logs the return itself, in one line).
const QUIET: &str = "sqlx=warn,lapin::returned_messages=error";

/// Installs the global subscriber; a second call (tests) keeps the first.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},{QUIET}", settings.level)))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")));
    let registry = tracing_subscriber::registry().with(filter);
    // Colours only for a person at a terminal, never in files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = if settings.format == "json" {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .try_init()
    };
    // Already installed (by a test harness or an earlier call): keep it.
    drop(result);
}
