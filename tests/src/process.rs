//! The `apm-server` binary as a child process: for tests that kill it, or
//! that read its memory from `/proc`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server may take to start listening.
const START: Duration = Duration::from_secs(60);

/// A running `apm-server` process, killed when dropped.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `apm-server` on a free loopback port with `args` added, and
    /// waits for its log to say where it listens.
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
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn apm-server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = tokio::time::timeout(START, async {
            while let Some(line) = lines.next_line().await.expect("read server log") {
                let line = strip_ansi(&line);
                if line.contains("listening")
                    && let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                {
                    return addr.parse::<SocketAddr>().expect("listen address");
                }
            }
            panic!("apm-server exited before listening");
        })
        .await
        .expect("apm-server did not start listening");
        // Keep draining the log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess { child, addr }
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
