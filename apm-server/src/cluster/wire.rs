//! A message as it lives in Redis: what the sending node knows before the
//! message has a seq (its conversation, server time, sender, kind, client
//! message id and payload). The script gives it its seq; every node turns
//! the pair into the `Deliver` frame its clients get.

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

/// The messages of one publish: `SEQ LEN BODY`, back to back (see
/// `script::SEQUENCE`). Stops at the first that does not read back.
pub(crate) fn published(mut payload: &[u8]) -> Vec<Option<Record>> {
    let mut records = Vec::new();
    while !payload.is_empty() {
        let Some((seq, rest)) = number(payload) else {
            records.push(None);
            break;
        };
        let Some((len, rest)) = number(rest) else {
            records.push(None);
            break;
        };
        let Some(body) = rest.get(..len as usize) else {
            records.push(None);
            break;
        };
        records.push(record(seq, body));
        payload = &rest[len as usize..];
    }
    records
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
        let records: Vec<Record> = published(&message).into_iter().flatten().collect();
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
        assert!(matches!(&published(b"x 1 a")[..], [None]));
        assert!(matches!(&published(b"12 5 abc")[..], [None]));
    }
}
