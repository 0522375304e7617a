//! Presence events and every presence query.

use apm_core::message::{PresenceEvent, PresenceQuery, PresenceResponse};
use apm_core::{Frame, Message};
use apm_tests::{Client, TestServer};

/// The next presence event, skipping nothing else: any other frame fails.
async fn event(c: &mut Client) -> PresenceEvent {
    match c.recv().await {
        Frame {
            message: Message::PresenceEvent(e),
            ..
        } => e,
        other => panic!("expected a presence event, got {other:?}"),
    }
}

async fn ask(c: &mut Client, q: PresenceQuery) -> PresenceResponse {
    let id = c.send(Message::PresenceQuery(q)).await;
    loop {
        let f = c.recv().await;
        if f.request_id == id {
            match f.message {
                Message::PresenceResponse(r) => return r,
                other => panic!("expected PresenceResponse, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn online_and_offline_events() {
    let server = TestServer::start(|_| {}).await;
    let mut watcher = server.client("watcher").await;
    watcher.sub("$presence").await;
    let carol1 = server.client("carol").await;
    assert_eq!(
        event(&mut watcher).await,
        PresenceEvent::Online {
            user: "carol".into()
        }
    );
    // A second device is not news; its leaving is not either.
    let carol2 = server.client("carol").await;
    drop(carol2);
    drop(carol1);
    assert_eq!(
        event(&mut watcher).await,
        PresenceEvent::Offline {
            user: "carol".into()
        }
    );
}

#[tokio::test]
async fn join_and_leave_events() {
    let server = TestServer::start(|c| c.join_leave_channels = vec!["room.*".into()]).await;
    let mut a = server.client("a").await;
    a.sub("room.1").await;
    let mut b = server.client("b").await;
    b.sub("room.1").await;
    assert_eq!(
        event(&mut a).await,
        PresenceEvent::Join {
            channel: "room.1".into(),
            user: "b".into()
        }
    );
    drop(b);
    assert_eq!(
        event(&mut a).await,
        PresenceEvent::Leave {
            channel: "room.1".into(),
            user: "b".into()
        }
    );
    // Channels outside the patterns stay quiet.
    a.sub("lobby").await;
    let mut c = server.client("c").await;
    c.sub("lobby").await;
    assert!(a.round_trip().await.is_empty());
}

#[tokio::test]
async fn queries() {
    let server = TestServer::start(|c| c.presence_page_max = 3).await;
    let mut clients = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        let mut c = server.client(name).await;
        c.sub("all").await;
        if name <= "u2" {
            c.sub("few").await;
        }
        clients.push(c);
    }
    let mut q = server.client("q").await;

    assert_eq!(
        ask(&mut q, PresenceQuery::IsOnline { user: "u3".into() }).await,
        PresenceResponse::IsOnline {
            user: "u3".into(),
            connections: 1
        }
    );
    assert_eq!(
        ask(
            &mut q,
            PresenceQuery::IsOnline {
                user: "nobody".into()
            }
        )
        .await,
        PresenceResponse::IsOnline {
            user: "nobody".into(),
            connections: 0
        }
    );

    // Online users, paged: the server caps the page at 3.
    let first = ask(
        &mut q,
        PresenceQuery::OnlineUsers {
            after: None,
            limit: 100,
        },
    )
    .await;
    assert_eq!(
        first,
        PresenceResponse::Users {
            users: vec!["q".into(), "u1".into(), "u2".into()],
            next: Some("u2".into())
        }
    );
    let second = ask(
        &mut q,
        PresenceQuery::OnlineUsers {
            after: Some("u2".into()),
            limit: 100,
        },
    )
    .await;
    assert_eq!(
        second,
        PresenceResponse::Users {
            users: vec!["u3".into(), "u4".into(), "u5".into()],
            next: None
        }
    );

    let members = ask(
        &mut q,
        PresenceQuery::ChannelMembers {
            channel: "all".into(),
            after: Some("u1".into()),
            limit: 2,
        },
    )
    .await;
    assert_eq!(
        members,
        PresenceResponse::Members {
            channel: "all".into(),
            users: vec!["u2".into(), "u3".into()],
            next: Some("u3".into())
        }
    );

    q.sub("zzz").await;
    let channels = ask(
        &mut q,
        PresenceQuery::Channels {
            after: None,
            limit: 10,
        },
    )
    .await;
    assert_eq!(
        channels,
        PresenceResponse::Channels {
            channels: vec![("all".into(), 5), ("few".into(), 2), ("zzz".into(), 1)],
            next: None
        }
    );
    let mine = ask(&mut clients[0], PresenceQuery::MyChannels).await;
    assert_eq!(
        mine,
        PresenceResponse::MyChannels {
            channels: vec!["all".into(), "few".into()]
        }
    );
}
