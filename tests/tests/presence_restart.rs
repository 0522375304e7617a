//! Presence across a graceful restart with the disk store: users who were
//! online come back without being announced again; one who does not come
//! back within the grace period is announced as gone.

use std::time::Duration;

use apm_client::{Client, Event, PresenceEvent, ReconnectPolicy};
use apm_tests::{PATIENCE, Relay, TestServer};
use futures::StreamExt;

/// A client through `relay` that reconnects fast.
async fn through(relay: &Relay, user: &str) -> Client {
    Client::builder(relay.addr.to_string())
        .credentials(user, "")
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_attempts: None,
        })
        .connect()
        .await
        .expect("connect")
}

async fn next_event(events: &mut apm_client::Events) -> Event {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event in time")
        .expect("events open")
}

async fn until(events: &mut apm_client::Events, want: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = next_event(events).await;
        let done = want(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn about(e: &Event, who: &str) -> bool {
    match e {
        Event::Presence(
            PresenceEvent::Online { user }
            | PresenceEvent::Offline { user }
            | PresenceEvent::Join { user, .. }
            | PresenceEvent::Leave { user, .. },
        ) => user == who,
        _ => false,
    }
}

#[tokio::test]
async fn users_back_after_a_restart_are_not_announced_and_the_missing_are() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |c: &mut apm_server::Config| {
        c.store = apm_server::StoreKind::Disk;
        c.data_dir = dir.path().to_owned();
        c.presence_grace_ms = 5_000;
    };
    let first = TestServer::start(settings).await;
    // One relay each, so the test says who comes back when.
    let (to_bob, to_alice, to_dave) = (
        Relay::start(first.addr).await,
        Relay::start(first.addr).await,
        Relay::start(first.addr).await,
    );
    let bob = through(&to_bob, "bob").await;
    let mut bob_events = bob.events();
    let _presence = bob.subscribe("$presence").await.unwrap();
    let _bob_room = bob.subscribe("room").await.unwrap();
    let alice = through(&to_alice, "alice").await;
    let mut alice_events = alice.events();
    let _alice_room = alice.subscribe("room").await.unwrap();
    let dave = through(&to_dave, "dave").await;
    let _dave_room = dave.subscribe("room").await.unwrap();
    until(
        &mut bob_events,
        |e| matches!(e, Event::Presence(PresenceEvent::Join { user, .. }) if user == "dave"),
    )
    .await;

    // A graceful restart on the same data directory. Nobody can come back
    // until the test says so.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    for relay in [&to_bob, &to_alice, &to_dave] {
        relay.point_at(nowhere);
    }
    first.stop().await;
    let second = TestServer::start(settings).await;
    to_bob.point_at(second.addr);
    until(&mut bob_events, |e| matches!(e, Event::Reconnected)).await;
    to_alice.point_at(second.addr);
    until(&mut alice_events, |e| matches!(e, Event::Reconnected)).await;

    // Carol is new: her arrival is news, and comes after anything the
    // returns of Alice would have caused.
    let carol = Client::builder(second.addr.to_string())
        .credentials("carol", "")
        .connect()
        .await
        .unwrap();
    let _carol_room = carol.subscribe("room").await.unwrap();
    let seen = until(
        &mut bob_events,
        |e| matches!(e, Event::Presence(PresenceEvent::Join { user, .. }) if user == "carol"),
    )
    .await;
    assert!(
        seen.iter().any(
            |e| matches!(e, Event::Presence(PresenceEvent::Online { user }) if user == "carol")
        ),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|e| about(e, "alice") || about(e, "bob")),
        "returning users announced: {seen:?}"
    );

    // Dave stays away: once the grace period is over he is gone, from the
    // room (its shard) and from the server (his user's shard), in either
    // order.
    let is_leave = |e: &Event| matches!(e, Event::Presence(PresenceEvent::Leave { user, channel }) if user == "dave" && channel == "room");
    let is_offline =
        |e: &Event| matches!(e, Event::Presence(PresenceEvent::Offline { user }) if user == "dave");
    let mut seen = Vec::new();
    while !(seen.iter().any(is_leave) && seen.iter().any(is_offline)) {
        seen.push(next_event(&mut bob_events).await);
    }
    assert!(!seen.iter().any(|e| about(e, "alice")), "{seen:?}");
}
