//! `apm-demo`: a console chat on the apm-client SDK.
//!
//! ```text
//! apm-demo --server 127.0.0.1:7600 --user alice
//! apm-demo --server push.example.com:7600 --tls --token "$APM_TOKEN"
//! /join room
//! hello everyone
//! ```
//!
//! Commands come from stdin one line at a time (a terminal or a pipe), and
//! everything that happens is printed to stdout one event per line (see
//! `render` for the shapes). `/help` lists the commands.

mod chat;
mod command;
mod render;

use std::process::ExitCode;

use clap::Parser;

/// A console chat on an apm server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server, `host:port`.
    #[arg(long, short, env = "APM_SERVER", default_value = "127.0.0.1:7600")]
    server: String,
    /// Your user id: any name on a dev-mode server; may be left out with a
    /// token, which names the user.
    #[arg(long, short, env = "APM_USER", required_unless_present = "token")]
    user: Option<String>,
    /// A token from `apm-server token`, for servers with token auth
    /// (APM_TOKEN keeps it out of the process list).
    #[arg(long, short, env = "APM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Connect over TLS, trusting the system's root certificates.
    #[arg(long, env = "APM_TLS")]
    tls: bool,
    /// Connect over TLS, trusting only the CA certificate(s) in this PEM
    /// file (a private CA, or the server's self-signed certificate).
    #[arg(long, env = "APM_TLS_CA", value_name = "PATH")]
    tls_ca: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tls = match (&args.tls_ca, args.tls) {
        (Some(path), _) => match std::fs::read(path) {
            Ok(pem) => chat::Tls::Ca(pem),
            Err(e) => {
                eprintln!("apm-demo: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, true) => chat::Tls::SystemRoots,
        (None, false) => chat::Tls::Off,
    };
    let login = chat::Login {
        server: args.server,
        user: args.user.unwrap_or_default(),
        token: args.token.unwrap_or_default(),
        tls,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("apm-demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(chat::run(login));
    // tokio reads stdin with a blocking read on its own thread that cannot
    // be cancelled; dropping the runtime would wait for it, i.e. for one
    // more line after `/quit`. The client is closed by now, so leave it.
    runtime.shutdown_background();
    match outcome {
        Ok(chat::Exit::Quit) => ExitCode::SUCCESS,
        Ok(chat::Exit::Lost) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("apm-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
