//! The SDK against a real server.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apm_client::{
    Backpressure, Client, Conversation, Error, Event, PresenceEvent, ReconnectPolicy, SendOptions,
};
use apm_core::ErrorCode;
use apm_tests::{SECRET, TestServer, token};
use futures::StreamExt;

/// Awaits `f`, failing the test after [`apm_tests::PATIENCE`].
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(apm_tests::PATIENCE, f)
        .await
        .expect("in time")
}

async fn client(server: &TestServer, user: &str) -> Client {
    Client::builder(server.addr.to_string())
        .credentials(user, "")
        .connect()
        .await
        .expect("connect")
}

/// A client through `relay` that reconnects fast (tests cut the relay).
async fn quick_reconnecting(relay: &apm_tests::Relay, user: &str) -> Client {
    Client::builder(relay.addr.to_string())
        .credentials(user, "")
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_attempts: Some(200),
        })
        .connect()
        .await
        .unwrap()
}

async fn next_event(events: &mut apm_client::Events, want: impl Fn(&Event) -> bool) -> Event {
    loop {
        let e = tokio::time::timeout(apm_tests::PATIENCE, events.next())
            .await
            .expect("event in time")
            .expect("events open");
        if want(&e) {
            return e;
        }
    }
}

#[tokio::test]
async fn publish_subscribe_and_receipts() {
    let server = TestServer::start(|_| {}).await;
    let alice = client(&server, "alice").await;
    let bob = client(&server, "bob").await;
    assert_eq!(alice.user(), "alice");
    let mut sub = bob.subscribe("news").await.unwrap();
    assert_eq!(sub.start_seq(), 0);
    let r1 = alice.publish("news", "one").await.unwrap();
    let r2 = alice
        .publish_with("news", "two", SendOptions::text())
        .await
        .unwrap();
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_eq!(r1.conversation, Conversation::Channel("news".into()));
    let m1 = within(sub.next()).await.unwrap();
    let m2 = within(sub.next()).await.unwrap();
    assert_eq!(
        (m1.seq, &*m1.sender, &m1.payload[..]),
        (1, "alice", &b"one"[..])
    );
    assert_eq!((m2.seq, m2.kind), (2, apm_client::content_kind::TEXT));

    alice
        .publish_nowait("news", "three", SendOptions::default())
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().seq, 3);

    sub.unsubscribe().await.unwrap();
    assert!(bob.my_channels().await.unwrap().is_empty());
    assert!(bob.ping().await.unwrap() < apm_tests::PATIENCE);
}

#[tokio::test]
async fn server_refusals_are_typed_errors() {
    let server = TestServer::start(|_| {}).await;
    let a = client(&server, "a").await;
    let err = a.publish("$presence", "x").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = a.broadcast("x", SendOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = a
        .history(Conversation::User("someone-else".into()), None, None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    // The connection is still good.
    assert_eq!(a.publish("fine", "x").await.unwrap().seq, 1);

    let refused = Client::builder(server.addr.to_string())
        .credentials("", "")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        Error::Handshake {
            code: ErrorCode::AuthFailed,
            ..
        }
    ));
}

#[tokio::test]
async fn direct_messages_broadcast_and_presence() {
    let server = TestServer::start_with_tokens(|_| {}).await;
    let hour = Duration::from_secs(3600);
    let connect = |user: &'static str, admin: bool| {
        let addr = server.addr.to_string();
        async move {
            Client::builder(addr)
                .credentials("", token(user, admin, hour))
                .connect()
                .await
                .unwrap()
        }
    };
    let bob_phone = connect("bob", false).await;
    let bob_laptop = connect("bob", false).await;
    let mut watcher_events = bob_laptop.events();
    bob_laptop.subscribe("$presence").await.unwrap();
    let alice = connect("alice", false).await;
    let online = next_event(&mut watcher_events, |e| matches!(e, Event::Presence(_))).await;
    assert_eq!(
        online,
        Event::Presence(PresenceEvent::Online {
            user: "alice".into()
        })
    );

    let mut phone_inbox = bob_phone.messages().unwrap();
    assert!(matches!(bob_phone.messages(), Err(Error::AlreadyTaken(_))));
    let mut laptop_inbox = bob_laptop.messages().unwrap();
    let receipt = alice.send_to("bob", "hi bob").await.unwrap();
    assert_eq!(receipt.conversation, Conversation::User("bob".into()));
    for inbox in [&mut phone_inbox, &mut laptop_inbox] {
        let m = within(inbox.next()).await.unwrap();
        assert_eq!((&*m.sender, &m.payload[..]), ("alice", &b"hi bob"[..]));
    }

    assert_eq!(alice.is_online("bob").await.unwrap(), 2);
    let users = alice.online_users(None, 10).await.unwrap();
    assert_eq!(users.items, vec!["alice".to_string(), "bob".to_string()]);
    assert_eq!(users.next, None);

    let admin = connect("ops", true).await;
    admin
        .broadcast("maintenance", SendOptions::text())
        .await
        .unwrap();
    let b = within(phone_inbox.next()).await.unwrap();
    assert_eq!(
        (b.conversation, &*b.sender),
        (Conversation::Broadcast, "ops")
    );

    drop(alice);
    let offline = next_event(&mut watcher_events, |e| {
        matches!(e, Event::Presence(PresenceEvent::Offline { .. }))
    })
    .await;
    assert_eq!(
        offline,
        Event::Presence(PresenceEvent::Offline {
            user: "alice".into()
        })
    );
    let _ = SECRET;
}

