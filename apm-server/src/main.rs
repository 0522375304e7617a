//! `apm-server`: run the push server, or mint a client token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apm_core::message::Role;
use apm_server::{Config, Overrides, Server, TlsReloader};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
        /// The user id the token authenticates: 1 to `max_name_len` bytes
        /// with no whitespace, control or invisible characters, as the server checks.
        #[arg(long)]
        user: String,
        /// How long it is valid (`90s`, `15m`, `1h`, `30d`; at least `1s`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Grant the admin role (may broadcast).
        #[arg(long)]
        admin: bool,
        /// A members-only channel the token grants (a name, or a prefix
        /// ending in `*`); repeat for several.
        #[arg(long = "channel")]
        channels: Vec<String>,
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

/// Parses `args` (the program name first), with every setting's default
/// shown in `--help` and still below the config file's values.
fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Overrides::show_defaults(Cli::command()).try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.overrides.forget_defaults(&matches);
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
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
            channels,
            secret,
        }) => {
            let secret = secret.unwrap_or_else(|| config.secret.clone());
            let role = if admin { Role::Admin } else { Role::User };
            let limits = config.limits();
            match apm_server::auth::mint_checked(&secret, &user, role, ttl, &channels, &limits) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    // Said plainly, not logged: the user ran a command and
                    // standard output is kept for the token.
                    eprintln!("apm-server token: {e}");
                    ExitCode::FAILURE
                }
            }
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
        let http_listen = config.http_listen.0;
        let dev_mode = config.dev_mode();
        let shards = config.shard_count();
        // In cluster mode Redis is the store: the setting is not used.
        match config.store {
            _ if !config.cluster.is_empty() => {}
            apm_server::StoreKind::Disk => log_data_dir(&config.data_dir),
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
        let server = match http_listen {
            Some(http_addr) => {
                let http = match tokio::net::TcpListener::bind(http_addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        error!(%http_addr, error = %e, "cannot listen for HTTP");
                        return ExitCode::FAILURE;
                    }
                };
                match server.with_http(http) {
                    Ok(s) => s,
                    Err(e) => {
                        error!("{e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            None => server,
        };
        let addr = listener.local_addr().unwrap_or(listen);
        if dev_mode {
            warn!("INSECURE dev mode: no secret set, any user id is accepted without a token");
        } else {
            info!("token auth (HMAC-SHA256)");
        }
        let tls = server.tls_reloader();
        match &tls {
            Some(t) => info!(cert = %t.cert_path().display(), "TLS: clients connect over TLS"),
            None if !addr.ip().is_loopback() => {
                warn!("no TLS: tokens and messages cross the network in clear text")
            }
            None => {}
        }
        let shutdown = CancellationToken::new();
        // Before "listening": whoever waits for that line may signal next.
        tokio::spawn(on_signal(shutdown.clone(), tls));
        info!(%addr, shards, max_connections = server.max_connections(), "listening");
        match server.run(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Says where the disk store lives, as an absolute path, and whether that
/// depends on the working directory.
fn log_data_dir(data_dir: &std::path::Path) {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    if data_dir.is_relative() {
        info!(
            data_dir = %absolute.display(),
            "disk store: receipts after fsync; data directory relative to the working \
             directory (--data-dir to choose one)"
        );
    } else {
        info!(data_dir = %absolute.display(), "disk store: receipts after fsync");
    }
}

/// Reloads the TLS certificate on SIGHUP; a failure keeps the one in use.
#[cfg(unix)]
fn on_hangup(tls: Option<&TlsReloader>) {
    let Some(tls) = tls else {
        info!(
            "SIGHUP: no TLS certificate to reload; other settings are read at start, \
             restart to change them"
        );
        return;
    };
    match tls.reload() {
        Ok(()) => info!(
            cert = %tls.cert_path().display(),
            key = %tls.key_path().display(),
            "SIGHUP: TLS certificate reloaded; new connections get it, open ones keep theirs"
        ),
        Err(e) => error!(error = %e, "SIGHUP: TLS reload failed; the certificate in use stays"),
    }
}

/// Handles SIGINT and SIGTERM (graceful shutdown) and SIGHUP (certificate
/// reload). The handlers are installed here, before the future first runs:
/// a signal that arrives between "listening" and the task's first poll
/// would otherwise take the default action and end the process.
fn on_signal(
    shutdown: CancellationToken,
    tls: Option<TlsReloader>,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut int, mut term, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::hangup()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            // SIGHUP would end the process by default: it reloads the TLS
            // certificate (the one setting read again), and the process
            // carries on.
            let hangups = async {
                loop {
                    next(&mut hup).await;
                    on_hangup(tls.as_ref());
                }
            };
            tokio::select! {
                _ = next(&mut int) => {}
                _ = next(&mut term) => {}
                _ = hangups => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tls;
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("shutting down");
        shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_help() -> String {
        Overrides::show_defaults(Cli::command())
            .render_long_help()
            .to_string()
    }

    #[test]
    fn help_shows_every_default() {
        let help = long_help();
        for shown in [
            "[default: 127.0.0.1:7600]",
            "[default: apm-data]",
            "[default: disk]",
            "[default: text]",
            "[default: disconnect]",
            "[default: 4096]",
            "[default: *]",
            "[default: false]",
            "[default: 40:40]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
        // Every setting but those whose default is "none" (explained in
        // their help) shows one.
        let command = Overrides::show_defaults(Cli::command());
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if [
                "config",
                "secret",
                "history_rules",
                "rate_limit_channel_rules",
                "channel_rules",
                "tls_cert",
                "tls_key",
                "cluster",
                "api_keys",
                "api_keys_file",
                "help",
                "version",
            ]
            .contains(&id)
            {
                continue;
            }
            assert!(
                !arg.get_default_values().is_empty(),
                "--{id} shows no default"
            );
        }
    }

    #[test]
    fn shown_defaults_do_not_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("apm.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\necho = true\nshards = 3\n",
        )
        .unwrap();
        let cli = parse([
            "apm-server",
            "--config",
            file.to_str().unwrap(),
            "--shards",
            "5",
        ])
        .unwrap();
        let config = load(cli.config.as_ref(), cli.overrides).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert!(config.echo);
        assert_eq!(config.shards, 5, "a flag still wins over the file");
        assert_eq!(config.outbound_queue, Config::default().outbound_queue);
    }

    #[test]
    fn listen_takes_a_host_name() {
        let cli = parse(["apm-server", "--listen", "localhost:7605"]).unwrap();
        let listen = cli.overrides.listen.expect("given");
        assert!(listen.ip().is_loopback(), "{listen}");
        assert_eq!(listen.port(), 7605);
        let e = parse(["apm-server", "--listen", "localhost"]).unwrap_err();
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn http_tls_is_a_flag_that_also_takes_a_value() {
        let given = |args: &[&str]| {
            let cli = parse(["apm-server"].iter().chain(args).copied()).unwrap();
            load(None, cli.overrides).unwrap().http_tls
        };
        assert!(!given(&[]), "off by default");
        assert!(given(&["--http-tls"]));
        assert!(given(&["--http-tls", "--shards", "2"]));
        assert!(given(&["--http-tls", "true"]));
        assert!(!given(&["--http-tls", "false"]));
        assert!(parse(["apm-server", "--http-tls", "maybe"]).is_err());
    }

    #[test]
    fn token_flags() {
        let cli = parse(["apm-server", "token", "--user", "alice", "--ttl", "15m"]).unwrap();
        match cli.command {
            Some(Command::Token { user, ttl, .. }) => {
                assert_eq!((user.as_str(), ttl), ("alice", Duration::from_secs(900)));
            }
            None => panic!("no token command"),
        }
    }
}
