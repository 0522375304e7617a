//! `tokio_util` codec for apm frames.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Flags, Frame, HEADER_LEN, Header, LENGTH_LEN, PROTOCOL_VERSION};
use crate::limits::Limits;
use crate::message::Message;
use crate::message_type::MessageType;

/// Decodes and encodes apm frames under a set of [`Limits`].
#[derive(Debug, Clone, Default)]
pub struct ApmCodec {
    limits: Limits,
}

impl ApmCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ApmCodec { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Decodes one frame from the front of `src`.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole frame (having
/// reserved room for up to 64 KiB more of it, once its length is known to
/// be within the limit).
/// A length over the limit is refused before anything is reserved. On
/// success the frame's bytes are split off `src`, and any payload is a
/// zero-copy slice of them.
pub fn decode_frame(src: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    if src.len() < LENGTH_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
    if len > limits.max_frame_len {
        return Err(DecodeError::FrameTooLarge {
            len: len as u64,
            max: limits.max_frame_len,
        });
    }
    let len = len as usize;
    if len < HEADER_LEN {
        return Err(DecodeError::BadLength { len });
    }
    // The header can be judged before the body arrives, so a peer that sends
    // a bad header is told at once rather than after the whole body.
    if src.len() >= LENGTH_LEN + HEADER_LEN {
        check_header(&src[LENGTH_LEN..])?;
    }
    if src.len() < LENGTH_LEN + len {
        // Room for the rest, but at most 64 KiB ahead of what has arrived:
        // a peer that announces a large frame and stalls does not get the
        // whole of it reserved.
        src.reserve((LENGTH_LEN + len - src.len()).min(64 * 1024));
        return Ok(None);
    }
    let mut frame = src.split_to(LENGTH_LEN + len).freeze();
    frame.advance(LENGTH_LEN);
    decode_frame_bytes(frame, limits).map(Some)
}

/// The request id of the frame at the start of `src`, once its header has
/// arrived; 0 before. What an `Error` about that frame carries, even when
/// the frame does not decode.
pub fn peek_request_id(src: &[u8]) -> u32 {
    match src.get(LENGTH_LEN + 4..LENGTH_LEN + HEADER_LEN) {
        Some(id) => u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        None => 0,
    }
}

fn check_header(src: &[u8]) -> Result<(Header, MessageType), DecodeError> {
    let header = Header::parse(src)?;
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(header.version));
    }
    let kind = MessageType::from_u8(header.message_type)
        .ok_or(DecodeError::UnknownType(header.message_type))?;
    Ok((header, kind))
}

/// Decodes one frame given its bytes after the length prefix (header and
/// body).
pub fn decode_frame_bytes(mut frame: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
    let (header, kind) = check_header(&frame)?;
    frame.advance(HEADER_LEN);
    let message = Message::decode_body(kind, frame)?;
    message.validate(limits)?;
    Ok(Frame {
        request_id: header.request_id,
        flags: Flags::from_bits(header.flags),
        message,
    })
}

impl Decoder for ApmCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        decode_frame(src, &self.limits)
    }
}

impl Encoder<&Frame> for ApmCodec {
    type Error = EncodeError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        item.encode(dst, self.limits.max_frame_len)
    }
}

impl Encoder<Frame> for ApmCodec {
    type Error = EncodeError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        item.encode(dst, self.limits.max_frame_len)
    }
}

/// Pre-encoded frames (from [`Frame::to_bytes`]) pass through unchanged.
impl Encoder<Bytes> for ApmCodec {
    type Error = EncodeError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), EncodeError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}
