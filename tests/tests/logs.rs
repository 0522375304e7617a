//! The server's log as an operator reads it: `--log-format json` gives one
//! JSON object per line, connections are logged when they open and close,
//! a refused handshake names the peer and the reason, and the counters are
//! logged at shutdown.

use std::time::Duration;

use apm_core::{Frame, Message};
use apm_tests::Client;
use apm_tests::process::ServerProcess;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The event's message, or "" for a line that is not an event.
fn message(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn json_log_of_connections_refusals_and_shutdown() {
    let mut server = ServerProcess::spawn(["--log-format", "json", "--store", "memory"]).await;

    // A client whose first frame is not Hello is refused.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let refused_peer = stream.local_addr().unwrap().to_string();
    let ping = Frame::new(1, Message::Ping).to_bytes().unwrap();
    stream.write_all(&ping).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the server closes a refused connection")
        .unwrap();

    let line = server
        .wait_for_log(WAIT, |l| message(l) == "handshake refused")
        .await;
    let event = json(&line);
    assert_eq!(event["level"], "INFO", "{line}");
    assert_eq!(event["span"]["peer"], refused_peer.as_str(), "{line}");
    assert_eq!(event["fields"]["code"], "auth_required", "{line}");
    assert_eq!(
        event["fields"]["reason"], "the first frame must be Hello",
        "{line}"
    );

    // A client that says Hello and goes: opened, then closed with who,
    // how long and why.
    let alice = Client::connect(server.addr).await;
    let mut alice = alice;
    alice.hello("alice", "").await;
    drop(alice);
    let line = server
        .wait_for_log(WAIT, |l| message(l) == "connected")
        .await;
    let event = json(&line);
    assert_eq!(event["span"]["user"], "alice", "{line}");
    assert!(event["span"]["peer"].is_string(), "{line}");
    let line = server.wait_for_log(WAIT, |l| message(l) == "closed").await;
    let event = json(&line);
    assert_eq!(event["span"]["user"], "alice", "{line}");
    assert_eq!(event["fields"]["reason"], "peer_closed", "{line}");
    assert!(event["fields"]["duration_ms"].is_u64(), "{line}");

    // A graceful stop logs the counters, as numbers.
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let line = server
        .wait_for_log(WAIT, |l| message(l).starts_with("stopped"))
        .await;
    let event = json(&line);
    assert_eq!(event["fields"]["connections_accepted"], 2, "{line}");
    assert_eq!(event["fields"]["auth_failures"], 1, "{line}");

    // Every line the server wrote is a JSON object.
    for line in server.log() {
        assert!(json(&line).is_object(), "{line}");
    }
}