#[tokio::test]
async fn channel_presence_calls() {
    let server = TestServer::start(|_| {}).await;
    let a = client(&server, "a").await;
    let b = client(&server, "b").await;
    let _s1 = a.subscribe("room").await.unwrap();
    let _s2 = b.subscribe("room").await.unwrap();
    let _s3 = b.subscribe("other").await.unwrap();
    let members = a.channel_members("room", None, 1).await.unwrap();
    assert_eq!(
        (members.items, members.next.clone()),
        (vec!["a".to_string()], Some("a".into()))
    );
    let rest = a
        .channel_members("room", members.next.as_deref(), 1)
        .await
        .unwrap();
    assert_eq!(rest.items, vec!["b".to_string()]);
    let channels = a.channels(None, 10).await.unwrap();
    assert_eq!(
        channels.items,
        vec![("other".to_string(), 1), ("room".to_string(), 2)]
    );
    assert_eq!(
        b.my_channels().await.unwrap(),
        vec!["other".to_string(), "room".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_publish_through_one_client() {
    let server = TestServer::start(|_| {}).await;
    let publisher = client(&server, "pub").await;
    let reader = client(&server, "reader").await;
    let mut sub = reader.subscribe("busy").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let p = publisher.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..200 {
                    seqs.push(p.publish("busy", format!("{t}:{i}")).await.unwrap().seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all, (1..=1600).collect());
    for seq in 1..=1600 {
        assert_eq!(within(sub.next()).await.unwrap().seq, seq);
    }
}

#[tokio::test]
async fn full_queue_fails_fast_when_asked() {
    let server = TestServer::start(|_| {}).await;
    let c = Client::builder(server.addr.to_string())
        .credentials("q", "")
        .queue_size(1)
        .backpressure(Backpressure::Fail)
        .connect()
        .await
        .unwrap();
    // On this single-threaded runtime the connection task cannot drain the
    // queue until this loop yields, which it does not.
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(c.publish_nowait("x", "y", SendOptions::default()).await);
    }
    assert!(results[0].is_ok());
    assert!(matches!(results[2], Err(Error::QueueFull)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_server_restart() {
    let first = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(first.addr).await;
    let c = Client::builder(relay.addr.to_string())
        .credentials("phoenix", "")
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_attempts: Some(200),
        })
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    let mut sub = c.subscribe("survivors").await.unwrap();
    c.publish_with(
        "survivors",
        "before",
        SendOptions {
            echo: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().seq, 1);

    // The server goes away; a fresh one (a new epoch, seqs from 1) takes
    // its place.
    let second = TestServer::start(|_| {}).await;
    relay.point_at(second.addr);
    first.shutdown.cancel();
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let _ = next_event(&mut events, |e| matches!(e, Event::Reconnected)).await;
    // The subscription was restored, and seq 1 of the new server is not
    // mistaken for the seq 1 already seen.
    let other = Client::builder(second.addr.to_string())
        .credentials("other", "")
        .connect()
        .await
        .unwrap();
    other.publish("survivors", "still here").await.unwrap();
    let m = within(sub.next()).await.unwrap();
    assert_eq!((m.seq, &m.payload[..]), (1, &b"still here"[..]));
    assert_eq!(
        c.my_channels().await.unwrap(),
        vec!["survivors".to_string()]
    );
}

/// A dropped connection (same server): what was published meanwhile is
/// replayed, then live messages follow, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_without_a_gap_after_a_dropped_connection() {
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let c = quick_reconnecting(&relay, "mobile").await;
    let mut events = c.events();
    let mut sub = c.subscribe("feed").await.unwrap();
    let publisher = client(&server, "pub").await;
    for i in 1..=3 {
        publisher.publish("feed", format!("m{i}")).await.unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(within(sub.next()).await.unwrap().seq, seq);
    }
    relay.cut();
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    // Published while the client is away.
    for i in 4..=6 {
        publisher.publish("feed", format!("m{i}")).await.unwrap();
    }
    let _ = next_event(&mut events, |e| matches!(e, Event::Reconnected)).await;
    publisher.publish("feed", "m7").await.unwrap();
    for seq in 4..=7 {
        let m = within(sub.next()).await.unwrap();
        assert_eq!(
            (m.seq, m.payload.clone()),
            (seq, bytes::Bytes::from(format!("m{seq}")))
        );
    }
    assert!(c.ping().await.is_ok());
}

/// A client that publishes into a channel it subscribes to does not get
/// its own messages back from the resume after a reconnect.
#[tokio::test]
async fn a_resume_does_not_hand_back_the_clients_own_messages() {
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let c = quick_reconnecting(&relay, "chatty").await;
    let mut events = c.events();
    let mut sub = c.subscribe("room").await.unwrap();
    let other = client(&server, "other").await;
    other.publish("room", "theirs 1").await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().seq, 1);
    assert_eq!(c.publish("room", "mine").await.unwrap().seq, 2);
    relay.cut();
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    other.publish("room", "theirs 3").await.unwrap();
    let _ = next_event(&mut events, |e| matches!(e, Event::Reconnected)).await;
    let m = within(sub.next()).await.unwrap();
    assert_eq!((m.seq, &m.payload[..]), (3, &b"theirs 3"[..]));
}

/// A message sent with a receipt while the server is away for longer than
/// the request timeout goes out once the server is back.
#[tokio::test]
async fn a_message_sent_while_the_server_is_away_goes_out_when_it_is_back() {
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let c = Client::builder(relay.addr.to_string())
        .credentials("traveller", "")
        .request_timeout(Duration::from_millis(200))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
            max_attempts: None,
        })
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    // A port nobody listens on: the server is away.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    relay.point_at(nowhere);
    relay.cut();
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let sender = c.clone();
    let mut sending = tokio::spawn(async move { sender.send_to("bob", "typed while away").await });
    // Several request timeouts pass while the server is away: it waits.
    let still_waiting = tokio::time::timeout(Duration::from_millis(800), &mut sending).await;
    assert!(
        still_waiting.is_err(),
        "gave up while away: {still_waiting:?}"
    );
    relay.point_at(server.addr);
    let receipt = within(sending).await.unwrap().expect("sent once back");
    assert_eq!(receipt.seq, 1);
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    let server = TestServer::start(|_| {}).await;
    let watcher = client(&server, "watcher").await;
    let mut events = watcher.events();
    watcher.subscribe("$presence").await.unwrap();
    let leaving = client(&server, "leaving").await;
    let clone = leaving.clone();
    drop(leaving);
    // A clone still holds the connection.
    assert_eq!(watcher.is_online("leaving").await.unwrap(), 1);
    drop(clone);
    let e = next_event(&mut events, |e| {
        matches!(e, Event::Presence(PresenceEvent::Offline { .. }))
    })
    .await;
    assert_eq!(
        e,
        Event::Presence(PresenceEvent::Offline {
            user: "leaving".into()
        })
    );
    assert_eq!(server.metrics.protocol_errors.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn close_ends_streams() {
    let server = TestServer::start(|_| {}).await;
    let c = client(&server, "c").await;
    let mut sub = c.subscribe("x").await.unwrap();
    let mut events = c.events();
    c.close().await;
    assert!(within(sub.next()).await.is_none());
    assert_eq!(next_event(&mut events, |_| true).await, Event::Closed);
    assert!(matches!(c.publish("x", "y").await, Err(Error::Closed)));
}

#[tokio::test]
async fn an_inbox_keeps_the_connection_open() {
    let server = TestServer::start(|_| {}).await;
    let mut inbox = client(&server, "keeper").await.messages().unwrap();
    // The client handle is gone; the inbox still receives.
    let sender = client(&server, "sender").await;
    sender.send_to("keeper", "still listening").await.unwrap();
    let m = within(inbox.next()).await.unwrap();
    assert_eq!(&m.payload[..], b"still listening");
}

#[tokio::test]
async fn read_positions_and_unread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let server = TestServer::start(move |c| {
        c.store = apm_server::StoreKind::Disk;
        c.data_dir = path;
    })
    .await;
    let alice = client(&server, "alice").await;
    let bob = client(&server, "bob").await;
    for text in ["one", "two", "three"] {
        alice.publish("room", text).await.unwrap();
    }
    let receipt = alice.send_to("bob", "psst").await.unwrap();
    let room = Conversation::Channel("room".into());
    let inbox = Conversation::User("bob".into());
    bob.ack(room.clone(), 2).await.unwrap();
    bob.ack_inbox(receipt.seq).await.unwrap();
    let counts = bob.unread(vec![room, inbox]).await.unwrap();
    let seen: Vec<(u64, u64, u64)> = counts
        .iter()
        .map(|u| (u.last, u.acked, u.count()))
        .collect();
    assert_eq!(seen, [(3, 2, 1), (1, 1, 0)]);
}

/// Publishes waiting for receipts when the connection drops are sent again
/// after the reconnect, and each is stored once: every caller gets a
/// receipt, the seqs are 1..=N, and the reader sees every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipted_publishes_survive_a_dropped_connection() {
    const N: u64 = 300;
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let c = quick_reconnecting(&relay, "mobile").await;
    let mut reader = client(&server, "reader")
        .await
        .subscribe("log")
        .await
        .unwrap();
    let publishes: Vec<_> = (0..N)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.publish("log", format!("m{i}")).await })
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 50 {
        seen.push(within(reader.next()).await.unwrap());
    }
    // Cut with publishes and receipts in flight.
    relay.cut();
    let mut seqs = BTreeSet::new();
    for p in publishes {
        let receipt = p.await.unwrap().expect("a receipt despite the cut");
        assert!(
            seqs.insert(receipt.seq),
            "seq {} receipted twice",
            receipt.seq
        );
    }
    assert_eq!(seqs, (1..=N).collect::<BTreeSet<_>>());
    while (seen.len() as u64) < N {
        seen.push(within(reader.next()).await.unwrap());
    }
    let payloads: BTreeSet<_> = seen.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(payloads.len() as u64, N, "every message once");
    let marker = client(&server, "marker").await;
    assert_eq!(marker.publish("log", "end").await.unwrap().seq, N + 1);
    assert_eq!(within(reader.next()).await.unwrap().seq, N + 1);
}

