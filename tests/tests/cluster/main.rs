//! Cluster mode: several nodes over one Redis of the test's own. Every
//! conversation has one order whichever node its publishers and members
//! are on; private messages cross nodes; a client resumes on another node
//! than the one it left; a retry on another node is recognised.
//! `faults`: a node killed, Redis restarted, a feed gone deaf. `moving`:
//! clients moving between nodes, a node draining, a publisher faster
//! than Redis.

use std::time::Duration;

use apm_client::{Client, Event};
use apm_core::message::{Conversation, Publish, Sub};
use apm_core::{Flags, Message};
use apm_server::config::Config;
use apm_tests::redis::RedisServer;
use apm_tests::{Relay, TestServer, quick_sdk, quick_sdk_nodes};
use bytes::Bytes;
use futures::StreamExt;
use hyper::StatusCode;

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(apm_tests::PATIENCE, f)
        .await
        .expect("in time")
}

/// `n` nodes over `redis`.
async fn nodes(redis: &RedisServer, n: usize) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(node(redis, |_| {}).await);
    }
    nodes
}

/// A node over `redis`, with `tweak` applied to its settings.
async fn node(redis: &RedisServer, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let url = redis.url.clone();
    TestServer::start(|c| {
        c.cluster = url;
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn members_on_every_node_see_one_order_of_publishers_on_every_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 3).await;
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let c = quick_sdk(node.addr, &format!("member{i}{j}")).await;
            let sub = c.subscribe("room").await.unwrap();
            members.push((c, sub));
        }
    }
    const EACH: usize = 30;
    let mut publishers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let c = quick_sdk(node.addr, &format!("publisher{i}")).await;
        publishers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for k in 0..EACH {
                seqs.push(c.publish("room", format!("{i}-{k}")).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut receipted = Vec::new();
    for p in publishers {
        let seqs = p.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one publisher's order kept"
        );
        receipted.extend(seqs);
    }
    receipted.sort_unstable();
    let total = 3 * EACH;
    assert_eq!(receipted, (1..=total as u64).collect::<Vec<_>>());

    let mut orders = Vec::new();
    for (_, sub) in &mut members {
        let mut order = Vec::new();
        for _ in 0..total {
            let d = within(sub.next()).await.unwrap();
            order.push((d.seq, d.payload.clone()));
        }
        assert_eq!(
            order.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=total as u64).collect::<Vec<_>>(),
            "every seq once, in order"
        );
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "the same order everywhere"
    );
}

#[tokio::test]
async fn a_private_message_reaches_the_users_devices_and_the_senders_on_other_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 3).await;
    let alice_phone = quick_sdk(nodes[0].addr, "alice").await;
    let alice_laptop = quick_sdk(nodes[2].addr, "alice").await;
    let bob = quick_sdk(nodes[1].addr, "bob").await;
    let bob_tablet = quick_sdk(nodes[2].addr, "bob").await;
    let mut phone = alice_phone.messages().unwrap();
    let mut laptop = alice_laptop.messages().unwrap();
    let mut tablet = bob_tablet.messages().unwrap();
    let receipt = bob.send_to("alice", "hello").await.unwrap();
    for inbox in [&mut phone, &mut laptop, &mut tablet] {
        let d = within(inbox.next()).await.unwrap();
        assert_eq!(d.conversation, Conversation::User("alice".into()));
        assert_eq!(
            (d.seq, &*d.payload, &*d.sender),
            (receipt.seq, &b"hello"[..], "bob")
        );
    }
}

#[tokio::test]
async fn a_client_resumes_on_another_node_than_the_one_it_left() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let relay = Relay::start(nodes[0].addr).await;
    let reader = quick_sdk(relay.addr, "reader").await;
    let mut events = reader.events();
    let mut feed = reader.subscribe("feed").await.unwrap();
    let writer = quick_sdk(nodes[1].addr, "writer").await;
    for i in 1..=3 {
        writer.publish("feed", format!("m{i}")).await.unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(within(feed.next()).await.unwrap().seq, seq);
    }
    // The reader's node goes away; it comes back through the other one.
    relay.point_at(nodes[1].addr);
    relay.cut();
    loop {
        let e = within(events.next()).await.unwrap();
        if matches!(e, Event::Disconnected { .. }) {
            break;
        }
    }
    for i in 4..=8 {
        writer.publish("feed", format!("m{i}")).await.unwrap();
    }
    for seq in 4..=8 {
        let d = within(feed.next()).await.unwrap();
        assert_eq!((d.seq, &*d.payload), (seq, format!("m{seq}").as_bytes()));
    }
}

#[tokio::test]
async fn a_resume_reads_what_the_node_never_held_from_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let first = nodes(&redis, 1).await;
    let writer = quick_sdk(first[0].addr, "writer").await;
    for i in 1..=5 {
        writer.publish("log", format!("m{i}")).await.unwrap();
    }
    // A node started since has none of it in memory: it comes from Redis.
    let second = nodes(&redis, 1).await;
    let mut reader = second[0].client("reader").await;
    let ok = reader.sub_since("log", 2).await;
    assert_eq!((ok.seq, ok.oldest), (5, 3));
    for seq in 3..=5 {
        assert_eq!(reader.deliver().await.seq, seq);
    }
}

