//! The fixed frame header and its flags.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::message::Message;
pub use crate::message_type::MessageType;

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
