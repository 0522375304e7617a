//! Channel rules: a members-only channel refuses a session whose token
//! does not claim it (subscribe, publish, history, unread counts, member
//! list: `Forbidden`, the connection open) and admits one whose token
//! does; publishers can be narrowed to subscribers or admins.

use std::time::Duration;

use apm_core::message::{Conversation, HistoryRequest, PresenceQuery, Role, Sub, UnreadRequest};
use apm_core::{ErrorCode, Flags, Message};
use apm_tests::{Client, SECRET, TestServer, token};

const HOUR: Duration = Duration::from_secs(3600);

async fn server() -> TestServer {
    TestServer::start_with_tokens(|c| {
        c.channel_rules = vec![
            "private.*=members".into(),
            "news=public:admins".into(),
            "chat.*=public:subscribers".into(),
        ];
    })
    .await
}

/// A session as `user` whose token claims `channels`.
async fn session(server: &TestServer, user: &str, channels: &[&str]) -> Client {
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    let t =
        apm_server::auth::mint_with_channels(SECRET.as_bytes(), user, Role::User, HOUR, &channels);
    let mut c = Client::connect(server.addr).await;
    c.hello("", &t).await;
    c
}

/// The answer to request `id`, which must be `Forbidden`.
async fn forbidden(c: &mut Client, id: u32) {
    match c.reply_to(id).await {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message),
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

fn history(channel: &str) -> Message {
    Message::HistoryRequest(HistoryRequest {
        conversation: Conversation::Channel(channel.into()),
        before: None,
        after: None,
        limit: 10,
    })
}

#[tokio::test]
async fn a_members_only_channel_admits_only_its_members() {
    let server = server().await;
    let mut member = session(&server, "alice", &["private.team"]).await;
    member.sub("private.team").await;
    let id = member
        .publish("private.team", "for the team", Flags::RECEIPT)
        .await;
    assert!(matches!(member.reply_to(id).await, Message::Receipt(_)));

    let mut outsider = session(&server, "mallory", &["private.other"]).await;
    let sub = Message::Sub(Sub {
        channel: "private.team".into(),
        since: None,
    });
    let id = outsider.send(sub).await;
    forbidden(&mut outsider, id).await;
    let id = outsider
        .publish("private.team", "let me in", Flags::RECEIPT)
        .await;
    forbidden(&mut outsider, id).await;
    let id = outsider.send(history("private.team")).await;
    forbidden(&mut outsider, id).await;
    let unread = Message::UnreadRequest(UnreadRequest {
        conversations: vec![Conversation::Channel("private.team".into())],
    });
    let id = outsider.send(unread).await;
    forbidden(&mut outsider, id).await;
    let members = Message::PresenceQuery(PresenceQuery::ChannelMembers {
        channel: "private.team".into(),
        after: None,
        limit: 10,
    });
    let id = outsider.send(members).await;
    forbidden(&mut outsider, id).await;
    // Refused, not closed; nothing of the channel reached it, and the
    // channel list does not name it.
    assert!(outsider.round_trip().await.is_empty());
    let list = Message::PresenceQuery(PresenceQuery::Channels {
        after: None,
        limit: 100,
    });
    let id = outsider.send(list).await;
    match outsider.reply_to(id).await {
        Message::PresenceResponse(apm_core::message::PresenceResponse::Channels {
            channels,
            ..
        }) => assert!(
            channels.iter().all(|(c, _)| c != "private.team"),
            "{channels:?}"
        ),
        other => panic!("expected the channel list, got {other:?}"),
    }

    // A token claiming every private channel admits; it reads the history
    // the member wrote.
    let mut colleague = session(&server, "bob", &["private.*"]).await;
    let id = colleague.send(history("private.team")).await;
    match colleague.reply_to(id).await {
        Message::HistoryResponse(h) => {
            assert_eq!(h.messages.len(), 1);
            assert_eq!(&h.messages[0].payload[..], b"for the team");
        }
        other => panic!("expected history, got {other:?}"),
    }
    colleague.sub("private.team").await;
    let id = colleague
        .publish("private.team", "hi", Flags::RECEIPT)
        .await;
    assert!(matches!(colleague.reply_to(id).await, Message::Receipt(_)));
    assert_eq!(&member.deliver().await.payload[..], b"hi");
    // An admin passes every rule.
    let mut admin = Client::connect(server.addr).await;
    admin.hello("", &token("ops", true, HOUR)).await;
    admin.sub("private.team").await;
}

#[tokio::test]
async fn publishers_can_be_narrowed() {
    let server = server().await;
    let mut user = session(&server, "alice", &[]).await;
    // Anyone reads `news`; only admins write to it.
    user.sub("news").await;
    let id = user.publish("news", "fake news", Flags::RECEIPT).await;
    forbidden(&mut user, id).await;
    let mut admin = Client::connect(server.addr).await;
    admin.hello("", &token("editor", true, HOUR)).await;
    admin.publish("news", "real news", Flags::empty()).await;
    assert_eq!(&user.deliver().await.payload[..], b"real news");
    // `chat.*` takes messages from its subscribers only.
    let id = user.publish("chat.1", "drive-by", Flags::RECEIPT).await;
    forbidden(&mut user, id).await;
    user.sub("chat.1").await;
    let id = user.publish("chat.1", "hello", Flags::RECEIPT).await;
    assert!(matches!(user.reply_to(id).await, Message::Receipt(_)));
}

/// A subscription token, minted by the backend for one user and one
/// channel, opens a members-only channel to a session whose token does
/// not claim it; a token for someone else, another channel's token used
/// for this one, or a forged one does not. The SDK hands its tokens over
/// again after a reconnect.
#[tokio::test]
async fn a_subscription_token_opens_one_members_only_channel() {
    let server = server().await;
    let sub_token = |user: &str, channel: &str| {
        apm_server::auth::mint_subscription(SECRET.as_bytes(), user, channel, HOUR)
    };
    let mut bob = session(&server, "bob", &[]).await;
    let id = bob
        .send(Message::Sub(Sub {
            channel: "private.team".into(),
            since: None,
        }))
        .await;
    forbidden(&mut bob, id).await;
    for (token, why) in [
        (sub_token("carol", "private.team"), "another user's"),
        (
            apm_server::auth::mint_subscription(b"not-the-secret-123", "bob", "private.team", HOUR),
            "forged",
        ),
        (token("bob", false, HOUR), "a session token"),
    ] {
        let id = bob
            .send(Message::Grant(apm_core::message::Grant { token }))
            .await;
        match bob.reply_to(id).await {
            Message::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden, "{why}: {}", e.message),
            other => panic!("{why}: expected Forbidden, got {other:?}"),
        }
    }
    let id = bob
        .send(Message::Grant(apm_core::message::Grant {
            token: sub_token("bob", "private.team"),
        }))
        .await;
    match bob.reply_to(id).await {
        Message::GrantOk(ok) => assert_eq!(ok.channel, "private.team"),
        other => panic!("expected GrantOk, got {other:?}"),
    }
    bob.sub("private.team").await;
    let id = bob.send(history("private.team")).await;
    assert!(matches!(
        bob.reply_to(id).await,
        Message::HistoryResponse(_)
    ));
    // The grant is for that channel only.
    let id = bob
        .send(Message::Sub(Sub {
            channel: "private.other".into(),
            since: None,
        }))
        .await;
    forbidden(&mut bob, id).await;

    // The SDK: through a relay it loses, it re-joins on the same token.
    let relay = apm_tests::Relay::start(server.addr).await;
    let sdk = apm_client::Client::builder(relay.addr.to_string())
        .credentials("", token("dave", false, HOUR))
        .reconnect(apm_client::ReconnectPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_attempts: None,
        })
        .connect()
        .await
        .unwrap();
    let mut events = sdk.events();
    let mut stream = sdk
        .subscribe_with_token("private.team", &sub_token("dave", "private.team"))
        .await
        .unwrap();
    relay.cut();
    loop {
        let e = tokio::time::timeout(apm_tests::PATIENCE, futures::StreamExt::next(&mut events))
            .await
            .expect("in time")
            .expect("open");
        match e {
            apm_client::Event::Reconnected => break,
            apm_client::Event::SubscriptionLost { reason, .. } => panic!("lost: {reason}"),
            _ => {}
        }
    }
    let id = bob
        .publish("private.team", "after the reconnect", Flags::RECEIPT)
        .await;
    assert!(matches!(bob.reply_to(id).await, Message::Receipt(_)));
    let m = tokio::time::timeout(apm_tests::PATIENCE, futures::StreamExt::next(&mut stream))
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(&m.payload[..], b"after the reconnect");
}
