//! Message rate limits: a flood is refused with `rate_limited` and a
//! retry hint while others' messages all arrive, the SDK waits and sends
//! again, a retry of a message already taken is not counted, admins have
//! their own limit.

use std::time::Duration;

use apm_client::{Client as Sdk, ErrorCode as SdkCode};
use apm_core::message::Publish;
use apm_core::{ErrorCode, Flags, Message};
use apm_server::Config;
use apm_tests::{Client, TestServer, token};
use bytes::Bytes;

/// The `N` of an error text's closing `retry after N ms`.
fn retry_after_ms(text: &str) -> u64 {
    text.strip_suffix(" ms")
        .and_then(|t| t.rsplit_once("retry after "))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry hint in {text:?}"))
}

fn publish(channel: &str, msg_id: u64, text: &str) -> Message {
    Message::Publish(Publish {
        channel: channel.into(),
        kind: apm_core::message::content_kind::TEXT,
        msg_id,
        payload: Bytes::copy_from_slice(text.as_bytes()),
    })
}

/// Publishes with a receipt and returns the answer.
async fn publish_receipted(c: &mut Client, channel: &str, msg_id: u64) -> Message {
    let id = c
        .send_flags(publish(channel, msg_id, "x"), Flags::RECEIPT)
        .await;
    c.reply_to(id).await
}

fn limits(c: &mut Config) {
    c.rate_limit_connection = "off".into();
    c.rate_limit_user = "40:40".into();
    c.rate_limit_channel = "10:10".into();
}

#[tokio::test]
async fn a_flood_is_refused_and_a_bystander_is_not_starved() {
    let server = TestServer::start(limits).await;
    let mut reader = server.client("reader").await;
    reader.sub("room").await;
    let mut flooder = server.client("flooder").await;
    let mut bystander = server.client("bystander").await;

    // 300 messages at once: far over 10 a second into one channel.
    const FLOOD: usize = 300;
    let mut ids = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let msg = publish("room", 0, &format!("flood {i}"));
        ids.push(flooder.send_flags(msg, Flags::RECEIPT).await);
    }
    // Meanwhile the bystander sends its ten, within its own limits.
    for i in 0..10 {
        bystander
            .publish("room", &format!("mine {i}"), Flags::empty())
            .await;
    }
    // Refusals come from the connection's task at once, receipts from the
    // shard: the answers are in no particular order.
    let mut waiting: std::collections::HashSet<u32> = ids.into_iter().collect();
    let (mut taken, mut refused) = (0, 0);
    while !waiting.is_empty() {
        let f = flooder.recv().await;
        assert!(waiting.remove(&f.request_id), "{f:?}");
        match f.message {
            Message::Receipt(_) => taken += 1,
            Message::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited, "{}", e.message);
                assert!(
                    e.message.contains("per user into this channel"),
                    "{}",
                    e.message
                );
                let ms = retry_after_ms(&e.message);
                assert!((1..=1000).contains(&ms), "{}", e.message);
                refused += 1;
            }
            other => panic!("expected Receipt or Error, got {other:?}"),
        }
    }
    assert!(
        taken >= 10 && refused >= FLOOD / 2,
        "{taken} taken, {refused} refused"
    );
    // Not fatal: the flooder's connection still answers.
    assert!(flooder.round_trip().await.is_empty());

    // Every one of the bystander's messages arrives, in order, among the
    // flood's that were taken.
    let mut mine = Vec::new();
    let mut flood_seen = 0;
    while mine.len() < 10 {
        let d = reader.deliver().await;
        match &*d.sender {
            "bystander" => mine.push(String::from_utf8(d.payload.to_vec()).unwrap()),
            _ => flood_seen += 1,
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("mine {i}")).collect();
    assert_eq!(mine, expected);
    assert!(flood_seen <= taken);
    assert_eq!(
        apm_server::Metrics::get(&server.metrics.rate_limited),
        refused as u64
    );
}

