//! Ending a user's sessions from the HTTP API: a kick closes them and the
//! SDK does not reconnect; a revocation also refuses the user's tokens
//! until a time, across a restart with the disk store.

use std::time::Duration;

use apm_client::{Client, Error, Event, ReconnectPolicy};
use apm_core::ErrorCode;
use apm_tests::{PATIENCE, SECRET, TestServer, now_ms, token};
use futures::StreamExt;
use serde_json::json;

fn with_tokens(c: &mut apm_server::Config) {
    c.secret = SECRET.to_owned();
}

async fn sdk(server: &TestServer, user: &str) -> Result<Client, Error> {
    Client::builder(server.addr.to_string())
        .credentials("", token(user, false, Duration::from_secs(3600)))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_attempts: None,
        })
        .connect()
        .await
}

/// The events up to `Closed`; fails if the client goes on.
async fn until_closed(events: &mut apm_client::Events) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("the client closes")
            .expect("events open");
        let closed = matches!(e, Event::Closed);
        seen.push(e);
        if closed {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_kicked_client_is_closed_and_does_not_reconnect() {
    let server = TestServer::start_http(with_tokens).await;
    let alice = sdk(&server, "alice").await.unwrap();
    let mut events = alice.events();
    let answer = server
        .http()
        .ok("disconnect", json!({ "user": "alice" }))
        .await;
    assert_eq!(answer["connections_closed"], 1);
    assert!(answer["revoked_until_ms"].is_null());
    let seen = until_closed(&mut events).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Disconnected { reason } if reason.contains("kicked"))),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| matches!(e, Event::Reconnected)));
    // A kick is not a ban: a new session may start.
    sdk(&server, "alice")
        .await
        .expect("a new session after a kick");
}

#[tokio::test]
async fn a_revoked_user_cannot_reconnect_until_the_revocation_ends() {
    let server = TestServer::start_http(with_tokens).await;
    let alice = sdk(&server, "alice").await.unwrap();
    let bob = sdk(&server, "bob").await.unwrap();
    let mut events = alice.events();
    let until = now_ms() + 1_500;
    let answer = server
        .http()
        .ok(
            "disconnect",
            json!({ "user": "alice", "revoke_until_ms": until }),
        )
        .await;
    assert_eq!(answer["revoked_until_ms"], until);
    let seen = until_closed(&mut events).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Disconnected { reason } if reason.contains("revoked"))),
        "{seen:?}"
    );
    // A fresh, valid token does not get in while the revocation runs.
    let refused = sdk(&server, "alice").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Revoked), "{refused}");
    assert!(
        refused.to_string().contains(&until.to_string()),
        "{refused}"
    );
    // Others are not affected.
    bob.ping().await.expect("bob stays connected");
    // Once it has ended, the user gets in again.
    tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()) + 50)).await;
    sdk(&server, "alice")
        .await
        .expect("in again after the revocation");
}

#[tokio::test]
async fn a_revocation_survives_a_restart_with_the_disk_store() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = |c: &mut apm_server::Config| {
        with_tokens(c);
        c.store = apm_server::StoreKind::Disk;
        c.data_dir = dir.path().to_owned();
    };
    let server = TestServer::start_http(on_disk).await;
    let until = now_ms() + 3_600_000;
    server
        .http()
        .ok(
            "disconnect",
            json!({ "user": "mallory", "revoke_until_ms": until }),
        )
        .await;
    server.stop().await;
    let server = TestServer::start_http(on_disk).await;
    let refused = sdk(&server, "mallory").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Revoked), "{refused}");
    // Lifting it (a time in the past) lets the user in.
    server
        .http()
        .ok(
            "disconnect",
            json!({ "user": "mallory", "revoke_until_ms": 0 }),
        )
        .await;
    sdk(&server, "mallory").await.expect("in once lifted");
}
