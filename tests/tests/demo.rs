//! The `apm-demo` console chat, end to end: a real server in this process
//! and real `apm-demo` processes, driven by writing lines to their stdin
//! and waiting for the lines they print.
//!
//! Every wait ends as soon as the expected line shows up; [`WAIT`] is only
//! a guard against a hang.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use apm_tests::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long any one expected line may take. Generous: the demos are
/// separate processes on a machine that may be busy building.
const WAIT: Duration = Duration::from_secs(30);

/// The `apm-demo` binary, built for this run (`APM_DEMO_BIN` overrides).
fn demo_binary() -> PathBuf {
    match std::env::var_os("APM_DEMO_BIN") {
        Some(bin) => bin.into(),
        None => apm_tests::workspace_binary("apm-demo"),
    }
}

/// One running `apm-demo`, killed if the test ends early.
struct Demo {
    user: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every line read so far, for failure messages and final checks.
    seen: Vec<String>,
}

impl Demo {
    /// Starts a demo for `user` and waits until it is connected (and so
    /// subscribed to `$presence`).
    async fn start(server: SocketAddr, user: &'static str) -> Demo {
        let mut child = Command::new(demo_binary())
            .args(["--server", &server.to_string(), "--user", user])
            .env_remove("APM_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn apm-demo");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut demo = Demo {
            user,
            child,
            stdin,
            stdout,
            seen: Vec::new(),
        };
        let hello = format!("* connected to {server} as {user} ");
        demo.expect(&hello, |l| l.starts_with(&hello)).await;
        demo
    }

    /// Types a line.
    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to apm-demo");
        stdin.flush().await.expect("flush apm-demo's stdin");
    }

    /// Reads lines until one matches; returns it.
    async fn expect(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(line)) => {
                        self.seen.push(line.clone());
                        if matches(&line) {
                            return Some(line);
                        }
                    }
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "{}: output ended before {what:?}; saw {:#?}",
                self.user, self.seen
            ),
            Err(_) => panic!(
                "{}: no {what:?} within {WAIT:?}; saw {:#?}",
                self.user, self.seen
            ),
        }
    }

    /// Waits for exactly `line`.
    async fn expect_line(&mut self, line: &str) {
        self.expect(line, |l| l == line).await;
    }

    /// Waits for a message line: `[HH:MM:SS] ` then exactly `rest`.
    async fn expect_message(&mut self, rest: &str) {
        self.expect(rest, |l| unstamped(l) == Some(rest)).await;
    }

    /// Reads the rest of the output and waits for the process to exit.
    async fn finish(&mut self) -> ExitStatus {
        let user = self.user;
        let rest = async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                self.seen.push(line);
            }
            self.child.wait().await.expect("wait for apm-demo")
        };
        match tokio::time::timeout(WAIT, rest).await {
            Ok(status) => status,
            Err(_) => panic!("{user}: still running {WAIT:?} after being told to stop"),
        }
    }

    /// Types `/quit` and waits for the exit.
    async fn quit(&mut self) -> ExitStatus {
        self.send("/quit").await;
        self.finish().await
    }

    /// Closes stdin (end of input) and waits for the exit.
    async fn end_input(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.finish().await
    }

    /// How many lines read so far satisfy `matches`.
    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.seen.iter().filter(|l| matches(l)).count()
    }
}