#[tokio::test]
async fn a_users_connections_share_its_limit() {
    let server = TestServer::start(|c| {
        c.rate_limit_user = "1:5".into();
        c.rate_limit_channel = "off".into();
    })
    .await;
    let mut phone = server.client("alice").await;
    let mut laptop = server.client("alice").await;
    let mut taken = 0;
    for i in 0..20 {
        let c = if i % 2 == 0 { &mut phone } else { &mut laptop };
        if let Message::Receipt(_) = publish_receipted(c, &format!("ch{i}"), 0).await {
            taken += 1;
        }
    }
    // Five at once and one a second after: ten or more would mean each
    // connection had its own five.
    assert!((5..10).contains(&taken), "{taken}");
}

#[tokio::test]
async fn a_retry_of_a_message_taken_is_not_counted() {
    let server = TestServer::start(|c| c.rate_limit_channel = "1:1".into()).await;
    let mut first = server.client("alice").await;
    let Message::Receipt(receipt) = publish_receipted(&mut first, "room", 42).await else {
        panic!("the first message is within the limit");
    };
    // The connection drops before the receipt is read; the client sends
    // the same message again on a new one, and gets the first receipt.
    drop(first);
    let mut second = server.client("alice").await;
    match publish_receipted(&mut second, "room", 42).await {
        Message::Receipt(again) => assert_eq!(again, receipt),
        other => panic!("expected the first receipt, got {other:?}"),
    }
    // A new message is counted: the channel's one a second is spent.
    match publish_receipted(&mut second, "room", 43).await {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::RateLimited),
        other => panic!("expected rate_limited, got {other:?}"),
    }
}

#[tokio::test]
async fn admins_have_a_limit_of_their_own() {
    let server = TestServer::start_with_tokens(|c| {
        c.rate_limit_user = "1:1".into();
        c.rate_limit_admin = "100:100".into();
    })
    .await;
    let hour = Duration::from_secs(3600);
    let mut user = Client::connect(server.addr).await;
    user.hello("", &token("bob", false, hour)).await;
    let mut admin = Client::connect(server.addr).await;
    admin.hello("", &token("ops", true, hour)).await;
    for i in 0..20 {
        let answer = publish_receipted(&mut admin, &format!("ch{}", i % 2), 0).await;
        assert!(matches!(answer, Message::Receipt(_)), "{answer:?}");
    }
    assert!(matches!(
        publish_receipted(&mut user, "ch0", 0).await,
        Message::Receipt(_)
    ));
    assert!(matches!(
        publish_receipted(&mut user, "ch1", 0).await,
        Message::Error(e) if e.code == ErrorCode::RateLimited
    ));
}

#[tokio::test]
async fn the_sdk_waits_and_sends_again() {
    let server = TestServer::start(|c| c.rate_limit_channel = "5:1".into()).await;
    let sdk = Sdk::builder(server.addr.to_string())
        .credentials("alice", "")
        .connect()
        .await
        .unwrap();
    let mut reader = server.client("reader").await;
    reader.sub("room").await;
    let mut receipts: Vec<apm_client::Receipt> = Vec::new();
    for text in ["one", "two", "three"] {
        receipts.push(sdk.publish("room", text).await.expect("sent in the end"));
    }
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    // It was refused on the way, and every message arrived once.
    assert!(apm_server::Metrics::get(&server.metrics.rate_limited) >= 2);
    for text in ["one", "two", "three"] {
        assert_eq!(&reader.deliver().await.payload[..], text.as_bytes());
    }
}

#[tokio::test]
async fn the_sdk_gives_up_when_the_wait_passes_its_give_up_time() {
    let server = TestServer::start(|c| c.rate_limit_channel = "1:1".into()).await;
    let sdk = Sdk::builder(server.addr.to_string())
        .credentials("alice", "")
        .give_up_after(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    sdk.publish("room", "one").await.unwrap();
    let e = sdk.publish("room", "two").await.unwrap_err();
    assert_eq!(e.code(), Some(SdkCode::RateLimited), "{e}");
    assert!(e.retry_after().unwrap() > Duration::from_millis(300), "{e}");
}
