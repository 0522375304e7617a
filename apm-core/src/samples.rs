//! One example frame of every message type.
//!
//! They seed the fuzzer and the mutation tests, and `PROTOCOL.md` shows
//! their encodings (a test keeps the two in step). Built only with the
//! `test-support` feature.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::frame::{Flags, Frame};
use crate::message::*;

/// An example frame for every message type, in message type order.
pub fn all() -> Vec<Frame> {
    let f = Frame::new;
    vec![
        f(
            0,
            Message::Hello(Hello {
                user: "alice".into(),
                token: String::new(),
                client: "demo/1".into(),
            }),
        ),
        f(
            0,
            Message::Welcome(Welcome {
                session_id: 42,
                user: "alice".into(),
                role: Role::User,
                server_time_ms: 1_700_000_000_000,
                heartbeat_ms: 20_000,
                idle_timeout_ms: 60_000,
                max_frame_len: 1_048_576,
                epoch: 1_699_999_000_000,
            }),
        ),
        f(
            3,
            Message::error(ErrorCode::Forbidden, "broadcast needs the admin role"),
        ),
        f(9, Message::Ping),
        f(9, Message::Pong),
        f(0, Message::close(ErrorCode::ServerShutdown, "restarting")),
        f(
            4,
            Message::Refresh(Refresh {
                token: "eyJ1c2VyIjoiYWxpY2UifQ.c2lnbmF0dXJl".into(),
            }),
        ),
        f(4, Message::RefreshOk(RefreshOk { exp: 1_700_003_600 })),
        f(
            5,
            Message::Grant(Grant {
                token: "eyJyb29tIjoic3RhZmYifQ.c2lnbmF0dXJl".into(),
            }),
        ),
        f(
            5,
            Message::GrantOk(GrantOk {
                channel: "staff".into(),
                exp: 1_700_003_600,
            }),
        ),
        f(
            1,
            Message::Sub(Sub {
                channel: "news".into(),
                since: Some(41),
            }),
        ),
        f(
            2,
            Message::Unsub(Unsub {
                channel: "news".into(),
            }),
        ),
        f(
            1,
            Message::SubOk(SubOk {
                channel: "news".into(),
                seq: 57,
                oldest: 1,
            }),
        ),
        f(
            2,
            Message::UnsubOk(UnsubOk {
                channel: "news".into(),
            }),
        ),
        f(
            0,
            Message::ServerSub(SubOk {
                channel: "orders/42".into(),
                seq: 12,
                oldest: 1,
            }),
        ),
        f(
            0,
            Message::ServerUnsub(UnsubOk {
                channel: "orders/42".into(),
            }),
        ),
        f(
            5,
            Message::Publish(Publish {
                channel: "news".into(),
                kind: content_kind::TEXT,
                msg_id: 7,
                payload: Bytes::from_static(b"hi all"),
            }),
        )
        .with_flags(Flags::RECEIPT),
        f(
            6,
            Message::Direct(Direct {
                user: "bob".into(),
                kind: content_kind::TEXT,
                msg_id: 8,
                payload: Bytes::from_static(b"hi bob"),
            }),
        ),
        f(
            7,
            Message::Broadcast(Broadcast {
                kind: content_kind::TEXT,
                msg_id: 0,
                payload: Bytes::from_static(b"maintenance at 22:00"),
            }),
        ),
        f(
            0,
            Message::Deliver(Deliver {
                conversation: Conversation::Channel("news".into()),
                seq: 58,
                ts_ms: 1_700_000_000_123,
                sender: "alice".into(),
                kind: content_kind::TEXT,
                msg_id: 7,
                payload: Bytes::from_static(b"hi all"),
            }),
        ),
        f(
            5,
            Message::Receipt(Receipt {
                conversation: Conversation::Channel("news".into()),
                seq: 58,
                ts_ms: 1_700_000_000_123,
            }),
        ),
        f(
            0,
            Message::Ack(Ack {
                conversation: Conversation::User("alice".into()),
                seq: 12,
            }),
        ),
        f(
            4,
            Message::HistoryRequest(HistoryRequest {
                conversation: Conversation::Channel("news".into()),
                before: Some(58),
                after: None,
                limit: 2,
            }),
        ),
        f(
            4,
            Message::HistoryResponse(HistoryResponse {
                conversation: Conversation::Channel("news".into()),
                oldest: 1,
                last: 58,
                messages: vec![HistoryItem {
                    seq: 57,
                    ts_ms: 1_700_000_000_100,
                    sender: "bob".into(),
                    kind: content_kind::TEXT,
                    msg_id: 3,
                    payload: Bytes::from_static(b"yo"),
                }],
            }),
        ),
        f(
            6,
            Message::UnreadRequest(UnreadRequest {
                conversations: vec![
                    Conversation::Channel("news".into()),
                    Conversation::User("alice".into()),
                ],
            }),
        ),
        f(
            6,
            Message::UnreadResponse(UnreadResponse {
                counts: vec![
                    Unread {
                        conversation: Conversation::Channel("news".into()),
                        last: 58,
                        acked: 50,
                    },
                    Unread {
                        conversation: Conversation::User("alice".into()),
                        last: 12,
                        acked: 12,
                    },
                ],
            }),
        ),
        f(
            11,
            Message::PresenceQuery(PresenceQuery::ChannelMembers {
                channel: "news".into(),
                after: None,
                limit: 100,
            }),
        ),
        f(
            11,
            Message::PresenceResponse(PresenceResponse::Members {
                channel: "news".into(),
                users: vec!["alice".into(), "bob".into()],
                next: None,
            }),
        ),
        f(
            0,
            Message::PresenceEvent(PresenceEvent::Join {
                channel: "news".into(),
                user: "bob".into(),
            }),
        ),
    ]
}