/// A client whose receipts were lost, and which then stays away while
/// 2,000 other messages pass in its channel, sends its messages again on
/// its return: the server still knows them (its ids are kept per sender),
/// so each is stored once and answered with its first seq.
#[tokio::test]
async fn an_outbox_sent_again_after_2000_other_messages_is_stored_once() {
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let away = quick_reconnecting(&relay, "away").await;
    let mut events = away.events();
    let busy = client(&server, "busy").await;
    let mut watching = busy.subscribe("room").await.unwrap();

    // Three messages reach the server; their receipts are lost.
    relay.mute(true);
    let mut sending = Vec::new();
    for i in 0..3 {
        let c = away.clone();
        sending.push(tokio::spawn(async move {
            c.publish("room", format!("queued {i}")).await
        }));
    }
    for seq in 1..=3 {
        let m = within(watching.next()).await.unwrap();
        assert_eq!((m.seq, &*m.sender), (seq, "away"));
    }
    // The client loses its connection and cannot come back for a while.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    relay.point_at(nowhere);
    relay.cut();
    relay.mute(false);
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    drop(watching);

    for chunk in 0..4 {
        let publishes: Vec<_> = (0..500)
            .map(|i| busy.publish("room", format!("busy {chunk}.{i}")))
            .collect();
        for receipt in futures::future::join_all(publishes).await {
            receipt.unwrap();
        }
    }

    relay.point_at(server.addr);
    let mut seqs: Vec<u64> = Vec::new();
    for s in sending {
        seqs.push(within(s).await.unwrap().unwrap().seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3], "answered with the first copies' receipts");
    let mut raw = apm_tests::Client::connect(server.addr).await;
    raw.hello("reader", "").await;
    let page = raw
        .history(apm_core::message::HistoryRequest {
            conversation: apm_core::message::Conversation::Channel("room".into()),
            before: None,
            after: None,
            limit: 100,
        })
        .await;
    assert_eq!(
        page.last, 2_003,
        "stored once each: nothing after the 2,000"
    );
    assert!(page.messages.iter().all(|m| m.sender == "busy"));
}

