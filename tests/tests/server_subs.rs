//! Server-side subscriptions: a backend subscribes a user to a channel
//! through the HTTP API; every connection of the user that understands
//! `SERVER_SUBS` holds it now and after every later handshake, is told
//! with `ServerSub` / `ServerUnsub`, and the SDK yields its messages on a
//! stream of their own, resuming without a gap after a reconnect.

use apm_client::Event;
use apm_core::message::{Hello, SubOk, Unsub, UnsubOk};
use apm_core::{Capabilities, ErrorCode, Message};
use apm_tests::{Relay, TestServer, quick_sdk};
use futures::StreamExt;
use serde_json::json;

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(apm_tests::PATIENCE, f)
        .await
        .expect("in time")
}

async fn next_event(events: &mut apm_client::Events, want: impl Fn(&Event) -> bool) -> Event {
    loop {
        let e = within(events.next()).await.expect("events open");
        if want(&e) {
            return e;
        }
    }
}

fn subscribed(channel: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::ServerSubscribed { channel: c } if c == channel)
}

/// A raw session that says it understands server-side subscriptions.
async fn raw_session(server: &TestServer, user: &str) -> apm_tests::Client {
    let mut c = apm_tests::Client::connect(server.addr).await;
    let hello = Message::Hello(Hello {
        user: user.to_owned(),
        token: String::new(),
        client: "apm-tests".to_owned(),
    });
    c.send_flags(hello, Capabilities::SERVER_SUBS.to_flags())
        .await;
    let welcome = c.recv().await;
    assert!(matches!(welcome.message, Message::Welcome(_)));
    assert!(Capabilities::from_flags(welcome.flags).contains(Capabilities::SERVER_SUBS));
    c
}

async fn members(server: &TestServer, channel: &str) -> Vec<String> {
    let page = server
        .http()
        .ok("channel_members", json!({ "channel": channel }))
        .await;
    serde_json::from_value(page["users"].clone()).expect("a list of users")
}

