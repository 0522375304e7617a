//! Presence across nodes: every node's users, members and channels count
//! in every node's answers and events; a killed node's users go offline
//! within its lease; users who move off a stopping node are not announced
//! as leaving.

use std::time::{Duration, Instant};

use apm_core::message::{PresenceEvent, PresenceQuery, PresenceResponse};
use apm_core::{Frame, Message};
use apm_server::metrics::Metrics;
use apm_tests::process::ServerProcess;
use apm_tests::redis::RedisServer;
use apm_tests::{Client, quick_sdk_nodes};

use super::{node, within};

/// The lease the nodes of these tests hold their presence under.
const LEASE_MS: u64 = 1_000;

/// The next presence event; any other frame fails.
async fn event(c: &mut Client) -> PresenceEvent {
    match within(c.recv()).await {
        Frame {
            message: Message::PresenceEvent(e),
            ..
        } => e,
        other => panic!("expected a presence event, got {other:?}"),
    }
}

/// Presence events until every one of `wanted` came (in any order, others
/// in between skipped).
async fn events_until(c: &mut Client, wanted: &[PresenceEvent]) {
    let mut left: Vec<&PresenceEvent> = wanted.iter().collect();
    while !left.is_empty() {
        let e = event(c).await;
        left.retain(|w| **w != e);
    }
}

fn online(user: &str) -> PresenceEvent {
    PresenceEvent::Online { user: user.into() }
}

fn offline(user: &str) -> PresenceEvent {
    PresenceEvent::Offline { user: user.into() }
}

fn join(channel: &str, user: &str) -> PresenceEvent {
    PresenceEvent::Join {
        channel: channel.into(),
        user: user.into(),
    }
}

fn leave(channel: &str, user: &str) -> PresenceEvent {
    PresenceEvent::Leave {
        channel: channel.into(),
        user: user.into(),
    }
}

async fn ask(c: &mut Client, q: PresenceQuery) -> PresenceResponse {
    let id = c.send(Message::PresenceQuery(q)).await;
    loop {
        let f = within(c.recv()).await;
        if f.request_id == id {
            match f.message {
                Message::PresenceResponse(r) => return r,
                other => panic!("expected PresenceResponse, got {other:?}"),
            }
        }
    }
}

async fn is_online(c: &mut Client, user: &str) -> u32 {
    match ask(c, PresenceQuery::IsOnline { user: user.into() }).await {
        PresenceResponse::IsOnline { connections, .. } => connections,
        other => panic!("{other:?}"),
    }
}

async fn members(c: &mut Client, channel: &str) -> Vec<String> {
    let q = PresenceQuery::ChannelMembers {
        channel: channel.into(),
        after: None,
        limit: 100,
    };
    match ask(c, q).await {
        PresenceResponse::Members { users, .. } => users,
        other => panic!("{other:?}"),
    }
}

async fn channels(c: &mut Client) -> Vec<(String, u32)> {
    let q = PresenceQuery::Channels {
        after: None,
        limit: 100,
    };
    match ask(c, q).await {
        PresenceResponse::Channels { channels, .. } => channels,
        other => panic!("{other:?}"),
    }
}

