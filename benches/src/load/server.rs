//! Starting the workspace's own apm-server for a run, and stopping it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An apm-server this tool started; stopped (SIGTERM) on drop.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory when this tool chose it: fresh for every server,
    /// removed after it (fields drop after `Drop::drop` has stopped it).
    _data_dir: Option<tempfile::TempDir>,
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
/// is refused, as the peers refuse none.
pub fn spawn(args: &[String]) -> Result<SpawnedServer, String> {
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
        _data_dir: data_dir,
    };
    wait_until_listening(addr, "apm-server")?;
    Ok(server)
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