#[tokio::test]
async fn a_backend_subscription_reaches_every_device_now_and_at_later_handshakes() {
    let server = TestServer::start_http(|_| {}).await;
    let api = server.http();
    let phone = quick_sdk(server.addr, "alice").await;
    let laptop = quick_sdk(server.addr, "alice").await;
    let (mut phone_events, mut laptop_events) = (phone.events(), laptop.events());
    let mut phone_msgs = phone.server_subscriptions().unwrap();
    let mut laptop_msgs = laptop.server_subscriptions().unwrap();

    let made = api
        .ok("subscribe", json!({ "user": "alice", "channel": "orders" }))
        .await;
    assert_eq!(made["changed"], true);
    assert_eq!(made["connections_told"], 2);
    next_event(&mut phone_events, subscribed("orders")).await;
    next_event(&mut laptop_events, subscribed("orders")).await;
    let again = api
        .ok("subscribe", json!({ "user": "alice", "channel": "orders" }))
        .await;
    assert_eq!(again["changed"], false, "subscribing twice changes nothing");

    api.ok("publish", json!({ "channel": "orders", "text": "shipped" }))
        .await;
    for msgs in [&mut phone_msgs, &mut laptop_msgs] {
        let d = within(msgs.next()).await.unwrap();
        assert_eq!((&*d.payload, d.seq), (&b"shipped"[..], 1));
    }

    // A device that connects later holds it from its handshake on.
    let tablet = quick_sdk(server.addr, "alice").await;
    let mut tablet_events = tablet.events();
    let mut tablet_msgs = tablet.server_subscriptions().unwrap();
    api.ok(
        "publish",
        json!({ "channel": "orders", "text": "delivered" }),
    )
    .await;
    let d = within(tablet_msgs.next()).await.unwrap();
    assert_eq!((&*d.payload, d.seq), (&b"delivered"[..], 2));
    // Another user is not subscribed.
    assert_eq!(members(&server, "orders").await, vec!["alice".to_owned()]);
    let listed = api.ok("subscriptions", json!({ "user": "alice" })).await;
    assert_eq!(listed["channels"], json!(["orders"]));

    // The SDK cannot end it; the backend can, on every device.
    let refused = phone.unsubscribe("orders").await.unwrap_err();
    assert!(
        matches!(
            refused,
            apm_client::Error::Server {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{refused:?}"
    );
    let ended = api
        .ok(
            "unsubscribe",
            json!({ "user": "alice", "channel": "orders" }),
        )
        .await;
    assert_eq!(
        (ended["changed"].clone(), ended["connections_told"].clone()),
        (json!(true), json!(3))
    );
    for events in [&mut phone_events, &mut laptop_events, &mut tablet_events] {
        next_event(
            events,
            |e| matches!(e, Event::ServerUnsubscribed { channel } if channel == "orders"),
        )
        .await;
    }
    // Each device was told once it had left: the channel has no members.
    assert!(members(&server, "orders").await.is_empty());
    let listed = api.ok("subscriptions", json!({ "user": "alice" })).await;
    assert_eq!(listed["channels"], json!([]));
}

#[tokio::test]
async fn the_server_says_so_with_its_own_frames_and_only_to_clients_that_understand_them() {
    let server = TestServer::start_http(|_| {}).await;
    let api = server.http();
    let mut new = raw_session(&server, "bob").await;
    // A client of version 1 (no capabilities) is left out.
    let mut old = server.client("bob").await;
    api.ok("subscribe", json!({ "user": "bob", "channel": "alerts" }))
        .await;
    let notice = new.recv().await;
    assert_eq!(notice.request_id, 0);
    assert_eq!(
        notice.message,
        Message::ServerSub(SubOk {
            channel: "alerts".into(),
            seq: 0,
            oldest: 1,
        })
    );
    assert_eq!(members(&server, "alerts").await, vec!["bob".to_owned()]);
    // The old client hears nothing of it: its next frame is its own Pong.
    let replies = old.round_trip().await;
    assert!(replies.is_empty(), "{replies:?}");

    // A client's Unsub of it is refused; the connection stays.
    let id = new
        .send(Message::Unsub(Unsub {
            channel: "alerts".into(),
        }))
        .await;
    match new.reply_to(id).await {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden),
        other => panic!("expected Forbidden, got {other:?}"),
    }
    api.ok("unsubscribe", json!({ "user": "bob", "channel": "alerts" }))
        .await;
    let notice = new.recv().await;
    assert_eq!(
        (notice.request_id, notice.message),
        (
            0,
            Message::ServerUnsub(UnsubOk {
                channel: "alerts".into()
            })
        )
    );
}

#[tokio::test]
async fn bad_calls_are_refused_with_a_reason() {
    let server = TestServer::start_http(|c| c.max_subscriptions = 2).await;
    let api = server.http();
    for (params, why) in [
        (
            json!({ "user": "$api/x", "channel": "a" }),
            "server's own user",
        ),
        (
            json!({ "user": "carol", "channel": "$presence" }),
            "system channel",
        ),
        (json!({ "user": "", "channel": "a" }), "empty user"),
        (json!({ "user": "carol" }), "no channel"),
    ] {
        let answer = api.call("subscribe", params).await;
        assert_eq!(answer.status, 400, "{why}: {}", answer.text());
    }
    for channel in ["a", "b"] {
        api.ok("subscribe", json!({ "user": "carol", "channel": channel }))
            .await;
    }
    let full = api
        .call("subscribe", json!({ "user": "carol", "channel": "c" }))
        .await;
    assert_eq!(full.status, 409, "{}", full.text());
    assert_eq!(full.error_code(), "too_many_subscriptions");
}

#[tokio::test]
async fn a_server_subscription_opens_a_members_only_channel() {
    let server = TestServer::start_http(|c| {
        c.channel_rules = vec!["team.*=members".into()];
    })
    .await;
    let api = server.http();
    let dave = quick_sdk(server.addr, "dave").await;
    let refused = dave.subscribe("team.red").await.unwrap_err();
    assert!(matches!(
        refused,
        apm_client::Error::Server {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let mut events = dave.events();
    let mut msgs = dave.server_subscriptions().unwrap();
    api.ok(
        "subscribe",
        json!({ "user": "dave", "channel": "team.red" }),
    )
    .await;
    next_event(&mut events, subscribed("team.red")).await;
    // A member now: it may publish there and read its history.
    let receipt = dave.publish("team.red", "on it").await.unwrap();
    api.ok(
        "publish",
        json!({ "channel": "team.red", "text": "thanks" }),
    )
    .await;
    let d = within(msgs.next()).await.unwrap();
    assert_eq!((&*d.payload, d.seq), (&b"thanks"[..], receipt.seq + 1));
    let page = dave
        .history(
            apm_core::message::Conversation::Channel("team.red".into()),
            None,
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2);
}

#[tokio::test]
async fn a_reconnecting_device_resumes_without_a_gap_or_a_duplicate() {
    let server = TestServer::start_http(|_| {}).await;
    let api = server.http();
    let relay = Relay::start(server.addr).await;
    let erin = quick_sdk(relay.addr, "erin").await;
    let mut events = erin.events();
    let mut msgs = erin.server_subscriptions().unwrap();
    api.ok("subscribe", json!({ "user": "erin", "channel": "feed" }))
        .await;
    next_event(&mut events, subscribed("feed")).await;
    let publish = |i: u64| {
        let api = server.http();
        async move {
            api.ok(
                "publish",
                json!({ "channel": "feed", "text": format!("m{i}") }),
            )
            .await
        }
    };
    for i in 1..=3 {
        publish(i).await;
    }
    for seq in 1..=3 {
        assert_eq!(within(msgs.next()).await.unwrap().seq, seq);
    }
    relay.cut();
    next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    for i in 4..=8 {
        publish(i).await;
    }
    next_event(&mut events, |e| matches!(e, Event::Reconnected)).await;
    publish(9).await;
    for seq in 4..=9 {
        let d = within(msgs.next()).await.unwrap();
        assert_eq!(d.seq, seq, "in order, once each");
        assert_eq!(&*d.payload, format!("m{seq}").as_bytes());
    }
}

#[tokio::test]
async fn subscriptions_are_kept_in_the_store_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |c: &mut apm_server::Config| {
        c.store = apm_server::StoreKind::Disk;
        c.data_dir = dir.path().to_owned();
    };
    let first = TestServer::start_http(settings).await;
    first
        .http()
        .ok("subscribe", json!({ "user": "fay", "channel": "billing" }))
        .await;
    first.stop().await;

    let second = TestServer::start_http(settings).await;
    let fay = quick_sdk(second.addr, "fay").await;
    let mut msgs = fay.server_subscriptions().unwrap();
    second
        .http()
        .ok(
            "publish",
            json!({ "channel": "billing", "text": "invoice" }),
        )
        .await;
    let d = within(msgs.next()).await.unwrap();
    assert_eq!(&*d.payload, b"invoice");
}