#[tokio::test]
async fn a_retry_sent_to_another_node_gets_the_first_copys_seq() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let publish = Message::Publish(Publish {
        channel: "orders".into(),
        kind: 0,
        msg_id: 77,
        payload: Bytes::from_static(b"once"),
    });
    let mut seqs = Vec::new();
    for node in &nodes {
        let mut c = node.client("shop").await;
        let id = c.send_flags(publish.clone(), Flags::RECEIPT).await;
        match c.reply_to(id).await {
            Message::Receipt(r) => seqs.push(r.seq),
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    assert_eq!(seqs, [1, 1]);
    let mut reader = nodes[1].client("reader").await;
    let id = reader
        .send(Message::Sub(Sub {
            channel: "orders".into(),
            since: Some(0),
        }))
        .await;
    let _ = reader.reply_to(id).await;
    assert_eq!(reader.deliver().await.seq, 1);
    // Nothing after it: the next frame is the answer to a ping.
    assert!(reader.round_trip().await.is_empty());
}

/// Publishes `text` with `msg_id` until a receipt comes: while Redis is
/// away the node refuses it, and a copy sent again is recognised.
#[tokio::test]
async fn a_read_position_taken_on_one_node_holds_on_every_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let phone = quick_sdk(nodes[0].addr, "reader").await;
    let laptop = quick_sdk(nodes[1].addr, "reader").await;
    let mut sub = phone.subscribe("room").await.unwrap();
    let _also = laptop.subscribe("room").await.unwrap();
    let publisher = quick_sdk(nodes[0].addr, "publisher").await;
    for k in 1..=5 {
        publisher.publish("room", format!("m{k}")).await.unwrap();
    }
    for _ in 1..=3 {
        within(sub.next()).await.unwrap();
    }
    phone
        .ack(Conversation::<String>::Channel("room".into()), 3)
        .await
        .unwrap();
    let room = || vec![Conversation::Channel("room".into())];
    // The laptop's node hears of it through Redis.
    within(async {
        loop {
            let counts = laptop.unread(room()).await.unwrap();
            if counts[0].acked == 3 {
                assert_eq!(counts[0].last, 5);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // A node that never held the room reads it from Redis.
    let later = node(&redis, |_| {}).await;
    let tablet = quick_sdk(later.addr, "reader").await;
    let counts = tablet.unread(room()).await.unwrap();
    assert_eq!((counts[0].acked, counts[0].last), (3, 5));
}

#[tokio::test]
async fn private_messages_sent_while_away_come_on_another_node_after_the_read_position() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let dave = quick_sdk(nodes[0].addr, "dave").await;
    let phone = quick_sdk(nodes[0].addr, "carol").await;
    let watch = quick_sdk(nodes[1].addr, "carol").await;
    let mut inbox = phone.messages().unwrap();
    let first = dave.send_to("carol", "one").await.unwrap();
    assert_eq!(within(inbox.next()).await.unwrap().seq, first.seq);
    phone.ack_inbox(first.seq).await.unwrap();
    let carol = || vec![Conversation::User("carol".into())];
    // Once the watch's node heard it, Redis has it.
    within(async {
        while watch.unread(carol()).await.unwrap()[0].acked < first.seq {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop((inbox, phone, watch));
    for text in ["two", "three"] {
        dave.send_to("carol", text).await.unwrap();
    }
    let later = node(&redis, |_| {}).await;
    let tablet = quick_sdk(later.addr, "carol").await;
    let mut inbox = tablet.messages().unwrap();
    for (seq, text) in [(first.seq + 1, "two"), (first.seq + 2, "three")] {
        let d = within(inbox.next()).await.unwrap();
        assert_eq!((d.seq, &d.payload[..]), (seq, text.as_bytes()));
    }
}

#[tokio::test]
async fn a_private_message_reaches_the_senders_device_on_a_node_without_the_recipient() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let alice = quick_sdk(nodes[0].addr, "alice").await;
    let bob = quick_sdk(nodes[0].addr, "bob").await;
    let bob_watch = quick_sdk(nodes[1].addr, "bob").await;
    let mut to_alice = alice.messages().unwrap();
    let mut watch = bob_watch.messages().unwrap();
    let receipt = bob.send_to("alice", "hello").await.unwrap();
    for inbox in [&mut to_alice, &mut watch] {
        let d = within(inbox.next()).await.unwrap();
        assert_eq!(d.conversation, Conversation::User("alice".into()));
        assert_eq!((d.seq, &*d.payload), (receipt.seq, &b"hello"[..]));
    }
}

#[tokio::test]
async fn history_read_from_redis_keeps_to_the_age_limit() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let first = node(&redis, |c| c.history_max_age_secs = 1).await;
    let publisher = quick_sdk(first.addr, "publisher").await;
    publisher.publish("aging", "old").await.unwrap();
    // The limit is about time passing: let the first message grow old.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    publisher.publish("aging", "new").await.unwrap();
    // A node that never held the channel reads its history from Redis.
    let later = node(&redis, |c| c.history_max_age_secs = 1).await;
    let reader = quick_sdk(later.addr, "reader").await;
    let page = reader
        .history(Conversation::Channel("aging".into()), None, None, 10)
        .await
        .unwrap();
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![2]);
}

mod faults;
mod instances;
mod moving;
mod presence;