async fn online_users(
    c: &mut Client,
    after: Option<&str>,
    limit: u32,
) -> (Vec<String>, Option<String>) {
    let q = PresenceQuery::OnlineUsers {
        after: after.map(str::to_owned),
        limit,
    };
    match ask(c, q).await {
        PresenceResponse::Users { users, next } => (users, next),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn presence_spans_nodes_and_a_killed_node_s_users_go_offline_within_its_lease() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let lease = LEASE_MS.to_string();
    let args = ["--cluster", redis.url.as_str(), "--presence-ttl-ms", &lease];
    let mut doomed = ServerProcess::spawn(args).await;
    let a = node(&redis, |c| c.presence_ttl_ms = LEASE_MS).await;
    let b = node(&redis, |c| c.presence_ttl_ms = LEASE_MS).await;
    let mut watcher = a.client("watcher").await;
    watcher.sub("$presence").await;
    let mut m = a.client("m").await;
    m.sub("room").await;
    // A node sends its changes in order: once a later one is announced,
    // m's membership is in Redis too.
    let _mark = a.client("mark").await;
    events_until(&mut watcher, &[online("m"), online("mark")]).await;

    let mut carol = Client::connect(doomed.addr).await;
    carol.hello("carol", "").await;
    carol.sub("room").await;
    let mut dave = b.client("dave").await;
    dave.sub("room").await;
    events_until(&mut m, &[join("room", "carol"), join("room", "dave")]).await;
    events_until(&mut watcher, &[online("carol"), online("dave")]).await;

    // Asked on b, about users of every node.
    let mut q = b.client("q").await;
    events_until(&mut watcher, &[online("q")]).await;
    assert_eq!(is_online(&mut q, "carol").await, 1);
    assert_eq!(is_online(&mut q, "m").await, 1);
    assert_eq!(members(&mut q, "room").await, ["carol", "dave", "m"]);
    assert!(channels(&mut q).await.contains(&("room".to_owned(), 3)));
    let everyone = ["carol", "dave", "m", "mark", "q", "watcher"];
    assert_eq!(online_users(&mut q, None, 100).await.0, everyone);
    // Pages over the cluster's names.
    let (first, next) = online_users(&mut q, None, 4).await;
    assert_eq!(first, everyone[..4]);
    assert_eq!(next.as_deref(), Some("mark"));
    let (rest, next) = online_users(&mut q, Some("mark"), 4).await;
    assert_eq!(rest, everyone[4..]);
    assert_eq!(next, None);

    // A second device of carol's on another node is not news.
    let mut carol2 = b.client("carol").await;
    carol2.sub("room").await;
    let _mark_b = b.client("mark-b").await;
    assert_eq!(event(&mut watcher).await, online("mark-b"));
    assert_eq!(is_online(&mut q, "carol").await, 2);
    drop(carol2);

    let killed = Instant::now();
    doomed.child.start_kill().expect("kill -9");
    events_until(&mut watcher, &[offline("carol")]).await;
    events_until(&mut m, &[leave("room", "carol")]).await;
    let took = killed.elapsed();
    // The lease, and a third of it for another node to look.
    assert!(
        took < Duration::from_millis(LEASE_MS * 2),
        "offline {took:?} after the kill, with a lease of {LEASE_MS} ms"
    );
    assert_eq!(is_online(&mut q, "carol").await, 0);
    assert_eq!(members(&mut q, "room").await, ["dave", "m"]);
    assert!(channels(&mut q).await.contains(&("room".to_owned(), 2)));
    let lapsed = |n: &apm_tests::TestServer| Metrics::get(&n.metrics.cluster_nodes_lapsed);
    assert!(lapsed(&a) + lapsed(&b) >= 1);
}

#[tokio::test]
async fn users_who_move_off_a_stopping_node_are_not_announced_as_leaving() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Room for the mover to reach the other node before the lease lapses.
    let tweak = |c: &mut apm_server::config::Config| c.presence_ttl_ms = 2 * LEASE_MS;
    let (a, b, stopping) = (
        node(&redis, tweak).await,
        node(&redis, tweak).await,
        node(&redis, tweak).await,
    );
    let mut watcher = a.client("watcher").await;
    watcher.sub("$presence").await;
    let addrs = [stopping.addr.to_string(), b.addr.to_string()];
    let mover = quick_sdk_nodes(&addrs, "mover").await;
    mover.subscribe("room").await.unwrap();
    // One who does not come back: a client that knows no other node.
    let _stays = stopping.client("stays").await;
    events_until(&mut watcher, &[online("mover"), online("stays")]).await;

    stopping.stop().await;
    // The stopped node's lease lapses and another node takes it off: only
    // the user who did not come back is announced gone.
    assert_eq!(event(&mut watcher).await, offline("stays"));
    assert_eq!(mover.node(), addrs[1]);
    let _late = b.client("late").await;
    assert_eq!(event(&mut watcher).await, online("late"));
    let mut q = a.client("q").await;
    assert_eq!(is_online(&mut q, "mover").await, 1);
    assert_eq!(members(&mut q, "room").await, ["mover"]);
}

#[tokio::test]
async fn the_api_s_info_lists_the_cluster_s_nodes_and_presence_answers_for_all() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url.clone();
    let a = apm_tests::TestServer::start_http(|c| c.cluster = url).await;
    let b = node(&redis, |_| {}).await;
    let mut watcher = a.client("watcher").await;
    watcher.sub("$presence").await;
    // Each node's last renewal carried its connections: a's with the
    // watcher and the mark, b's with x.
    let _mark = a.client("mark").await;
    let _x = b.client("x").await;
    events_until(&mut watcher, &[online("mark"), online("x")]).await;

    let api = a.http();
    let info = api.ok("info", serde_json::json!({})).await;
    assert_eq!(info["store"], "redis");
    let cluster = &info["cluster"];
    assert_eq!(cluster["redis_instances"], 1);
    assert_eq!(cluster["connections"], 3, "{info}");
    let nodes = cluster["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{info}");
    assert!(nodes.iter().any(|n| n["node"] == cluster["node"]));
    assert!(nodes.iter().all(|n| n["lapsed"] == false));
    // Presence over the API answers for both nodes.
    let online = api
        .ok("is_online", serde_json::json!({ "user": "x" }))
        .await;
    assert_eq!(online["connections"], 1, "{online}");
}
