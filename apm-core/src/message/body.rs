//! The body encoding: postcard for every message, with the raw payload of
//! `Publish`, `Direct`, `Broadcast` and `Deliver` appended after the
//! postcard head.
//!
//! The payload stays outside postcard so a decoder can hand it out as a
//! slice of the read buffer and the server can encode a `Deliver` straight
//! from borrowed parts ([`DeliverRef::to_frame_bytes`]).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use super::{Broadcast, Conversation, Deliver, DeliverRef, Direct, Message, Publish};
use crate::error::{DecodeError, EncodeError};
use crate::message_type::MessageType;

impl DeliverRef<'_> {
    /// Encodes a whole `Deliver` frame (request id 0, no flags) into
    /// shareable bytes, byte for byte what [`crate::Frame::to_bytes`] gives
    /// for the owned message.
    pub fn to_frame_bytes(&self, max_frame_len: u32) -> Result<Bytes, EncodeError> {
        use crate::frame::{HEADER_LEN, LENGTH_LEN, PROTOCOL_VERSION};
        let mut dst = BytesMut::with_capacity(
            LENGTH_LEN + HEADER_LEN + 48 + self.sender.len() + self.payload.len(),
        );
        dst.put_u32(0);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(MessageType::Deliver as u8);
        dst.put_u16(0);
        dst.put_u32(0);
        put(
            &(
                self.conversation,
                self.seq,
                self.ts_ms,
                self.sender,
                self.kind,
                self.msg_id,
            ),
            &mut dst,
        )?;
        dst.extend_from_slice(self.payload);
        let len = dst.len() - LENGTH_LEN;
        if len > max_frame_len as usize {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: max_frame_len,
            });
        }
        dst[..LENGTH_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(dst.freeze())
    }
}

/// A `Deliver`'s conversation as it lies in the frame. Postcard writes a
/// `str` exactly as a byte string, so reading the names as bytes leaves
/// the UTF-8 check to [`shared_text`], which does it once.
#[derive(Deserialize)]
enum RawConversation<'a> {
    Channel(&'a [u8]),
    User(&'a [u8]),
    Broadcast,
}

/// The head of a `Deliver` body: conversation, seq, ts_ms, sender, kind,
/// msg_id.
type RawDeliverHead<'a> = (RawConversation<'a>, u64, u64, &'a [u8], u16, u64);

/// `raw`, a slice of `body`, as a string sharing `body`'s memory.
fn shared_text(body: &Bytes, raw: &[u8]) -> Result<ByteString, DecodeError> {
    ByteString::try_from(body.slice_ref(raw)).map_err(|_| DecodeError::Malformed {
        kind: MessageType::Deliver,
        reason: "a name is not UTF-8".into(),
    })
}

fn decode_deliver(body: &Bytes) -> Result<Deliver, DecodeError> {
    let ((conversation, seq, ts_ms, sender, kind, msg_id), payload): (RawDeliverHead<'_>, _) =
        head(MessageType::Deliver, body)?;
    let conversation = match conversation {
        RawConversation::Channel(c) => Conversation::Channel(shared_text(body, c)?),
        RawConversation::User(u) => Conversation::User(shared_text(body, u)?),
        RawConversation::Broadcast => Conversation::Broadcast,
    };
    Ok(Deliver {
        conversation,
        seq,
        ts_ms,
        sender: shared_text(body, sender)?,
        kind,
        msg_id,
        payload,
    })
}

/// Appends postcard output straight into a `BytesMut`.
struct BytesMutFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn put<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), EncodeError> {
    postcard::serialize_with_flavor(value, BytesMutFlavor(dst))?;
    Ok(())
}

/// Decodes a whole body; trailing bytes are an error.
fn whole<'a, T: Deserialize<'a>>(kind: MessageType, body: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| malformed(kind, e))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            kind,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

/// Decodes the postcard head of a payload-carrying body; the rest of the
/// body, shared with `body`, is the payload.
fn head<'a, T: Deserialize<'a>>(
    kind: MessageType,
    body: &'a Bytes,
) -> Result<(T, Bytes), DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| malformed(kind, e))?;
    let payload = body.slice(body.len() - rest.len()..);
    Ok((value, payload))
}

fn malformed(kind: MessageType, e: postcard::Error) -> DecodeError {
    DecodeError::Malformed {
        kind,
        reason: e.to_string(),
    }
}

fn empty(kind: MessageType, body: &[u8]) -> Result<(), DecodeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed {
            kind,
            reason: "body must be empty".into(),
        })
    }
}

impl Message {
    /// A guess at the encoded body size, for buffer reservation.
    pub fn size_hint(&self) -> usize {
        64 + match self {
            Message::Publish(m) => m.channel.len() + m.payload.len(),
            Message::Direct(m) => m.user.len() + m.payload.len(),
            Message::Broadcast(m) => m.payload.len(),
            Message::Deliver(m) => m.sender.len() + 32 + m.payload.len(),
            _ => 64,
        }
    }

