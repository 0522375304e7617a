//! Channels, private messages and broadcast through a real server.

use std::time::Duration;

use apm_core::message::{Conversation, Direct, Receipt, Unsub};
use apm_core::{ErrorCode, Flags, Message};
use apm_tests::{Client, TestServer, token};
use bytes::Bytes;

#[tokio::test]
async fn sub_then_publish_on_one_connection_is_ordered() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.client("alice").await;
    // Sent back to back, no waiting: the Sub must take effect first.
    a.send(Message::Sub(apm_core::message::Sub {
        channel: "room".into(),
        since: None,
    }))
    .await;
    a.publish("room", "first", Flags::ECHO).await;
    let mut saw_sub_ok = false;
    loop {
        let f = a.recv().await;
        match f.message {
            Message::SubOk(ok) => {
                assert_eq!(ok.seq, 0);
                saw_sub_ok = true;
            }
            Message::PresenceEvent(_) => {}
            Message::Deliver(d) => {
                assert!(saw_sub_ok, "Deliver before SubOk");
                assert_eq!(d.payload, Bytes::from_static(b"first"));
                assert_eq!(d.seq, 1);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn members_see_every_message_in_seq_order() {
    let server = TestServer::start(|_| {}).await;
    let mut subs = Vec::new();
    for i in 0..5 {
        let mut c = server.client(&format!("reader{i}")).await;
        c.sub("news").await;
        subs.push(c);
    }
    let mut p = server.client("writer").await;
    for i in 0..200 {
        p.publish("news", &format!("m{i}"), Flags::empty()).await;
    }
    for c in &mut subs {
        for i in 0..200u64 {
            let d = c.deliver().await;
            assert_eq!(d.seq, i + 1);
            assert_eq!(d.sender, "writer");
            assert_eq!(d.conversation, Conversation::Channel("news".into()));
            assert_eq!(d.payload, Bytes::from(format!("m{i}")));
        }
    }
}

#[tokio::test]
async fn unsub_stops_delivery() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    let mut p = server.client("p").await;
    a.sub("ch").await;
    b.sub("ch").await;
    let id = a
        .send(Message::Unsub(Unsub {
            channel: "ch".into(),
        }))
        .await;
    loop {
        let f = a.recv().await;
        if f.request_id == id {
            assert!(matches!(f.message, Message::UnsubOk(_)));
            break;
        }
    }
    p.publish("ch", "x", Flags::empty()).await;
    p.publish("ch", "y", Flags::empty()).await;
    assert_eq!(b.deliver().await.seq, 1);
    assert_eq!(b.deliver().await.seq, 2);
    // Both publishes are sequenced. Whatever the shard had queued for `a`
    // would come before the reply to a new Sub, which goes through the same
    // loop.
    let ok = a.sub("ch").await;
    assert_eq!(ok.seq, 2);
    let before = a.round_trip().await;
    assert!(
        before
            .iter()
            .all(|f| !matches!(f.message, Message::Deliver(_))),
        "delivered after unsub: {before:?}"
    );
}

#[tokio::test]
async fn echo_rules() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.client("a").await;
    a.sub("e").await;
    a.publish("e", "quiet", Flags::RECEIPT).await;
    // The receipt proves the publish was sequenced; no echo came first.
    let f = a.recv().await;
    assert!(matches!(f.message, Message::Receipt(_)), "got {f:?}");
    a.publish("e", "loud", Flags::ECHO).await;
    let d = a.deliver().await;
    assert_eq!((d.seq, d.payload), (2, Bytes::from_static(b"loud")));

    let echoing = TestServer::start(|c| c.echo = true).await;
    let mut b = echoing.client("b").await;
    b.sub("e").await;
    b.publish("e", "back", Flags::empty()).await;
    assert_eq!(b.deliver().await.payload, Bytes::from_static(b"back"));
}

#[tokio::test]
async fn receipt_carries_the_assigned_seq() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.client("a").await;
    for expected in 1..=3u64 {
        let id = a.publish("r", "x", Flags::RECEIPT).await;
        let f = a.recv().await;
        assert_eq!(f.request_id, id);
        let Message::Receipt(Receipt {
            conversation, seq, ..
        }) = f.message
        else {
            panic!("expected Receipt, got {f:?}");
        };
        assert_eq!(conversation, Conversation::Channel("r".into()));
        assert_eq!(seq, expected);
    }
}

