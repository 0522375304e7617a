//! The server's log output: human-readable text or one JSON object per
//! line, on standard error, filtered by `RUST_LOG` (`info` by default).
//!
//! Standard error rather than standard output so that what a command prints
//! for the user (a token) can be captured alone, and so that journald and
//! container runtimes collect logs the way they expect to.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One readable line per event; coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per event (`timestamp`, `level`, `fields`, `target`,
    /// and the spans it happened in), for log collectors.
    Json,
}

/// Installs the process-wide subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        // Escape codes inside JSON strings would only garble them.
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// Colours only for a person at a terminal (not in files, pipes or
/// journals), and never when `NO_COLOR` is set (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
