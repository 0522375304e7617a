//! `apm-server`: run the push server, or mint a client token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apm_core::message::Role;
use apm_server::{Config, Overrides, Server};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// mimalloc: under the fan-out's pattern (a frame allocated by a shard,
/// freed by whichever connection writes it last, or by the history ring
/// much later) glibc's allocator spent a quarter of the server's CPU in
/// chunk consolidation; see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The apm message push server.
///
/// Every setting has a flag, an environment variable (`APM_<name>`) and a
/// key of the same name in the TOML file given with `--config`. Flags and
/// environment override the file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML file with settings.
    #[arg(long, env = "APM_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a signed client token.
    Token {
        /// The user id the token authenticates.
        #[arg(long)]
        user: String,
        /// How long it is valid (`90s`, `15m`, `1h`, `30d`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Grant the admin role (may broadcast).
        #[arg(long)]
        admin: bool,
        /// The signing secret (default: the server's `secret` setting).
        #[arg(long, env = "APM_SECRET")]
        secret: Option<String>,
    },
}

fn load(cli_config: Option<&PathBuf>, overrides: Overrides) -> Result<Config, String> {
    let mut config = match cli_config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    config.apply(overrides);
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The format may come from the file, so the file is read first; if it
    // cannot be, its error is logged in the format the flags asked for.
    let asked_format = cli.overrides.log_format;
    let config = load(cli.config.as_ref(), cli.overrides);
    apm_server::logs::init(match &config {
        Ok(c) => c.log_format,
        Err(_) => asked_format.unwrap_or_default(),
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Token {
            user,
            ttl,
            admin,
            secret,
        }) => {
            let Some(secret) = secret.or(Some(config.secret).filter(|s| !s.is_empty())) else {
                error!("no secret: pass --secret or set it in the config");
                return ExitCode::FAILURE;
            };
            let role = if admin { Role::Admin } else { Role::User };
            println!(
                "{}",
                apm_server::auth::mint(secret.as_bytes(), &user, role, ttl)
            );
            ExitCode::SUCCESS
        }
        None => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    match apm_server::raise_fd_limit() {
        Ok(n) => info!(open_files = n, "file limit"),
        Err(e) => warn!(error = %e, "could not raise the open-file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.listen;
        let dev_mode = config.dev_mode();
        let shards = config.shard_count();
        match config.store {
            apm_server::StoreKind::Disk => {
                info!(data_dir = %config.data_dir.display(), "disk store: receipts after fsync")
            }
            apm_server::StoreKind::Memory => {
                warn!("memory store: history and offline messages are lost on restart")
            }
        }
        let server = match Server::new(config) {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                error!(%listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        if dev_mode {
            warn!("INSECURE dev mode: no secret set, any user id is accepted without a token");
        } else {
            info!("token auth (HMAC-SHA256)");
        }
        info!(%addr, shards, max_connections = server.max_connections(), "listening");
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        match server.run(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

async fn on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        // SIGHUP would end the process by default: settings are read at
        // start only, so say so and carry on.
        let hangups = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(mut hup) => {
                    while hup.recv().await.is_some() {
                        info!("SIGHUP ignored: settings are read at start; restart to change them");
                    }
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
            _ = hangups => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
    shutdown.cancel();
}