#[tokio::test]
async fn direct_reaches_every_device_and_the_senders_others() {
    let server = TestServer::start(|_| {}).await;
    let mut bob = Vec::new();
    for _ in 0..3 {
        bob.push(server.client("bob").await);
    }
    let mut alice1 = server.client("alice").await;
    let mut alice2 = server.client("alice").await;
    let id = alice1
        .send_flags(
            Message::Direct(Direct {
                user: "bob".into(),
                kind: 1,
                msg_id: 5,
                payload: Bytes::from_static(b"psst"),
            }),
            Flags::RECEIPT,
        )
        .await;
    for device in bob.iter_mut().chain(std::iter::once(&mut alice2)) {
        let d = device.deliver().await;
        assert_eq!(d.conversation, Conversation::User("bob".into()));
        assert_eq!(d.sender, "alice");
        assert_eq!((d.seq, d.msg_id), (1, 5));
        assert_eq!(d.payload, Bytes::from_static(b"psst"));
    }
    let f = alice1.recv().await;
    assert_eq!(f.request_id, id);
    assert!(matches!(
        f.message,
        Message::Receipt(Receipt { seq: 1, .. })
    ));
    // alice1 got no copy of its own message.
    assert!(alice1.round_trip().await.is_empty());
}

#[tokio::test]
async fn broadcast_needs_admin_and_reaches_everyone() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let hour = Duration::from_secs(3600);
    let mut admin = Client::connect(server.addr).await;
    admin.hello("", &token("ops", true, hour)).await;
    let mut plain = Client::connect(server.addr).await;
    plain.hello("", &token("joe", false, hour)).await;
    let mut others = Vec::new();
    for i in 0..4 {
        let mut c = Client::connect(server.addr).await;
        c.hello("", &token(&format!("u{i}"), false, hour)).await;
        others.push(c);
    }

    let id = plain
        .send(Message::Broadcast(apm_core::message::Broadcast {
            kind: 1,
            msg_id: 0,
            payload: Bytes::from_static(b"nope"),
        }))
        .await;
    let f = plain.recv().await;
    assert_eq!(f.request_id, id);
    assert!(matches!(f.message, Message::Error(ref e) if e.code == ErrorCode::Forbidden));
    // Forbidden is not fatal.
    assert!(plain.round_trip().await.is_empty());

    admin
        .send(Message::Broadcast(apm_core::message::Broadcast {
            kind: 1,
            msg_id: 0,
            payload: Bytes::from_static(b"all hands"),
        }))
        .await;
    for c in others.iter_mut().chain(std::iter::once(&mut plain)) {
        let d = c.deliver().await;
        assert_eq!(d.conversation, Conversation::Broadcast);
        assert_eq!(d.sender, "ops");
        assert_eq!(d.seq, 1);
    }
}

#[tokio::test]
async fn system_channels_are_read_only() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.client("a").await;
    let id = a.publish("$presence", "fake", Flags::empty()).await;
    let f = a.recv().await;
    assert_eq!(f.request_id, id);
    assert!(matches!(f.message, Message::Error(ref e) if e.code == ErrorCode::Forbidden));
}

async fn publish_id(c: &mut Client, channel: &str, msg_id: u64, text: &str) -> Receipt {
    let id = c
        .send_flags(
            Message::Publish(apm_core::message::Publish {
                channel: channel.into(),
                kind: 1,
                msg_id,
                payload: Bytes::copy_from_slice(text.as_bytes()),
            }),
            Flags::RECEIPT,
        )
        .await;
    match c.reply_to(id).await {
        Message::Receipt(r) => r,
        other => panic!("expected Receipt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_retry_with_the_same_msg_id_is_not_stored_twice() {
    let server = TestServer::start(|_| {}).await;
    let mut reader = server.client("reader").await;
    reader.sub("room").await;
    let mut alice = server.client("alice").await;
    let first = publish_id(&mut alice, "room", 42, "hello").await;
    let retry = publish_id(&mut alice, "room", 42, "hello").await;
    assert_eq!((first.seq, retry.seq), (1, 1));
    assert_eq!(retry.ts_ms, first.ts_ms);
    // The same id from another user, or from alice's other device after a
    // new id, is a new message.
    let mut bob = server.client("bob").await;
    assert_eq!(publish_id(&mut bob, "room", 42, "bob's").await.seq, 2);
    let mut phone = server.client("alice").await;
    assert_eq!(publish_id(&mut phone, "room", 42, "hello").await.seq, 1);
    assert_eq!(publish_id(&mut phone, "room", 43, "next").await.seq, 3);
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = reader.deliver().await;
        got.push((d.seq, d.payload));
    }
    assert_eq!(
        got,
        [
            (1, Bytes::from("hello")),
            (2, Bytes::from("bob's")),
            (3, Bytes::from("next"))
        ]
    );
    // Nothing else was delivered: the round trip comes back empty-handed.
    assert!(reader.round_trip().await.is_empty());
    assert_eq!(
        server
            .metrics
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
