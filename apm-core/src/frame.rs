//! The fixed frame header, the message type numbers and header flags.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::message::Message;

/// The protocol version this crate speaks, sent in every header.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes in the length prefix.
pub const LENGTH_LEN: usize = 4;
/// Bytes in the fixed header that follows the length prefix.
pub const HEADER_LEN: usize = 8;

/// One frame: header fields that matter to the application plus the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Correlates a request with its reply (`Receipt`, `Error`, `SubOk`, ...).
    /// Zero when nothing is to be correlated.
    pub request_id: u32,
    /// Per-frame flags, see [`Flags`].
    pub flags: Flags,
    /// The message itself.
    pub message: Message,
}

impl Frame {
    /// A frame with no flags set.
    pub fn new(request_id: u32, message: Message) -> Self {
        Frame {
            request_id,
            flags: Flags::empty(),
            message,
        }
    }

    /// The same frame with `flags` set.
    pub fn with_flags(mut self, flags: Flags) -> Self {
        self.flags = flags;
        self
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// Fails only when the encoded frame would exceed `max_frame_len`, in
    /// which case `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut, max_frame_len: u32) -> Result<(), EncodeError> {
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.message.message_type() as u8);
        dst.put_u16(self.flags.bits());
        dst.put_u32(self.request_id);
        if let Err(e) = self.message.encode_body(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let len = dst.len() - start - LENGTH_LEN;
        if len > max_frame_len as usize {
            dst.truncate(start);
            return Err(EncodeError::FrameTooLarge {
                len,
                max: max_frame_len,
            });
        }
        dst[start..start + LENGTH_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Encodes the frame once into shareable bytes, checked against the
    /// default frame limit.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        self.to_bytes_limited(crate::Limits::default().max_frame_len)
    }

    /// Encodes the frame once into shareable bytes, checked against
    /// `max_frame_len`.
    pub fn to_bytes_limited(&self, max_frame_len: u32) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(LENGTH_LEN + HEADER_LEN + self.message.size_hint());
        self.encode(&mut buf, max_frame_len)?;
        Ok(buf.freeze())
    }
}

/// The fixed header as it stands on the wire after the length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Raw message type byte.
    pub message_type: u8,
    /// Raw flag bits.
    pub flags: u16,
    /// Request id.
    pub request_id: u32,
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `src`.
    pub fn parse(mut src: &[u8]) -> Result<Header, DecodeError> {
        if src.len() < HEADER_LEN {
            return Err(DecodeError::BadLength { len: src.len() });
        }
        Ok(Header {
            version: src.get_u8(),
            message_type: src.get_u8(),
            flags: src.get_u16(),
            request_id: src.get_u32(),
        })
    }
}

/// Header flag bits. Unknown bits are ignored by receivers and must be sent
/// as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(u16);

impl Flags {
    /// On `Publish`, `Direct` and `Broadcast`: the sender wants a `Receipt`
    /// carrying the assigned sequence number.
    pub const RECEIPT: Flags = Flags(0x0001);
    /// On `Publish`: deliver to the publishing connection too.
    pub const ECHO: Flags = Flags(0x0002);

    /// No flags.
    pub const fn empty() -> Flags {
        Flags(0)
    }
    /// Flags from raw bits; unknown bits are kept but mean nothing.
    pub const fn from_bits(bits: u16) -> Flags {
        Flags(bits)
    }
    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)*) => {
        /// The message type byte of the header.
        ///
        /// `0x00` is never used; `0x80..=0xBF` are reserved for future
        /// extensions of this protocol and `0xC0..=0xFF` for private,
        /// deployment-specific extensions. A receiver that meets a type it
        /// does not know answers with `UnknownType` and closes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MessageType {
            $($(#[$doc])* $name = $value,)*
        }

        impl MessageType {
            /// Every message type, in numeric order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$name,)*];

            /// The type for a raw header byte, if it is a known one.
            pub fn from_u8(value: u8) -> Option<MessageType> {
                match value {
                    $($value => Some(MessageType::$name),)*
                    _ => None,
                }
            }
        }
    };
}

message_types! {
    /// Client to server, first frame: identity and credentials.
    Hello = 0x01,
    /// Server to client: the handshake succeeded.
    Welcome = 0x02,
    /// Either way: a request failed, or the connection is about to close.
    Error = 0x03,
    /// Either way: heartbeat request.
    Ping = 0x04,
    /// Either way: heartbeat reply.
    Pong = 0x05,
    /// Either way: orderly close with a reason.
    Close = 0x06,
    /// Client to server: join a channel.
    Sub = 0x10,
    /// Client to server: leave a channel.
    Unsub = 0x11,
    /// Server to client: the join took effect.
    SubOk = 0x12,
    /// Server to client: the leave took effect.
    UnsubOk = 0x13,
    /// Client to server: publish to a channel.
    Publish = 0x20,
    /// Client to server: send to every connection of one user.
    Direct = 0x21,
    /// Client to server: send to every connection (admin role only).
    Broadcast = 0x22,
    /// Server to client: one message of a conversation.
    Deliver = 0x23,
    /// Server to client: a publish was sequenced.
    Receipt = 0x24,
    /// Client to server: delivered up to a sequence number.
    Ack = 0x25,
    /// Client to server: read a page of a conversation's history.
    HistoryRequest = 0x30,
    /// Server to client: a page of history.
    HistoryResponse = 0x31,
    /// Client to server: how far the user has read some conversations.
    UnreadRequest = 0x32,
    /// Server to client: unread counts.
    UnreadResponse = 0x33,
    /// Client to server: a presence question.
    PresenceQuery = 0x40,
    /// Server to client: the answer to a presence question.
    PresenceResponse = 0x41,
    /// Server to client: someone came online, went offline, joined or left.
    PresenceEvent = 0x42,
}
