//! TLS on the client listener: a real handshake with a certificate made
//! for the test, clients that get it wrong refused cleanly, the handshake
//! under the handshake timeout, and a certificate reloaded on SIGHUP under
//! live connections.

use std::process::Command;
use std::time::Duration;

use apm_client::{Client, Error, ReconnectPolicy};
use apm_server::Metrics;
use apm_tests::process::ServerProcess;
use apm_tests::tls::Ca;
use apm_tests::{PATIENCE, TestServer, workspace_binary};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

/// A dev-mode client trusting only `ca`, that never reconnects.
async fn tls_client(addr: impl ToString, user: &str, ca: &Ca) -> Result<Client, Error> {
    Client::builder(addr.to_string())
        .tls_ca_pem(ca.pem.clone())
        .credentials(user, "")
        .reconnect(ReconnectPolicy::NEVER)
        .connect_timeout(PATIENCE)
        .connect()
        .await
}

/// A server in this process with TLS from a fresh CA.
async fn tls_server(
    tweak: impl FnOnce(&mut apm_server::Config),
) -> (TestServer, Ca, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("apm test CA");
    let (cert, key) = ca.issue_into(dir.path());
    let server = TestServer::start(|c| {
        c.tls_cert = cert;
        c.tls_key = key;
        tweak(c);
    })
    .await;
    (server, ca, dir)
}

/// The next message on `sub` comes within the patience and holds `text`.
async fn receives(sub: &mut apm_client::Subscription, text: &str) {
    let msg = timeout(PATIENCE, sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open");
    assert_eq!(&msg.payload[..], text.as_bytes());
}

#[tokio::test]
async fn publish_and_subscribe_over_tls() {
    let (server, ca, _dir) = tls_server(|_| {}).await;
    let alice = tls_client(server.addr, "alice", &ca).await.expect("alice");
    let bob = tls_client(server.addr, "bob", &ca).await.expect("bob");
    let mut room = alice.subscribe("room").await.expect("subscribe");
    let receipt = bob.publish("room", "over tls").await.expect("publish");
    assert_eq!(receipt.seq, 1);
    receives(&mut room, "over tls").await;
    // Large enough to span several TLS records, both ways.
    let big = vec![b'x'; 200 * 1024];
    bob.publish("room", big.clone()).await.expect("publish big");
    let msg = timeout(PATIENCE, room.next()).await.unwrap().unwrap();
    assert_eq!(msg.payload.len(), big.len());
    let receipt = bob.send_to("alice", "private").await.expect("send_to");
    assert_eq!(receipt.seq, 1);
    let mut inbox = alice.messages().expect("inbox");
    let msg = timeout(PATIENCE, inbox.next()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"private");
    server.stop().await;
}

#[tokio::test]
async fn a_plain_client_against_a_tls_listener_fails_cleanly() {
    let (server, ca, _dir) = tls_server(|_| {}).await;
    let plain = Client::builder(server.addr.to_string())
        .credentials("mallory", "")
        .reconnect(ReconnectPolicy::NEVER)
        .connect_timeout(PATIENCE)
        .connect()
        .await;
    match plain {
        Err(Error::Protocol(_) | Error::Connect { .. }) => {}
        other => panic!("expected a protocol or connect error, got {other:?}"),
    }
    // The listener carries on.
    let alice = tls_client(server.addr, "alice", &ca).await.expect("alice");
    alice.ping().await.expect("ping");
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_against_a_plain_listener_fails_cleanly() {
    let server = TestServer::start(|_| {}).await;
    let ca = Ca::new("unused CA");
    match tls_client(server.addr, "alice", &ca).await {
        Err(Error::Tls { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_dropped_at_the_handshake_timeout() {
    let (server, _ca, _dir) = tls_server(|c| c.handshake_timeout_ms = 300).await;
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A TLS record header announcing a ClientHello that never comes whole.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .expect("the server closes within the patience");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed, read {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    // Counted before the socket was closed.
    assert_eq!(Metrics::get(&server.metrics.auth_failures), 1);
    server.stop().await;
}

/// Sends SIGHUP to the server process.
fn hang_up(server: &ServerProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP: {status}");
}

#[tokio::test]
async fn certificates_reload_on_sighup_under_live_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old_ca = Ca::new("old CA");
    let (cert, key) = old_ca.issue_into(dir.path());
    let mut server = ServerProcess::spawn([
        "--store".as_ref(),
        "memory".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ])
    .await;
    let alice = tls_client(server.addr, "alice", &old_ca)
        .await
        .expect("alice");
    let mut room = alice.subscribe("room").await.expect("subscribe");

    let new_ca = Ca::new("new CA");
    new_ca.issue_into(dir.path());
    hang_up(&server);
    server
        .wait_for_log(PATIENCE, |l| l.contains("TLS certificate reloaded"))
        .await;

    // The new certificate for new connections...
    let bob = tls_client(server.addr, "bob", &new_ca)
        .await
        .expect("bob trusts the new CA");
    match tls_client(server.addr, "carol", &old_ca).await {
        Err(Error::Tls { reason, .. }) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("the old CA should no longer do, got {other:?}"),
    }
    // ...while the connection made before it keeps its session, both ways.
    let mut bobs_room = bob.subscribe("room").await.expect("bob subscribes");
    bob.publish("room", "after the reload")
        .await
        .expect("publish");
    receives(&mut room, "after the reload").await;
    alice
        .publish("room", "still here")
        .await
        .expect("alice publishes");
    receives(&mut bobs_room, "still here").await;

    // A reload that fails keeps the certificate in use and says why.
    std::fs::write(&key, "not a key").unwrap();
    hang_up(&server);
    let line = server
        .wait_for_log(PATIENCE, |l| l.contains("TLS reload failed"))
        .await;
    assert!(line.contains(&*key.to_string_lossy()), "{line}");
    let dave = tls_client(server.addr, "dave", &new_ca)
        .await
        .expect("the new CA still does");
    dave.ping().await.expect("ping");
    alice.ping().await.expect("alice still connected");
    server.terminate().await;
}

#[tokio::test]
async fn the_demo_connects_with_a_ca_file() {
    let (server, ca, dir) = tls_server(|_| {}).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let mut demo = tokio::process::Command::new(workspace_binary("apm-demo"))
        .args(["--server", &server.addr.to_string(), "--user", "alice"])
        .arg("--tls-ca")
        .arg(&ca_file)
        .env_remove("APM_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn apm-demo");
    let stdout = demo.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let connected = timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("read apm-demo") {
            if line.starts_with("* connected to") {
                return line;
            }
        }
        panic!("apm-demo ended before connecting");
    })
    .await
    .expect("apm-demo connects in time");
    assert!(connected.contains("as alice"), "{connected}");
    let mut stdin = demo.stdin.take().expect("stdin");
    stdin.write_all(b"/quit\n").await.unwrap();
    let status = timeout(PATIENCE, demo.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    server.stop().await;
}

#[test]
fn dev_mode_off_loopback_refuses_to_start_without_tls() {
    let out = Command::new(workspace_binary("apm-server"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--allow-dev-mode",
            "true",
            "--store",
            "memory",
        ])
        .env_remove("APM_SECRET")
        .env_remove("APM_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run apm-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains("needs TLS"), "{stderr}");
}
