//! Starting the workspace's own apm-server for a run, and stopping it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An apm-server this tool started; stopped (SIGTERM) on drop.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// With TLS: the certificate it presents (self-signed, made for this
    /// run), which clients trust.
    pub tls_ca: Option<Arc<[u8]>>,
    /// Its data directory when this tool chose it: fresh for every server,
    /// removed after it (fields drop after `Drop::drop` has stopped it).
    _data_dir: Option<tempfile::TempDir>,
    /// Where its certificate and key are, with TLS; removed after it.
    _tls_dir: Option<tempfile::TempDir>,
}

impl SpawnedServer {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The release `apm-server` beside this binary (both live in
/// `target/release`).
fn binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("apm-server");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p apm-server`, or pass --apm-addr",
            path.display()
        ))
    }
}

/// Starts apm-server on a free loopback port with `args`, and waits (at
/// most 10 s) until it accepts connections. Without a `--store` in `args`
/// it runs with the memory store, like the pub/sub peers it is compared
/// with (the `durable` scenario compares the stores); without a
/// `--data-dir`, in a fresh temporary directory, so no run inherits
/// another's history. Its message rate limits are set to 1,000,000 a
/// second (unless `args` or the environment set them): every message is
/// still checked, so the figures include what the checks cost, but none
/// is refused, as the peers refuse none. With `tls` it serves TLS with a
/// self-signed certificate for `127.0.0.1` made for it.
pub fn spawn(args: &[String], tls: bool) -> Result<SpawnedServer, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary()?);
    command.arg("--listen").arg(addr.to_string());
    let given = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if !given("--store") {
        command.args(["--store", "memory"]);
    }
    let data_dir = if given("--data-dir") {
        None
    } else {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        command.arg("--data-dir").arg(dir.path());
        Some(dir)
    };
    let (tls_ca, tls_dir) = if tls {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cert = self_signed(dir.path())?;
        command
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"));
        (Some(cert), Some(dir))
    } else {
        (None, None)
    };
    for var in [
        "APM_RATE_LIMIT_CONNECTION",
        "APM_RATE_LIMIT_USER",
        "APM_RATE_LIMIT_CHANNEL",
        "APM_RATE_LIMIT_DIRECT",
        "APM_RATE_LIMIT_ADMIN",
    ] {
        if std::env::var_os(var).is_none() {
            command.env(var, "1000000:1000000");
        }
    }
    let child = command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start apm-server: {e}"))?;
    let server = SpawnedServer {
        child,
        addr,
        tls_ca,
        _data_dir: data_dir,
        _tls_dir: tls_dir,
    };
    wait_until_listening(addr, "apm-server")?;
    Ok(server)
}

/// Writes a self-signed certificate for `127.0.0.1` and `localhost` and its
/// key to `cert.pem` and `key.pem` in `dir`; returns the certificate's PEM.
fn self_signed(dir: &std::path::Path) -> Result<Arc<[u8]>, String> {
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let cert = pair.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem())
        .map_err(|e| e.to_string())?;
    Ok(cert.into_bytes().into())
}

/// Waits (at most 10 s) until something accepts connections at `addr`.
pub fn wait_until_listening(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start listening within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
