//! A `redis-server` of a test's own, on a free port, gone with the test.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    child: Option<Child>,
    port: u16,
    /// Where it keeps its append-only file, when it keeps one.
    dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it
    /// says it accepts connections. Without one on PATH, `REDIS_URL` is
    /// used if set (shared: such a Redis must be empty); otherwise the
    /// test is skipped, except under CI, where a missing Redis fails it.
    pub async fn start() -> Option<RedisServer> {
        RedisServer::start_with(false).await
    }

    /// Like [`RedisServer::start`], writing every command to an
    /// append-only file with an fsync each (`appendfsync always`), so that
    /// [`RedisServer::restart`] loses nothing it acknowledged.
    pub async fn start_durable() -> Option<RedisServer> {
        RedisServer::start_with(true).await
    }

    async fn start_with(durable: bool) -> Option<RedisServer> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if let Ok(url) = std::env::var("REDIS_URL") {
                return Some(RedisServer {
                    url,
                    child: None,
                    port: 0,
                    dir: None,
                });
            }
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not on PATH and REDIS_URL is not set (CI needs one)"
            );
            eprintln!("skipped: no redis-server on PATH and no REDIS_URL");
            return None;
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let dir = durable.then(|| tempfile::tempdir().expect("a directory for its file"));
        let mut redis = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            child: None,
            port,
            dir,
        };
        redis.run().await;
        Some(redis)
    }

    /// Its address, for a relay in front of it.
    pub fn addr(&self) -> std::net::SocketAddr {
        let host = self.url.trim_start_matches("redis://");
        let host = host.split('/').next().unwrap_or(host);
        std::net::ToSocketAddrs::to_socket_addrs(host)
            .ok()
            .and_then(|mut a| a.next())
            .expect("the Redis URL names an address")
    }

    /// Kills it (SIGKILL) and starts it again on the same port: with
    /// [`RedisServer::start_durable`] from its file, otherwise empty.
    pub async fn restart(&mut self) {
        let mut child = self.child.take().expect("a redis-server of the test's own");
        child.kill().await.expect("kill redis-server");
        self.run().await;
    }

    async fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--logfile", ""]);
        match &self.dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
            None => cmd.args(["--appendonly", "no"]),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = tokio::time::timeout(crate::PATIENCE, lines.next_line())
                .await
                .expect("redis-server starts in time")
                .expect("read redis-server's output")
                .expect("redis-server exited before it was ready");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        // Keep reading, so a full pipe never stalls it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}
