//! Property tests: every message type survives encode -> decode, whole or
//! split at any byte.

use apm_core::message::*;
use apm_core::{ApmCodec, ErrorCode, Flags, Frame, Message, MessageType};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._:@-]{1,32}"
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn conversation() -> impl Strategy<Value = Conversation> {
    prop_oneof![
        name().prop_map(Conversation::Channel),
        name().prop_map(Conversation::User),
        Just(Conversation::Broadcast),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::User), Just(Role::Admin)]
}

fn cursor() -> impl Strategy<Value = Option<String>> {
    prop::option::of(name())
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (name(), text(), text()).prop_map(|(user, token, client)| Message::Hello(Hello {
            user,
            token,
            client
        })),
        (
            any::<u64>(),
            name(),
            role(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            (any::<u32>(), any::<u64>())
        )
            .prop_map(|(session_id, user, role, t, hb, idle, (max, epoch))| {
                Message::Welcome(Welcome {
                    session_id,
                    user,
                    role,
                    server_time_ms: t,
                    heartbeat_ms: hb,
                    idle_timeout_ms: idle,
                    max_frame_len: max,
                    epoch,
                })
            }),
        (code(), text()).prop_map(|(c, m)| Message::error(c, m)),
        Just(Message::Ping),
        Just(Message::Pong),
        (code(), text()).prop_map(|(c, m)| Message::close(c, m)),
        text().prop_map(|token| Message::Refresh(Refresh { token })),
        any::<u64>().prop_map(|exp| Message::RefreshOk(RefreshOk { exp })),
        text().prop_map(|token| Message::Grant(Grant { token })),
        (name(), any::<u64>())
            .prop_map(|(channel, exp)| Message::GrantOk(GrantOk { channel, exp })),
        (name(), prop::option::of(any::<u64>()))
            .prop_map(|(channel, since)| Message::Sub(Sub { channel, since })),
        name().prop_map(|channel| Message::Unsub(Unsub { channel })),
        (name(), any::<u64>(), any::<u64>()).prop_map(|(channel, seq, oldest)| Message::SubOk(
            SubOk {
                channel,
                seq,
                oldest
            }
        )),
        name().prop_map(|channel| Message::UnsubOk(UnsubOk { channel })),
        (name(), any::<u64>(), any::<u64>()).prop_map(|(channel, seq, oldest)| {
            Message::ServerSub(SubOk {
                channel,
                seq,
                oldest,
            })
        }),
        name().prop_map(|channel| Message::ServerUnsub(UnsubOk { channel })),
        (name(), any::<u16>(), any::<u64>(), payload()).prop_map(
            |(channel, kind, msg_id, payload)| Message::Publish(Publish {
                channel,
                kind,
                msg_id,
                payload
            })
        ),
        (name(), any::<u16>(), any::<u64>(), payload()).prop_map(
            |(user, kind, msg_id, payload)| Message::Direct(Direct {
                user,
                kind,
                msg_id,
                payload
            })
        ),
        (any::<u16>(), any::<u64>(), payload()).prop_map(|(kind, msg_id, payload)| {
            Message::Broadcast(Broadcast {
                kind,
                msg_id,
                payload,
            })
        }),
        (
            conversation(),
            any::<u64>(),
            any::<u64>(),
            name(),
            any::<u16>(),
            any::<u64>(),
            payload()
        )
            .prop_map(
                |(conversation, seq, ts_ms, sender, kind, msg_id, payload)| {
                    Message::Deliver(Deliver {
                        conversation: conversation.into(),
                        seq,
                        ts_ms,
                        sender: sender.into(),
                        kind,
                        msg_id,
                        payload,
                    })
                }
            ),
        (conversation(), any::<u64>(), any::<u64>()).prop_map(|(conversation, seq, ts_ms)| {
            Message::Receipt(Receipt {
                conversation,
                seq,
                ts_ms,
            })
        }),
        (conversation(), any::<u64>())
            .prop_map(|(conversation, seq)| Message::Ack(Ack { conversation, seq })),
        (
            conversation(),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            any::<u32>()
        )
            .prop_map(|(conversation, before, after, limit)| {
                Message::HistoryRequest(HistoryRequest {
                    conversation,
                    before,
                    after,
                    limit,
                })
            }),
        (
            conversation(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(
                (
                    any::<u64>(),
                    any::<u64>(),
                    name(),
                    any::<u16>(),
                    any::<u64>(),
                    payload()
                ),
                0..4
            )
        )
            .prop_map(|(conversation, oldest, last, items)| {
                Message::HistoryResponse(HistoryResponse {
                    conversation,
                    oldest,
                    last,
                    messages: items
                        .into_iter()
                        .map(|(seq, ts_ms, sender, kind, msg_id, payload)| HistoryItem {
                            seq,
                            ts_ms,
                            sender,
                            kind,
                            msg_id,
                            payload,
                        })
                        .collect(),
                })
            }),
        prop::collection::vec(conversation(), 0..4)
            .prop_map(|conversations| { Message::UnreadRequest(UnreadRequest { conversations }) }),
        prop::collection::vec((conversation(), any::<u64>(), any::<u64>()), 0..4).prop_map(
            |counts| {
                Message::UnreadResponse(UnreadResponse {
                    counts: counts
                        .into_iter()
                        .map(|(conversation, last, acked)| Unread {
                            conversation,
                            last,
                            acked,
                        })
                        .collect(),
                })
            }
        ),
        prop_oneof![
            name().prop_map(|user| PresenceQuery::IsOnline { user }),
            (cursor(), any::<u32>())
                .prop_map(|(after, limit)| PresenceQuery::OnlineUsers { after, limit }),
            (name(), cursor(), any::<u32>()).prop_map(|(channel, after, limit)| {
                PresenceQuery::ChannelMembers {
                    channel,
                    after,
                    limit,
                }
            }),
            (cursor(), any::<u32>())
                .prop_map(|(after, limit)| PresenceQuery::Channels { after, limit }),
            Just(PresenceQuery::MyChannels),
        ]
        .prop_map(Message::PresenceQuery),
        prop_oneof![
            (name(), any::<u32>())
                .prop_map(|(user, connections)| PresenceResponse::IsOnline { user, connections }),
            (prop::collection::vec(name(), 0..5), cursor())
                .prop_map(|(users, next)| PresenceResponse::Users { users, next }),
            (name(), prop::collection::vec(name(), 0..5), cursor()).prop_map(
                |(channel, users, next)| PresenceResponse::Members {
                    channel,
                    users,
                    next
                }
            ),
            (
                prop::collection::vec((name(), any::<u32>()), 0..5),
                cursor()
            )
                .prop_map(|(channels, next)| PresenceResponse::Channels { channels, next }),
            prop::collection::vec(name(), 0..5)
                .prop_map(|channels| PresenceResponse::MyChannels { channels }),
        ]
        .prop_map(Message::PresenceResponse),
        prop_oneof![
            name().prop_map(|user| PresenceEvent::Online { user }),
            name().prop_map(|user| PresenceEvent::Offline { user }),
            (name(), name()).prop_map(|(channel, user)| PresenceEvent::Join { channel, user }),
            (name(), name()).prop_map(|(channel, user)| PresenceEvent::Leave { channel, user }),
        ]
        .prop_map(Message::PresenceEvent),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u32>(), any::<u16>(), message()).prop_map(|(request_id, flags, message)| {
        Frame::new(request_id, message).with_flags(Flags::from_bits(flags))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(frame in frame()) {
        let wire = frame.to_bytes().unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        let back = ApmCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(&back, &frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_anywhere(frames in prop::collection::vec(frame(), 1..4), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire, u32::MAX).unwrap();
        }
        let cut = cut.index(wire.len() + 1);
        let mut codec = ApmCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(part);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }
}

/// Every byte offset of every sample frame, fed one byte at a time.
#[test]
fn byte_by_byte() {
    for frame in apm_core::samples::all() {
        let wire = frame.to_bytes().unwrap();
        let mut codec = ApmCodec::default();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            assert!(codec.decode(&mut buf).unwrap().is_none(), "early at {i}");
            buf.extend_from_slice(&[*b]);
        }
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), frame);
    }
}

