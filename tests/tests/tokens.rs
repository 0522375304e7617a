//! Token lifetimes during a session: expiry closes it, `Refresh` keeps it
//! open, the SDK refreshes through the app's callback; and who may send
//! private messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use apm_core::message::{Direct, Hello, Refresh, RefreshOk};
use apm_core::{Capabilities, ErrorCode, Flags, Frame, Message};
use apm_server::config::DirectMessages;
use apm_tests::{Client, PATIENCE, TestServer, now_ms, token};
use bytes::Bytes;

/// A raw client past a handshake that announced `capabilities`; answers
/// the Welcome's flags.
async fn hello_with(server: &TestServer, token: &str, capabilities: Flags) -> (Client, Flags) {
    let mut c = Client::connect(server.addr).await;
    let id = c
        .send_flags(
            Message::Hello(Hello {
                user: String::new(),
                token: token.to_owned(),
                client: "t".into(),
            }),
            capabilities,
        )
        .await;
    let f = c.recv().await;
    assert_eq!(f.request_id, id);
    assert!(matches!(f.message, Message::Welcome(_)), "{f:?}");
    (c, f.flags)
}

/// The next frame that is not a presence event.
async fn next_frame(c: &mut Client) -> Option<Frame> {
    loop {
        let f = c.next().await?;
        if !matches!(f.message, Message::PresenceEvent(_)) {
            return Some(f);
        }
    }
}

#[tokio::test]
async fn capabilities_are_granted_only_to_clients_that_ask() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let t = token("alice", false, Duration::from_secs(3600));
    let (_, granted) = hello_with(&server, &t, Capabilities::ALL.to_flags()).await;
    assert!(Capabilities::from_flags(granted).contains(Capabilities::TOKEN_REFRESH));
    let (_, granted) = hello_with(&server, &t, Flags::empty()).await;
    assert_eq!(granted, Flags::empty());
    // Bits no one has defined are not echoed back.
    let (_, granted) = hello_with(&server, &t, Flags::from_bits(0x8000)).await;
    assert_eq!(granted, Flags::empty());
}

#[tokio::test]
async fn a_session_closes_when_its_token_expires() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    // Expiry counts whole seconds: this one ends within 2 s.
    let t = token("alice", false, Duration::from_secs(1));
    let (mut c, _) = hello_with(&server, &t, Flags::empty()).await;
    let f = next_frame(&mut c).await.expect("a Close before the end");
    let Message::Close(close) = f.message else {
        panic!("expected Close, got {f:?}");
    };
    assert_eq!(close.code, ErrorCode::TokenExpired);
    c.expect_eof().await;
}

#[tokio::test]
async fn a_refresh_moves_the_expiry_and_a_foreign_token_is_refused() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let short = token("alice", false, Duration::from_secs(1));
    let (mut c, _) = hello_with(&server, &short, Capabilities::ALL.to_flags()).await;
    let long = token("alice", false, Duration::from_secs(3600));
    let exp = apm_server::auth::verify(apm_tests::SECRET.as_bytes(), &long)
        .expect("valid")
        .exp;
    let id = c.send(Message::Refresh(Refresh { token: long })).await;
    let f = next_frame(&mut c).await.expect("an answer");
    assert_eq!(f.request_id, id);
    assert_eq!(f.message, Message::RefreshOk(RefreshOk { exp }));
    // Past the first token's expiry the session goes on.
    let first_exp = apm_server::auth::verify(apm_tests::SECRET.as_bytes(), &short)
        .map(|c| c.exp)
        .unwrap_or(0);
    let wait = (first_exp * 1000 + 100).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let id = c.send(Message::Ping).await;
    let f = next_frame(&mut c).await.expect("still open");
    assert_eq!((f.request_id, f.message), (id, Message::Pong));

    // Bob's token cannot extend Alice's session.
    let bobs = token("bob", false, Duration::from_secs(3600));
    let id = c.send(Message::Refresh(Refresh { token: bobs })).await;
    let f = next_frame(&mut c).await.expect("an answer");
    assert_eq!(f.request_id, id);
    let Message::Error(e) = f.message else {
        panic!("expected Error, got {f:?}");
    };
    assert_eq!(e.code, ErrorCode::AuthFailed);
    c.expect_eof().await;
}

#[tokio::test]
async fn the_sdk_refreshes_through_the_app_callback_and_keeps_its_session() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let calls = Arc::new(AtomicU32::new(0));
    let (fetched_tx, mut fetched) = tokio::sync::mpsc::unbounded_channel();
    let counter = calls.clone();
    // The first token lasts 2 s, every later one an hour.
    let client = apm_client::Client::builder(server.addr.to_string())
        .token_refresh(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let fetched_tx = fetched_tx.clone();
            async move {
                let ttl = if n == 0 { 2 } else { 3600 };
                let _ = fetched_tx.send(n);
                Ok(token("alice", false, Duration::from_secs(ttl)))
            }
        })
        .connect()
        .await
        .expect("connect with a token from the callback");
    assert_eq!(fetched.recv().await, Some(0));
    let session = client.session_id();
    // The second call is the refresh, a second or so before expiry.
    let n = tokio::time::timeout(PATIENCE, fetched.recv())
        .await
        .expect("a refresh before the token ran out");
    assert_eq!(n, Some(1));
    // Until the server took it, the session's expiry is the first
    // token's: wait for that, and the session must still be the first.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut sub = client.subscribe("after-expiry").await.expect("subscribe");
    client
        .publish_with(
            "after-expiry",
            Bytes::from_static(b"still here"),
            apm_client::SendOptions {
                echo: true,
                ..Default::default()
            },
        )
        .await
        .expect("publish");
    let got = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut sub))
        .await
        .expect("delivered")
        .expect("open");
    assert_eq!(&got.payload[..], b"still here");
    assert_eq!(client.session_id(), session, "the session was never lost");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn private_messages_follow_the_servers_rule() {
    for (rule, user_may, admin_may) in [
        (DirectMessages::Anyone, true, true),
        (DirectMessages::Admins, false, true),
        (DirectMessages::Off, false, false),
    ] {
        let server = TestServer::start_with_tokens(|c| c.direct_messages = rule).await;
        let hour = Duration::from_secs(3600);
        for (admin, allowed) in [(false, user_may), (true, admin_may)] {
            let mut c = Client::connect(server.addr).await;
            c.hello("", &token("sender", admin, hour)).await;
            let id = c
                .send_flags(
                    Message::Direct(Direct {
                        user: "bob".into(),
                        kind: 1,
                        msg_id: 0,
                        payload: Bytes::from_static(b"hi"),
                    }),
                    Flags::RECEIPT,
                )
                .await;
            let f = next_frame(&mut c).await.expect("an answer");
            assert_eq!(f.request_id, id);
            match f.message {
                Message::Receipt(_) => assert!(allowed, "{rule:?} let admin={admin} send"),
                Message::Error(e) => {
                    assert!(!allowed, "{rule:?} refused admin={admin}: {e:?}");
                    assert_eq!(e.code, ErrorCode::Forbidden);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
