//! A message as it lives in Redis: what the sending node knows before the
//! message has a seq (its conversation, server time, sender, kind, client
//! message id and payload). The script gives it its seq; every node turns
//! the pair into the `Deliver` frame its clients get.

use bytes::Bytes;

use crate::conversation::ConversationId;
use crate::store::Record;
use apm_core::message::DeliverRef;

/// Encodes a message without its seq: a postcard head, then the payload.
pub(crate) fn encode(
    conversation: &ConversationId,
    ts_ms: u64,
    sender: &str,
    kind: u16,
    msg_id: u64,
    payload: &[u8],
) -> Vec<u8> {
    let key = conversation.key();
    let head = (key.as_str(), ts_ms, sender, kind, msg_id);
    let mut out = postcard::to_allocvec(&head).expect("a tuple of plain fields encodes");
    out.extend_from_slice(payload);
    out
}

/// The message `body` (from [`encode`]) sequenced as `seq`, as the record
/// a shard settles: its `Deliver` frame encoded once.
pub(crate) fn record(seq: u64, body: &[u8]) -> Option<Record> {
    let ((key, ts_ms, sender, kind, msg_id), payload): ((&str, u64, &str, u16, u64), &[u8]) =
        postcard::take_from_bytes(body).ok()?;
    let conversation = ConversationId::from_key(key)?;
    let frame = DeliverRef {
        conversation: conversation.as_ref(),
        seq,
        ts_ms,
        sender,
        kind,
        msg_id,
        payload,
    }
    .to_frame_bytes(u32::MAX)
    .ok()?;
    Some(Record {
        conversation,
        seq,
        ts_ms,
        frame,
    })
}

/// A read position as published to every node: user, conversation, seq.
pub(crate) fn encode_ack(user: &str, conversation: &ConversationId, seq: u64) -> Vec<u8> {
    let key = conversation.key();
    postcard::to_allocvec(&(user, key.as_str(), seq)).expect("a tuple of plain fields encodes")
}

/// A read position from [`encode_ack`].
pub(crate) fn ack(body: &[u8]) -> Option<(std::sync::Arc<str>, ConversationId, u64)> {
    let (user, key, seq): (&str, &str, u64) = postcard::from_bytes(body).ok()?;
    Some((
        std::sync::Arc::from(user),
        ConversationId::from_key(key)?,
        seq,
    ))
}

/// A body's conversation key and sender, read without decoding the rest:
/// what a node looks at to decide whether a message concerns it.
pub(crate) fn head(body: &[u8]) -> Option<(&str, &str)> {
    let ((key, _, sender, _, _), _): ((&str, u64, &str, u16, u64), &[u8]) =
        postcard::take_from_bytes(body).ok()?;
    Some((key, sender))
}

/// The messages of one publish, `SEQ LEN BODY` back to back (see
/// `script::SEQUENCE`), as seqs and bodies sharing `payload`. Stops at
/// the first that does not read back (`None`).
pub(crate) fn published(payload: &Bytes) -> Vec<Option<(u64, Bytes)>> {
    let mut messages = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let item = number(&payload[at..]).and_then(|(seq, rest)| {
            let (len, rest) = number(rest)?;
            let start = payload.len() - rest.len();
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            (end <= payload.len()).then_some((seq, start, end))
        });
        match item {
            Some((seq, start, end)) => {
                messages.push(Some((seq, payload.slice(start..end))));
                at = end;
            }
            None => {
                messages.push(None);
                break;
            }
        }
    }
    messages
}

/// A decimal number and a space, and what follows them.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let space = bytes.iter().take(21).position(|&b| b == b' ')?;
    let n = std::str::from_utf8(&bytes[..space]).ok()?.parse().ok()?;
    Some((n, &bytes[space + 1..]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_body_and_its_seq_make_the_deliver_frame_a_local_message_would_have() {
        let room = ConversationId::Channel(Arc::from("room"));
        let body = encode(&room, 1_700, "alice", 1, 7, b"hi 2");
        let other = encode(&room, 1_701, "bob", 1, 0, b"");
        let mut message = format!("42 {} ", body.len()).into_bytes();
        message.extend_from_slice(&body);
        message.extend_from_slice(format!("43 {} ", other.len()).as_bytes());
        message.extend_from_slice(&other);
        let records: Vec<Record> = published(&Bytes::from(message))
            .into_iter()
            .flatten()
            .map(|(seq, body)| {
                assert_eq!(head(&body).map(|(_, sender)| sender.len() >= 3), Some(true));
                record(seq, &body).expect("a record")
            })
            .collect();
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!((r.seq, r.ts_ms, r.conversation.clone()), (42, 1_700, room));
        let item = crate::ring::item(&r.frame).expect("a Deliver frame");
        assert_eq!(
            (
                item.sender.as_str(),
                item.msg_id,
                item.seq,
                &item.payload[..]
            ),
            ("alice", 7, 42, &b"hi 2"[..])
        );
        assert_eq!((records[1].seq, records[1].ts_ms), (43, 1_701));
        assert!(matches!(
            &published(&Bytes::from_static(b"x 1 a"))[..],
            [None]
        ));
        assert!(matches!(
            &published(&Bytes::from_static(b"12 5 abc"))[..],
            [None]
        ));
    }
}