    /// Appends the body (everything after the header) to `dst`.
    pub fn encode_body(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Message::Hello(m) => put(m, dst),
            Message::Welcome(m) => put(m, dst),
            Message::Error(m) => put(m, dst),
            Message::Ping | Message::Pong => Ok(()),
            Message::Close(m) => put(m, dst),
            Message::Refresh(m) => put(m, dst),
            Message::RefreshOk(m) => put(m, dst),
            Message::Grant(m) => put(m, dst),
            Message::GrantOk(m) => put(m, dst),
            Message::Sub(m) => put(m, dst),
            Message::Unsub(m) => put(m, dst),
            Message::SubOk(m) => put(m, dst),
            Message::UnsubOk(m) => put(m, dst),
            Message::ServerSub(m) => put(m, dst),
            Message::ServerUnsub(m) => put(m, dst),
            Message::Publish(m) => {
                put(&(&m.channel, m.kind, m.msg_id), dst)?;
                dst.extend_from_slice(&m.payload);
                Ok(())
            }
            Message::Direct(m) => {
                put(&(&m.user, m.kind, m.msg_id), dst)?;
                dst.extend_from_slice(&m.payload);
                Ok(())
            }
            Message::Broadcast(m) => {
                put(&(m.kind, m.msg_id), dst)?;
                dst.extend_from_slice(&m.payload);
                Ok(())
            }
            Message::Deliver(m) => {
                put(
                    &(&m.conversation, m.seq, m.ts_ms, &m.sender, m.kind, m.msg_id),
                    dst,
                )?;
                dst.extend_from_slice(&m.payload);
                Ok(())
            }
            Message::Receipt(m) => put(m, dst),
            Message::Ack(m) => put(m, dst),
            Message::HistoryRequest(m) => put(m, dst),
            Message::HistoryResponse(m) => put(m, dst),
            Message::UnreadRequest(m) => put(m, dst),
            Message::UnreadResponse(m) => put(m, dst),
            Message::PresenceQuery(m) => put(m, dst),
            Message::PresenceResponse(m) => put(m, dst),
            Message::PresenceEvent(m) => put(m, dst),
        }
    }

    /// Decodes the body of a message of type `kind`. Payloads are slices of
    /// `body`, not copies.
    pub fn decode_body(kind: MessageType, body: Bytes) -> Result<Message, DecodeError> {
        use MessageType as T;
        Ok(match kind {
            T::Hello => Message::Hello(whole(kind, &body)?),
            T::Welcome => Message::Welcome(whole(kind, &body)?),
            T::Error => Message::Error(whole(kind, &body)?),
            T::Ping => {
                empty(kind, &body)?;
                Message::Ping
            }
            T::Pong => {
                empty(kind, &body)?;
                Message::Pong
            }
            T::Close => Message::Close(whole(kind, &body)?),
            T::Refresh => Message::Refresh(whole(kind, &body)?),
            T::RefreshOk => Message::RefreshOk(whole(kind, &body)?),
            T::Grant => Message::Grant(whole(kind, &body)?),
            T::GrantOk => Message::GrantOk(whole(kind, &body)?),
            T::Sub => Message::Sub(whole(kind, &body)?),
            T::Unsub => Message::Unsub(whole(kind, &body)?),
            T::SubOk => Message::SubOk(whole(kind, &body)?),
            T::UnsubOk => Message::UnsubOk(whole(kind, &body)?),
            T::ServerSub => Message::ServerSub(whole(kind, &body)?),
            T::ServerUnsub => Message::ServerUnsub(whole(kind, &body)?),
            T::Publish => {
                let ((channel, kind, msg_id), payload) = head(kind, &body)?;
                Message::Publish(Publish {
                    channel,
                    kind,
                    msg_id,
                    payload,
                })
            }
            T::Direct => {
                let ((user, kind, msg_id), payload) = head(kind, &body)?;
                Message::Direct(Direct {
                    user,
                    kind,
                    msg_id,
                    payload,
                })
            }
            T::Broadcast => {
                let ((kind, msg_id), payload) = head(kind, &body)?;
                Message::Broadcast(Broadcast {
                    kind,
                    msg_id,
                    payload,
                })
            }
            T::Deliver => Message::Deliver(decode_deliver(&body)?),
            T::Receipt => Message::Receipt(whole(kind, &body)?),
            T::Ack => Message::Ack(whole(kind, &body)?),
            T::HistoryRequest => Message::HistoryRequest(whole(kind, &body)?),
            T::HistoryResponse => Message::HistoryResponse(whole(kind, &body)?),
            T::UnreadRequest => Message::UnreadRequest(whole(kind, &body)?),
            T::UnreadResponse => Message::UnreadResponse(whole(kind, &body)?),
            T::PresenceQuery => Message::PresenceQuery(whole(kind, &body)?),
            T::PresenceResponse => Message::PresenceResponse(whole(kind, &body)?),
            T::PresenceEvent => Message::PresenceEvent(whole(kind, &body)?),
        })
    }
}