/// A message line without its `[HH:MM:SS] ` stamp, if it has one.
fn unstamped(line: &str) -> Option<&str> {
    let (stamp, rest) = line.split_at_checked(11)?;
    let b = stamp.as_bytes();
    let digits = [1, 2, 4, 5, 7, 8].iter().all(|&i| b[i].is_ascii_digit());
    let shape = b[0] == b'[' && b[3] == b':' && b[6] == b':' && b[9] == b']' && b[10] == b' ';
    (digits && shape).then_some(rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat() {
    let server = TestServer::start(|_| {}).await;
    let mut alice = Demo::start(server.addr, "alice").await;
    let mut bob = Demo::start(server.addr, "bob").await;

    alice.send("/join room").await;
    alice.expect_line("* joined #room").await;
    bob.send("/join room").await;
    bob.expect_line("* joined #room").await;
    // Bob is subscribed once alice hears of it.
    alice.expect_line("* bob joined #room").await;

    // Said in the current channel: bob gets it, alice sees her line once
    // the server has sequenced it.
    alice.send("hello bob").await;
    alice.expect_message("#room alice: hello bob").await;
    bob.expect_message("#room alice: hello bob").await;

    // Private.
    bob.send("/msg alice psst").await;
    bob.expect_message("(private) bob -> alice: psst").await;
    alice.expect_message("(private) bob -> alice: psst").await;

    // Listings and errors.
    alice.send("/who room").await;
    alice.expect_line("* members of #room: alice, bob").await;
    alice.send("/online").await;
    alice.expect_line("* online: alice, bob").await;
    alice.send("/history room 10").await;
    alice
        .expect_line("* history of #room: 1 messages (kept: seq 1 to 1)")
        .await;
    alice.expect_message("#room alice: hello bob").await;
    alice.send("/dance").await;
    alice
        .expect_line("! unknown command /dance (try /help)")
        .await;
    bob.send("/leave room").await;
    bob.expect_line("* left #room").await;
    bob.send("nobody hears this").await;
    bob.expect_line("! no current channel: /join one first")
        .await;
    alice.expect_line("* bob left #room").await;

    // Read positions: bob read up to "hello bob"; two more come while he
    // is out of the room, and rejoining tells him so.
    alice.send("one more").await;
    alice.expect_message("#room alice: one more").await;
    alice.send("and another").await;
    alice.expect_message("#room alice: and another").await;
    bob.send("/join room").await;
    bob.expect_line("* #room: 2 unread since you last read it (/history room 2)")
        .await;
    bob.expect_line("* joined #room").await;
    bob.send("/unread").await;
    bob.expect_line("* unread: #room 2, (private) 0").await;
    alice.send("/unread").await;
    alice.expect_line("* unread: #room 0, (private) 0").await;

    // Presence: carol comes and goes (end of input ends her demo).
    let mut carol = Demo::start(server.addr, "carol").await;
    alice.expect_line("* carol is online").await;
    let status = carol.end_input().await;
    assert!(status.success(), "carol: {status}; saw {:#?}", carol.seen);
    assert_eq!(carol.seen.last().map(String::as_str), Some("* bye"));
    alice.expect_line("* carol is offline").await;

    let status = alice.quit().await;
    assert!(status.success(), "alice: {status}; saw {:#?}", alice.seen);
    assert_eq!(alice.seen.last().map(String::as_str), Some("* bye"));
    // Her own line was shown once live (the server did not echo it) and
    // once more in /history.
    assert_eq!(
        alice.count(|l| unstamped(l) == Some("#room alice: hello bob")),
        2,
        "{:#?}",
        alice.seen
    );
    bob.expect_line("* alice is offline").await;
    let status = bob.quit().await;
    assert!(status.success(), "bob: {status}; saw {:#?}", bob.seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_when_it_reconnects() {
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let mut alice = Demo::start(relay.addr, "alice").await;
    alice.send("/join room").await;
    alice.expect_line("* joined #room").await;

    relay.cut();
    alice
        .expect("a disconnect notice", |l| {
            l.starts_with("* disconnected: ") && l.ends_with(", reconnecting...")
        })
        .await;
    // The client finds its way back by itself.
    alice.expect_line("* reconnected").await;
    // Its channel was joined again.
    alice.send("/who room").await;
    alice.expect_line("* members of #room: alice").await;
    alice.send("still here").await;
    alice.expect_message("#room alice: still here").await;
    let status = alice.quit().await;
    assert!(status.success(), "alice: {status}; saw {:#?}", alice.seen);
}

#[tokio::test]
async fn fails_cleanly_without_a_server() {
    // Port 1 (tcpmux) is privileged and unused: nothing answers there.
    let addr = "127.0.0.1:1";
    let out = tokio::time::timeout(
        WAIT,
        Command::new(demo_binary())
            .args(["--server", addr, "--user", "alice"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("apm-demo gave up in time")
    .expect("run apm-demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

/// A graceful server restart with the disk store: each demo reconnects
/// and re-joins without reprinting a line or announcing anyone, and a line
/// typed while the server is away shows as pending, then as sent, once.
#[tokio::test]
async fn survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |c: &mut apm_server::Config| {
        c.store = apm_server::StoreKind::Disk;
        c.data_dir = dir.path().to_owned();
    };
    let first = TestServer::start(settings).await;
    let relay = apm_tests::Relay::start(first.addr).await;
    let mut alice = Demo::start(relay.addr, "alice").await;
    let mut bob = Demo::start(relay.addr, "bob").await;
    alice.send("/join room").await;
    alice.expect_line("* joined #room").await;
    bob.send("/join room").await;
    bob.expect_line("* joined #room").await;
    alice.expect_line("* bob joined #room").await;
    alice.send("before").await;
    alice.expect_message("#room alice: before").await;
    bob.expect_message("#room alice: before").await;

    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    relay.point_at(nowhere);
    first.stop().await;
    alice
        .expect("the disconnect", |l| l.starts_with("* disconnected"))
        .await;
    bob.expect("the disconnect", |l| l.starts_with("* disconnected"))
        .await;
    alice.send("typed while away").await;
    alice
        .expect_line("* pending: your message goes out when the server is back")
        .await;
    let second = TestServer::start(settings).await;
    relay.point_at(second.addr);
    alice.expect_message("#room alice: typed while away").await;
    bob.expect_message("#room alice: typed while away").await;
    bob.send("after").await;
    bob.expect_message("#room bob: after").await;
    alice.expect_message("#room bob: after").await;

    for demo in [&alice, &bob] {
        let seen = &demo.seen;
        let count = |rest: &str| seen.iter().filter(|l| unstamped(l) == Some(rest)).count();
        assert_eq!(count("#room alice: before"), 1, "{seen:#?}");
        assert_eq!(count("#room alice: typed while away"), 1, "{seen:#?}");
        let after_restart = seen
            .iter()
            .skip_while(|l| !l.starts_with("* disconnected"))
            .collect::<Vec<_>>();
        assert!(
            !after_restart
                .iter()
                .any(|l| l.ends_with(" joined #room") || l.ends_with(" is online")),
            "{}: announced after the restart: {after_restart:#?}",
            demo.user
        );
    }
    alice.quit().await;
    bob.quit().await;
}