/// While the server is away, messages sent with a receipt wait in the
/// outbox up to its bound (past it a send fails at once), and each gives
/// up after the give-up time.
#[tokio::test]
async fn the_outbox_is_bounded_and_gives_up_in_time() {
    let server = TestServer::start(|_| {}).await;
    let relay = apm_tests::Relay::start(server.addr).await;
    let c = Client::builder(relay.addr.to_string())
        .credentials("traveller", "")
        .outbox(2, 1 << 20)
        .give_up_after(Duration::from_millis(400))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
            max_attempts: None,
        })
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    relay.point_at(nowhere);
    relay.cut();
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    // Polled once, each takes its place in the outbox and waits.
    let mut waiting: Vec<_> = (0..2)
        .map(|i| Box::pin(c.send_to("bob", format!("queued {i}"))))
        .collect();
    for w in &mut waiting {
        assert!(futures::poll!(w.as_mut()).is_pending());
    }
    match c.send_to("bob", "one too many").await {
        Err(Error::OutboxFull { messages, .. }) => assert_eq!(messages, 2),
        other => panic!("expected OutboxFull, got {other:?}"),
    }
    for w in waiting {
        assert!(matches!(within(w).await, Err(Error::GaveUp(_))));
    }
}

/// Subscribers that also publish, across a server restart with each
/// store: every client's stream yields each of the others' messages once,
/// in order, and none of its own.
#[tokio::test]
async fn publishing_subscribers_see_each_message_once_across_a_restart() {
    for store in [apm_server::StoreKind::Disk, apm_server::StoreKind::Memory] {
        let dir = tempfile::tempdir().unwrap();
        let settings = |c: &mut apm_server::Config| {
            c.store = store;
            c.data_dir = dir.path().to_owned();
        };
        let first = TestServer::start(settings).await;
        let relay = apm_tests::Relay::start(first.addr).await;
        let names = ["ann", "ben", "cat"];
        let mut clients = Vec::new();
        for name in names {
            let c = quick_reconnecting(&relay, name).await;
            let sub = c.subscribe("room").await.unwrap();
            clients.push((name, c, sub));
        }
        let senders: Vec<(&str, Client)> =
            clients.iter().map(|(n, c, _)| (*n, c.clone())).collect();
        let say = |round: &str| {
            let senders = senders.clone();
            let round = round.to_owned();
            async move {
                for (name, c) in senders {
                    c.publish("room", format!("{round} {name}")).await.unwrap();
                }
            }
        };
        say("before").await;
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        relay.point_at(nowhere);
        first.stop().await;
        let second = TestServer::start(settings).await;
        relay.point_at(second.addr);
        for (_, c) in &senders {
            let mut events = c.events();
            while !c.is_connected() {
                let _ = next_event(&mut events, |e| matches!(e, Event::Reconnected)).await;
            }
        }
        say("after").await;
        for (name, _, sub) in &mut clients {
            let want: Vec<String> = ["before", "after"]
                .iter()
                .flat_map(|round| {
                    names
                        .iter()
                        .filter(|n| *n != name)
                        .map(move |n| format!("{round} {n}"))
                })
                .collect();
            let mut got = Vec::new();
            while got.len() < want.len() {
                let m = within(sub.next()).await.expect("stream open");
                got.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
            // Nothing more: a message from each other client after this
            // point would come first if anything were doubled.
            assert_eq!(got, want, "{name} with {store:?}");
        }
        // A last round: each stream's next message is the newest one.
        say("last").await;
        for (name, _, sub) in &mut clients {
            let m = within(sub.next()).await.expect("stream open");
            let text = String::from_utf8(m.payload.to_vec()).unwrap();
            assert!(
                text.starts_with("last ") && !text.ends_with(*name),
                "{name}: {text}"
            );
        }
    }
}
