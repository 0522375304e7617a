//! Clients that move between nodes, a node that drains, a publisher
//! faster than Redis.

use super::*;

#[tokio::test]
async fn a_publisher_faster_than_redis_waits_rather_than_being_refused() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // 2 MiB may wait for Redis; the publisher sends three times that.
    let node = node(&redis, |c| c.memory_budget = 16 * 1024 * 1024).await;
    let member = quick_sdk(node.addr, "member").await;
    let mut sub = member.subscribe("flood").await.unwrap();
    let publisher = quick_sdk(node.addr, "publisher").await;
    const N: u64 = 3_000;
    let payload = Bytes::from(vec![b'x'; 2048]);
    let sends = (0..N).map(|_| publisher.publish("flood", payload.clone()));
    let receipts = within(futures::future::join_all(sends)).await;
    let mut seqs: Vec<u64> = receipts.into_iter().map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    for seq in 1..=N {
        assert_eq!(within(sub.next()).await.unwrap().seq, seq);
    }
    assert_eq!(
        apm_server::metrics::Metrics::get(&node.metrics.cluster_refused),
        0
    );
}

#[tokio::test]
async fn an_sdk_client_whose_node_stops_resumes_on_another_with_nothing_missing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let client = quick_sdk_nodes(&[a.addr.to_string(), b.addr.to_string()], "mover").await;
    let publisher = quick_sdk(b.addr, "publisher").await;
    // Node a drains: its clients are told to go elsewhere.
    move_off(&client, &publisher, || a.shutdown.cancel()).await;
    assert_eq!(client.node(), b.addr.to_string());
}

/// Reads 1..3 from `publisher` in "room" on `client`, takes its node away
/// with `gone`, then checks that 4..6 arrive on the node it moved to with
/// nothing missing and nothing twice, and that a message it sent while
/// moving is sequenced once (7).
async fn move_off(client: &Client, publisher: &Client, gone: impl FnOnce()) {
    let mut events = client.events();
    let mut sub = client.subscribe("room").await.unwrap();
    for k in 1..=3 {
        publisher.publish("room", format!("m{k}")).await.unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(within(sub.next()).await.unwrap().seq, seq);
    }
    gone();
    within(async { while !matches!(events.next().await, Some(Event::Disconnected { .. })) {} })
        .await;
    for k in 4..=6 {
        publisher.publish("room", format!("m{k}")).await.unwrap();
    }
    let own = client.publish("room", "from the mover").await.unwrap();
    assert_eq!(own.seq, 7);
    for seq in 4..=6 {
        let d = within(sub.next()).await.unwrap();
        assert_eq!(
            (d.seq, d.payload.clone()),
            (seq, Bytes::from(format!("m{seq}"))),
            "nothing missing, nothing twice"
        );
    }
}

#[tokio::test]
async fn an_sdk_client_whose_node_is_killed_resumes_on_another_with_nothing_missing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut doomed =
        apm_tests::process::ServerProcess::spawn(["--cluster", redis.url.as_str()]).await;
    let survivor = nodes(&redis, 1).await.remove(0);
    let addrs = [doomed.addr.to_string(), survivor.addr.to_string()];
    let client = quick_sdk_nodes(&addrs, "mover").await;
    let publisher = quick_sdk(survivor.addr, "publisher").await;
    // No drain notice: the connection just ends.
    move_off(&client, &publisher, || {
        doomed.child.start_kill().expect("kill -9");
    })
    .await;
    assert_eq!(client.node(), addrs[1]);
}

#[tokio::test]
async fn an_sdk_client_starts_on_the_first_node_that_answers() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 1).await;
    // Nothing listens on a port just freed.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let client = Client::builder("unused:0")
        .nodes([gone.to_string(), nodes[0].addr.to_string()])
        .credentials("starter", "")
        .connect()
        .await
        .unwrap();
    assert_eq!(client.node(), nodes[0].addr.to_string());
    client.publish("room", "here").await.unwrap();
}

#[tokio::test]
async fn a_draining_node_answers_what_it_took_before_closing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let member = quick_sdk(b.addr, "member").await;
    let mut sub = member.subscribe("busy").await.unwrap();
    let sender = quick_sdk_nodes(&[a.addr.to_string(), b.addr.to_string()], "sender").await;
    const N: u64 = 400;
    let flood = tokio::spawn(async move {
        let sends = (0..N).map(|i| sender.publish("busy", format!("{i}")));
        futures::future::join_all(sends).await
    });
    // Node a stops while the flood is under way.
    assert_eq!(within(sub.next()).await.unwrap().seq, 1);
    a.shutdown.cancel();
    let receipts = within(flood).await.unwrap();
    let mut seqs: Vec<u64> = receipts.into_iter().map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    for seq in 2..=N {
        assert_eq!(within(sub.next()).await.unwrap().seq, seq);
    }
    // Every message a took was answered before it closed: none had to be
    // sent again and recognised as a retry on b.
    assert_eq!(apm_server::metrics::Metrics::get(&b.metrics.duplicates), 0);
}
