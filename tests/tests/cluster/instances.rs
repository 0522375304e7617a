//! Conversations spread over several Redis instances: each lives on one,
//! keeps one order whichever node its publishers and members are on, and
//! presence (on the first instance) still spans the nodes.

use std::collections::BTreeSet;

use apm_server::config::Config;

use super::*;

/// The conversations whose streams `redis` holds (`#CHANNEL`, `@USER`).
async fn streams(redis: &RedisServer) -> BTreeSet<String> {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("apm:{*}:log")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.iter()
        .filter_map(|k| k.strip_prefix("apm:{")?.strip_suffix("}:log"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn conversations_spread_over_three_redis_instances_keep_one_order_each() {
    let mut instances = Vec::new();
    for _ in 0..3 {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        instances.push(redis);
    }
    let urls: Vec<&str> = instances.iter().map(|r| r.url.as_str()).collect();
    let urls = urls.join(",");
    let on = |c: &mut Config| c.cluster = urls.clone();
    let (a, b) = (TestServer::start(on).await, TestServer::start(on).await);

    const CHANNELS: usize = 12;
    const EACH: usize = 8;
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("room.{i}")).collect();
    let mut members = Vec::new();
    for (node, user) in [(&a, "member-a"), (&b, "member-b")] {
        let c = quick_sdk(node.addr, user).await;
        let mut subs = Vec::new();
        for ch in &channels {
            subs.push(c.subscribe(ch).await.unwrap());
        }
        members.push((c, subs));
    }
    let mut publishers = Vec::new();
    for (node, user) in [(&a, "pub-a"), (&b, "pub-b")] {
        let c = quick_sdk(node.addr, user).await;
        let channels = channels.clone();
        publishers.push(tokio::spawn(async move {
            let sends = channels
                .iter()
                .flat_map(|ch| (0..EACH).map(|k| c.publish(ch, format!("{user}-{k}"))));
            futures::future::join_all(sends).await
        }));
    }
    for p in publishers {
        for receipt in p.await.unwrap() {
            receipt.unwrap();
        }
    }
    let mut orders = Vec::new();
    for (_, subs) in &mut members {
        let mut order = Vec::new();
        for sub in subs.iter_mut() {
            for seq in 1..=2 * EACH as u64 {
                let d = within(sub.next()).await.unwrap();
                assert_eq!(d.seq, seq, "every seq once, in order");
                order.push(d.payload.clone());
            }
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "the same order on both nodes");

    // A private message across nodes, in an inbox on its own instance.
    let receipt = members[0].0.send_to("member-b", "hi").await.unwrap();
    let mut inbox = members[1].0.messages().unwrap();
    assert_eq!(within(inbox.next()).await.unwrap().seq, receipt.seq);

    // Every instance holds some of the conversations, and no two the same.
    let mut seen = BTreeSet::new();
    for redis in &instances {
        let held = streams(redis).await;
        assert!(!held.is_empty(), "an instance holds nothing");
        assert!(held.is_disjoint(&seen), "a conversation on two instances");
        seen.extend(held);
    }
    assert_eq!(seen.len(), CHANNELS + 1, "{seen:?}");

    // Presence spans the nodes.
    let mut q = a.client("q").await;
    let id = q
        .send(Message::PresenceQuery(
            apm_core::message::PresenceQuery::IsOnline {
                user: "member-b".into(),
            },
        ))
        .await;
    let answer = loop {
        let f = within(q.recv()).await;
        if f.request_id == id {
            break f.message;
        }
    };
    assert!(
        matches!(
            answer,
            Message::PresenceResponse(apm_core::message::PresenceResponse::IsOnline {
                connections: 1,
                ..
            })
        ),
        "{answer:?}"
    );
}
