//! A node killed under load, Redis restarted with and without its data,
//! a feed that stays subscribed and hears nothing.

use super::*;

async fn publish_until_receipted(c: &Client, channel: &str, text: String, msg_id: u64) -> u64 {
    let opts = apm_client::SendOptions {
        msg_id,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + apm_tests::PATIENCE;
    loop {
        match c.publish_with(channel, text.clone(), opts).await {
            Ok(r) => return r.seq,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no receipt in time: {e}"
                );
                // Back off while Redis restarts.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn redis_restarted_from_its_file_under_load_loses_nothing_acknowledged() {
    let Some(mut redis) = RedisServer::start_durable().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let reader = quick_sdk(nodes[1].addr, "reader").await;
    let mut ticks = reader.subscribe("ticks").await.unwrap();
    let writer = quick_sdk(nodes[0].addr, "writer").await;
    const TOTAL: u64 = 40;
    let mut seqs = Vec::new();
    for i in 1..=TOTAL {
        if i == 15 {
            redis.restart().await;
        }
        seqs.push(publish_until_receipted(&writer, "ticks", format!("t{i}"), i).await);
    }
    assert_eq!(
        seqs,
        (1..=TOTAL).collect::<Vec<_>>(),
        "one seq each, none reused"
    );
    for seq in 1..=TOTAL {
        let d = within(ticks.next()).await.unwrap();
        assert_eq!((d.seq, &*d.payload), (seq, format!("t{seq}").as_bytes()));
    }
}

#[tokio::test]
async fn redis_restarted_empty_stops_the_node_and_a_new_one_starts_a_new_epoch() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let mut old = nodes(&redis, 1).await.remove(0);
    // A node that only receives learns it when its feed comes back.
    let mut listening = nodes(&redis, 1).await.remove(0);
    let _member = {
        let mut m = listening.client("bob").await;
        m.sub("room").await;
        m
    };
    let mut c = old.client("alice").await;
    let before = {
        let mut probe = apm_tests::Client::connect(old.addr).await;
        probe.hello("probe", "").await.epoch
    };
    c.publish("room", "one", Flags::RECEIPT).await;
    redis.restart().await;
    // The node finds Redis without its epoch (at its next message, or when
    // its feed comes back, whichever is first) and stops rather than hand
    // out seqs again from 1: the message is refused or never taken.
    let id = c.publish("room", "two", Flags::RECEIPT).await;
    loop {
        match c.next().await {
            Some(f) if f.request_id == id => {
                assert!(matches!(f.message, Message::Error(_)), "{f:?}");
                break;
            }
            Some(f) if matches!(f.message, Message::Close(_)) => break,
            Some(_) => continue,
            None => break,
        }
    }
    let stopped = within(&mut old.task).await.unwrap();
    assert!(stopped.is_err(), "a supervisor sees it fail: {stopped:?}");
    let stopped = within(&mut listening.task).await.unwrap();
    assert!(
        stopped.is_err(),
        "the receiving node stops too: {stopped:?}"
    );
    let new = nodes(&redis, 1).await.remove(0);
    let mut probe = apm_tests::Client::connect(new.addr).await;
    assert_ne!(probe.hello("probe", "").await.epoch, before);
}

#[tokio::test]
async fn a_node_killed_under_load_loses_nothing_for_clients_that_move_to_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut doomed =
        apm_tests::process::ServerProcess::spawn(["--cluster", redis.url.as_str()]).await;
    let survivor = nodes(&redis, 1).await.remove(0);
    // Both clients reach the doomed node through relays that can be
    // pointed at the survivor.
    let (to_reader, to_writer) = (
        Relay::start(doomed.addr).await,
        Relay::start(doomed.addr).await,
    );
    let reader = quick_sdk(to_reader.addr, "reader").await;
    let mut load = reader.subscribe("load").await.unwrap();
    let writer = quick_sdk(to_writer.addr, "writer").await;
    let other = quick_sdk(survivor.addr, "other").await;
    const EACH: u64 = 30;
    let mut seqs = Vec::new();
    for i in 1..=EACH {
        if i == 10 {
            doomed.child.start_kill().expect("kill -9");
            for relay in [&to_reader, &to_writer] {
                relay.point_at(survivor.addr);
                relay.cut();
            }
        }
        // The writer's message waits in its SDK while it moves, and is
        // sent again with the same id: one receipt.
        seqs.push(writer.publish("load", format!("w{i}")).await.unwrap().seq);
        seqs.push(other.publish("load", format!("o{i}")).await.unwrap().seq);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=2 * EACH).collect::<Vec<_>>(),
        "every message once"
    );
    for seq in 1..=2 * EACH {
        assert_eq!(
            within(load.next()).await.unwrap().seq,
            seq,
            "nothing missed"
        );
    }
}

#[tokio::test]
async fn a_feed_that_hears_nothing_fails_readiness_and_reads_what_it_missed() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Node a reaches Redis through a relay that can go deaf: connected,
    // and nothing Redis sends comes through.
    let relay = Relay::start(redis.addr()).await;
    let a = TestServer::start_http(|c| c.cluster = format!("redis://{}", relay.addr)).await;
    let b = node(&redis, |_| {}).await;
    let member = quick_sdk(a.addr, "member").await;
    let mut sub = member.subscribe("room").await.unwrap();
    let publisher = quick_sdk(b.addr, "publisher").await;
    publisher.publish("room", "one").await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().seq, 1);
    let http = a.http();
    assert_eq!(http.get("/readyz").await.status, StatusCode::OK);

    relay.mute(true);
    for text in ["two", "three"] {
        publisher.publish("room", text).await.unwrap();
    }
    // No message comes to tell a that it missed any: its probe does.
    within(async {
        while http.get("/readyz").await.status == StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    relay.mute(false);
    relay.cut();
    for (seq, text) in [(2, "two"), (3, "three")] {
        let d = within(sub.next()).await.unwrap();
        assert_eq!((d.seq, &d.payload[..]), (seq, text.as_bytes()));
    }
    within(async {
        while http.get("/readyz").await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let metrics = http.get("/metrics").await.text();
    assert!(
        metrics.contains("apm_cluster_feed_deaf_total 1"),
        "counted: {metrics}"
    );
}
