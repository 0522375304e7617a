//! The `apm-server` binary as a child process: for tests that kill it,
//! read its memory from `/proc`, or read its log.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long the server may take to start listening.
const START: Duration = Duration::from_secs(60);

/// A running `apm-server` process, killed when dropped.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every line it has logged so far (standard error, colour codes
    /// stripped); closed when the process closes its standard error.
    log: watch::Receiver<Vec<String>>,
}

/// The rate limit settings' variables, each set to `off`.
const RATE_LIMITS_OFF: [&str; 5] = [
    "APM_RATE_LIMIT_CONNECTION",
    "APM_RATE_LIMIT_USER",
    "APM_RATE_LIMIT_CHANNEL",
    "APM_RATE_LIMIT_DIRECT",
    "APM_RATE_LIMIT_ADMIN",
];

impl ServerProcess {
    /// Starts `apm-server` on a free loopback port with `args` added, and
    /// waits for its log to say where it listens (in either log format).
    pub async fn spawn<I, S>(args: I) -> ServerProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = crate::workspace_binary("apm-server");
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // The tests that start the binary measure other things (the
            // memory attacks flood on purpose); flags in `args` still win.
            .envs(RATE_LIMITS_OFF.iter().map(|var| (var, "off")))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn apm-server");
        let (tx, mut log) = watch::channel(Vec::new());
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // Keep reading for the whole run, so the server never blocks on a
        // full pipe; each line is echoed so a failing test shows it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let line = strip_ansi(&line);
                eprintln!("[apm-server] {line}");
                tx.send_modify(|log| log.push(line));
            }
        });
        let addr = tokio::time::timeout(START, async {
            let lines = log
                .wait_for(|lines| lines.iter().any(|l| listen_addr(l).is_some()))
                .await
                .expect("apm-server exited before listening");
            lines.iter().find_map(|l| listen_addr(l)).expect("found")
        })
        .await
        .expect("apm-server did not start listening");
        ServerProcess { child, addr, log }
    }

    /// The lines logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    /// Waits until a logged line satisfies `wanted` and returns it; panics
    /// if none has after `patience`, or if the process stops logging first.
    pub async fn wait_for_log(
        &mut self,
        patience: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let found = tokio::time::timeout(patience, async {
            let lines = self
                .log
                .wait_for(|lines| lines.iter().any(|l| wanted(l)))
                .await
                .ok()?;
            lines.iter().find(|l| wanted(l)).cloned()
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no such line in the server's log:\n{}",
                self.log().join("\n")
            ),
        }
    }

    /// Sends SIGTERM (a graceful shutdown) and waits for the process to end.
    pub async fn terminate(&mut self) -> ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM: {status}");
        self.child.wait().await.expect("wait for apm-server")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`), in
    /// bytes.
    pub fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let line = status
            .lines()
            .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a number of kB");
        kib * 1024
    }

    /// Resident memory now.
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS")
    }

    /// The most resident memory the process has had.
    pub fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM")
    }
}

/// The address in the server's "listening" line: `addr=...` in a text log,
/// `fields.addr` in a JSON one.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        let fields = event.get("fields")?;
        if fields.get("message")?.as_str()? != "listening" {
            return None;
        }
        return fields.get("addr")?.as_str()?.parse().ok();
    }
    if !line.contains("listening") {
        return None;
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?
        .parse()
        .ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
