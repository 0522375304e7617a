//! The HTTP listener over TLS (`--http-tls`): HTTPS with the client
//! listener's certificate, HTTP/2 and HTTP/1.1 by ALPN, handshakes that
//! hold up no one, requests under way finished at shutdown, and one
//! SIGHUP reloading the certificate of both listeners under live
//! connections.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use apm_client::{Client, ReconnectPolicy};
use apm_tests::http::HttpClient;
use apm_tests::process::ServerProcess;
use apm_tests::tls::Ca;
use apm_tests::{API_KEY, Flaky, PATIENCE, TestServer, workspace_binary};
use hyper::{StatusCode, Version};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

/// Awaits `f`, failing the test after [`PATIENCE`].
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    timeout(PATIENCE, f).await.expect("in time")
}

/// The settings of an HTTPS listener on an ephemeral port with the
/// certificate pair at `cert` and `key`, and the test's API key.
fn https_settings(
    c: &mut apm_server::Config,
    (cert, key): (std::path::PathBuf, std::path::PathBuf),
) {
    c.http_listen = apm_server::config::HttpListen(Some("127.0.0.1:0".parse().unwrap()));
    c.api_keys = vec![format!("backend={API_KEY}")];
    c.tls_cert = cert;
    c.tls_key = key;
    c.http_tls = true;
}

/// A server in this process with both listeners on TLS from a fresh CA.
async fn https_server(
    tweak: impl FnOnce(&mut apm_server::Config),
) -> (TestServer, Ca, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("apm test CA");
    let pair = ca.issue_into(dir.path());
    let server = TestServer::start(|c| {
        https_settings(c, pair);
        tweak(c);
    })
    .await;
    (server, ca, dir)
}

