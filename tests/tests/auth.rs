//! The handshake: tokens, dev mode, and what a client cannot claim.

use std::time::Duration;

use apm_core::message::{Hello, Role};
use apm_core::{ErrorCode, Flags, Message};
use apm_tests::{Client, TestServer, token};

async fn refused(server: &TestServer, user: &str, token: &str) -> ErrorCode {
    let mut c = Client::connect(server.addr).await;
    let id = c
        .send(Message::Hello(Hello {
            user: user.into(),
            token: token.into(),
            client: "t".into(),
        }))
        .await;
    let f = c.recv().await;
    assert_eq!(f.request_id, id);
    let Message::Error(e) = f.message else {
        panic!("expected Error, got {f:?}");
    };
    c.expect_eof().await;
    e.code
}

#[tokio::test]
async fn token_failures() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let hour = Duration::from_secs(3600);
    assert_eq!(refused(&server, "bob", "").await, ErrorCode::AuthFailed);
    assert_eq!(
        refused(&server, "", "not-a-token").await,
        ErrorCode::AuthFailed
    );
    let forged = apm_server::auth::mint(b"some-other-secret-123", "bob", Role::Admin, hour);
    assert_eq!(refused(&server, "", &forged).await, ErrorCode::AuthFailed);
    let expired = token("bob", false, Duration::ZERO);
    assert_eq!(
        refused(&server, "", &expired).await,
        ErrorCode::TokenExpired
    );
    // A token for bob cannot be used to act as alice.
    let bobs = token("bob", false, hour);
    assert_eq!(
        refused(&server, "alice", &bobs).await,
        ErrorCode::AuthFailed
    );
    assert_eq!(
        server
            .metrics
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );

    let mut ok = Client::connect(server.addr).await;
    let w = ok.hello("bob", &bobs).await;
    assert_eq!((w.user.as_str(), w.role), ("bob", Role::User));
}

#[tokio::test]
async fn first_frame_must_be_hello() {
    let server = TestServer::start(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    c.send(Message::Ping).await;
    let f = c.recv().await;
    assert!(matches!(f.message, Message::Error(ref e) if e.code == ErrorCode::AuthRequired));
    c.expect_eof().await;
}

#[tokio::test]
async fn dev_mode_needs_a_user() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(refused(&server, "", "").await, ErrorCode::AuthFailed);
}

#[tokio::test]
async fn second_hello_is_a_violation() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.client("a").await;
    c.send(Message::Hello(Hello {
        user: "root".into(),
        token: String::new(),
        client: "t".into(),
    }))
    .await;
    let f = c.recv().await;
    assert!(matches!(f.message, Message::Error(ref e) if e.code == ErrorCode::UnexpectedMessage));
    c.expect_eof().await;
}

#[tokio::test]
async fn the_sender_is_always_the_authenticated_user() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let hour = Duration::from_secs(3600);
    let mut reader = Client::connect(server.addr).await;
    reader.hello("", &token("reader", false, hour)).await;
    reader.sub("c").await;
    let mut mallory = Client::connect(server.addr).await;
    mallory.hello("", &token("mallory", false, hour)).await;
    // The protocol has no sender field on the way in; the server stamps it.
    mallory.publish("c", "I am the admin", Flags::empty()).await;
    assert_eq!(reader.deliver().await.sender, "mallory");
    // Nor can a client push server-to-client frames.
    mallory
        .send(Message::Deliver(apm_core::message::Deliver {
            conversation: apm_core::message::Conversation::Channel("c".into()),
            seq: 99,
            ts_ms: 0,
            sender: "admin".into(),
            kind: 1,
            msg_id: 0,
            payload: bytes::Bytes::from_static(b"forged"),
        }))
        .await;
    let f = mallory.recv().await;
    assert!(matches!(f.message, Message::Error(ref e) if e.code == ErrorCode::UnexpectedMessage));
    mallory.expect_eof().await;
    assert!(reader.round_trip().await.is_empty());
}

#[tokio::test]
async fn handshake_timeout() {
    let server = TestServer::start(|c| c.handshake_timeout_ms = 150).await;
    let mut c = Client::connect(server.addr).await;
    let f = c.recv().await;
    assert!(matches!(f.message, Message::Error(ref e) if e.code == ErrorCode::HandshakeTimeout));
    c.expect_eof().await;
}

/// Hello and the first requests in one write: all answered without the
/// client sending anything more.
#[tokio::test]
async fn requests_pipelined_behind_hello_are_served() {
    let server = TestServer::start(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    let mut wire = bytes::BytesMut::new();
    let hello = Message::Hello(Hello {
        user: "eager".into(),
        token: String::new(),
        client: "t".into(),
    });
    apm_core::Frame::new(1, hello)
        .encode(&mut wire, u32::MAX)
        .unwrap();
    apm_core::Frame::new(2, Message::Ping)
        .encode(&mut wire, u32::MAX)
        .unwrap();
    c.send_raw(&wire).await;
    assert!(matches!(c.recv().await.message, Message::Welcome(_)));
    let pong = c.recv().await;
    assert_eq!((pong.request_id, pong.message), (2, Message::Pong));
}