#[test]
fn samples_cover_every_type() {
    let types: Vec<MessageType> = apm_core::samples::all()
        .iter()
        .map(|f| f.message.message_type())
        .collect();
    assert_eq!(types, MessageType::ALL);
}

#[test]
fn payload_is_zero_copy() {
    let samples = apm_core::samples::all();
    let frame = samples
        .iter()
        .find(|f| matches!(f.message, Message::Publish(_)))
        .expect("a Publish sample");
    let wire = frame.to_bytes().unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let range = buf.as_ptr_range();
    let Message::Publish(p) = ApmCodec::default()
        .decode(&mut buf)
        .unwrap()
        .unwrap()
        .message
    else {
        panic!("not a publish");
    };
    assert!(range.contains(&p.payload.as_ptr()));
}

#[test]
fn deliver_names_are_zero_copy() {
    let samples = apm_core::samples::all();
    let frame = samples
        .iter()
        .find(|f| matches!(f.message, Message::Deliver(_)))
        .expect("a Deliver sample");
    let wire = frame.to_bytes().unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let range = buf.as_ptr_range();
    let decoded = ApmCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(&decoded, frame);
    let Message::Deliver(d) = decoded.message else {
        panic!("not a deliver");
    };
    let Conversation::Channel(channel) = &d.conversation else {
        panic!("the sample is a channel message");
    };
    assert!(range.contains(&channel.as_ptr()));
    assert!(range.contains(&d.sender.as_ptr()));
    assert!(range.contains(&d.payload.as_ptr()));
}

#[test]
fn deliver_with_a_name_that_is_not_utf8_is_malformed() {
    let wire = Frame::new(
        0,
        apm_core::samples::all()
            .into_iter()
            .find(|f| matches!(f.message, Message::Deliver(_)))
            .unwrap()
            .message,
    )
    .to_bytes()
    .unwrap();
    // The sample's channel "news" follows the header and the variant and
    // length bytes; break its first byte.
    let mut bad = BytesMut::from(&wire[..]);
    let at = apm_core::LENGTH_LEN + apm_core::HEADER_LEN + 2;
    assert_eq!(bad[at], b'n');
    bad[at] = 0xff;
    let err = ApmCodec::default().decode(&mut bad).unwrap_err();
    assert!(
        matches!(
            err,
            apm_core::DecodeError::Malformed {
                kind: MessageType::Deliver,
                ..
            }
        ),
        "{err:?}"
    );
}

proptest! {
    #[test]
    fn deliver_ref_matches_owned(frame in frame()) {
        if let Message::Deliver(d) = &frame.message {
            let owned = Frame::new(0, frame.message.clone()).to_bytes().unwrap();
            let borrowed = DeliverRef {
                conversation: d.conversation.as_ref(),
                seq: d.seq,
                ts_ms: d.ts_ms,
                sender: &d.sender,
                kind: d.kind,
                msg_id: d.msg_id,
                payload: &d.payload,
            }
            .to_frame_bytes(u32::MAX)
            .unwrap();
            prop_assert_eq!(owned, borrowed);
        }
    }
}