#[tokio::test]
async fn https_serves_probes_and_the_api_over_http1_and_http2() {
    let (server, ca, _dir) = https_server(|_| {}).await;
    let addr = server.http.expect("an HTTP listener");

    let mut conn = HttpClient::https(addr, &ca.pem).connect().await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let health = conn.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
    // The same connection, kept alive, for an API call with the key...
    let info = conn.call("info", json!({})).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    assert!(info.json()["shards"].as_u64().is_some(), "{}", info.text());
    // ...and one without.
    let keyless = conn.request("POST", "/api/info", &[], "").await;
    assert_eq!(keyless.status, StatusCode::UNAUTHORIZED);
    assert_eq!(keyless.error_code(), "missing_api_key");

    let mut h2 = HttpClient::https_h2(addr, &ca.pem).connect().await;
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let published = h2
        .call("publish", json!({ "channel": "news", "text": "over h2" }))
        .await;
    assert_eq!(published.version, Version::HTTP_2);
    assert_eq!(published.status, StatusCode::OK, "{}", published.text());
    assert_eq!(published.json()["seq"], 1);
    assert_eq!(h2.get("/metrics").await.status, StatusCode::OK);

    // Clear text at the TLS port fails, and at once rather than hanging.
    let plain = within(HttpClient::new(addr).try_request("GET", "/healthz", &[], "")).await;
    assert!(plain.is_err(), "a plain request was answered: {plain:?}");
    // So does a client that does not trust the certificate.
    let stranger = Ca::new("another CA");
    match HttpClient::https(addr, &stranger.pem).try_connect().await {
        Err(e) => assert!(e.contains("certificate"), "{e}"),
        Ok(_) => panic!("a client trusting another CA got through"),
    }
    // The listener carries on.
    let ready = HttpClient::https(addr, &ca.pem).get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_holds_up_no_one_and_ends_at_the_handshake_timeout() {
    const HANDSHAKE_MS: u64 = 1500;
    let (server, ca, _dir) = https_server(|c| c.handshake_timeout_ms = HANDSHAKE_MS).await;
    let addr = server.http.expect("an HTTP listener");
    let started = Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A TLS record header announcing a ClientHello that never comes whole.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00])
        .await
        .unwrap();

    let health = within(HttpClient::https(addr, &ca.pem).get("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    let mut buf = [0u8; 64];
    assert!(
        matches!(stalled.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled handshake is still waiting while others are served ({:?} in)",
        started.elapsed()
    );

    let read = within(stalled.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed, read {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(HANDSHAKE_MS),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_under_way_is_answered_at_shutdown() {
    let store = Arc::new(Flaky::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("apm test CA");
    let pair = ca.issue_into(dir.path());
    let server = TestServer::start_with_store(store.clone(), |c| https_settings(c, pair)).await;
    let https = HttpClient::https(server.http.expect("an HTTP listener"), &ca.pem);
    let mut idle = https.connect().await;
    assert_eq!(idle.get("/healthz").await.status, StatusCode::OK);

    store.failing.store(true, SeqCst);
    let under_way = tokio::spawn({
        let https = https.clone();
        async move {
            https
                .call("publish", json!({ "channel": "c", "text": "late" }))
                .await
        }
    });
    // Its message is waiting for the disk: the request is under way.
    store.failed.notified().await;
    server.shutdown.cancel();
    // The idle keep-alive connection is closed: the listener is shutting down.
    within(idle.closed()).await;
    assert!(
        https.try_connect().await.is_err(),
        "no new connection once shutting down"
    );

    store.failing.store(false, SeqCst);
    let answer = within(under_way).await.expect("the request's task");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["seq"], 1);
    within(server.stop()).await;
}

/// Sends SIGHUP to the server process.
fn hang_up(server: &ServerProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP: {status}");
}

/// The `addr=` of a log line.
fn addr_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"))
}

#[tokio::test]
async fn one_sighup_reloads_the_certificate_of_both_listeners_under_live_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old_ca = Ca::new("old CA");
    let (cert, key) = old_ca.issue_into(dir.path());
    let api_key = format!("backend={API_KEY}");
    let mut server = ServerProcess::spawn([
        "--store".as_ref(),
        "memory".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--http-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--http-tls".as_ref(),
        "--api-key".as_ref(),
        api_key.as_ref(),
    ])
    .await;
    let line = server
        .wait_for_log(PATIENCE, |l| l.contains("HTTP API"))
        .await;
    assert!(line.contains("https"), "{line}");
    let http_addr = addr_in(&line);

    let mut kept = HttpClient::https(http_addr, &old_ca.pem).connect().await;
    assert_eq!(kept.get("/healthz").await.status, StatusCode::OK);

    let new_ca = Ca::new("new CA");
    new_ca.issue_into(dir.path());
    hang_up(&server);
    server
        .wait_for_log(PATIENCE, |l| l.contains("TLS certificate reloaded"))
        .await;

    // New connections get the new certificate...
    let mut fresh = HttpClient::https(http_addr, &new_ca.pem).connect().await;
    assert_ne!(fresh.server_cert, kept.server_cert);
    let info = fresh.call("info", json!({})).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    match HttpClient::https(http_addr, &old_ca.pem)
        .try_connect()
        .await
    {
        Err(e) => assert!(e.contains("certificate"), "{e}"),
        Ok(_) => panic!("the old CA should no longer do"),
    }
    // ...on the client listener too...
    let alice = Client::builder(server.addr.to_string())
        .tls_ca_pem(new_ca.pem.clone())
        .credentials("alice", "")
        .reconnect(ReconnectPolicy::NEVER)
        .connect_timeout(PATIENCE)
        .connect()
        .await
        .expect("the client listener presents the new certificate");
    alice.ping().await.expect("ping");
    // ...while the connection kept alive from before keeps its session.
    let info = kept.call("info", json!({})).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    assert_eq!(kept.get("/healthz").await.status, StatusCode::OK);

    assert!(
        !server.log().iter().any(|l| l.contains("without TLS")),
        "no clear-text warning with TLS on"
    );
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
}

#[test]
fn http_tls_without_a_certificate_is_refused_at_start() {
    let out = Command::new(workspace_binary("apm-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--http-listen",
            "127.0.0.1:0",
            "--http-tls",
        ])
        .env_remove("APM_SECRET")
        .env_remove("APM_CONFIG")
        .env_remove("APM_TLS_CERT")
        .env_remove("APM_TLS_KEY")
        .env("NO_COLOR", "1")
        .output()
        .expect("run apm-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("--http-tls needs --tls-cert and --tls-key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn api_keys_in_clear_text_off_loopback_are_warned_about() {
    let api_key = format!("backend={API_KEY}");
    let mut server = ServerProcess::spawn([
        "--store",
        "memory",
        "--http-listen",
        "0.0.0.0:0",
        "--api-key",
        api_key.as_str(),
    ])
    .await;
    let line = server
        .wait_for_log(PATIENCE, |l| l.contains("without TLS"))
        .await;
    assert!(
        line.contains("WARN") && line.contains("INSECURE") && line.contains("--http-tls"),
        "{line}"
    );
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
}
