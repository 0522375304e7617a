//! Each kind of malformed input gives its documented error.

use apm_core::{ApmCodec, DecodeError, ErrorCode, Limits, PROTOCOL_VERSION};
use bytes::{BufMut, BytesMut};
use tokio_util::codec::Decoder;

fn raw(version: u8, kind: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(8 + body.len() as u32);
    b.put_u8(version);
    b.put_u8(kind);
    b.put_u16(0);
    b.put_u32(1);
    b.extend_from_slice(body);
    b
}

fn decode(mut buf: BytesMut) -> Result<Option<apm_core::Frame>, DecodeError> {
    ApmCodec::default().decode(&mut buf)
}

fn code_of(buf: BytesMut) -> ErrorCode {
    decode(buf).unwrap_err().code()
}

#[test]
fn truncated_is_incomplete_not_error() {
    let wire = apm_core::samples::all()[0].to_bytes().unwrap();
    for cut in 0..wire.len() {
        assert!(decode(BytesMut::from(&wire[..cut])).unwrap().is_none());
    }
}

#[test]
fn length_shorter_than_header() {
    let mut b = BytesMut::new();
    b.put_u32(3);
    b.extend_from_slice(&[1, 4, 0]);
    assert!(matches!(
        decode(b.clone()),
        Err(DecodeError::BadLength { len: 3 })
    ));
    assert_eq!(code_of(b), ErrorCode::Malformed);
}

#[test]
fn oversize_refused_before_buffering() {
    let mut b = BytesMut::with_capacity(8);
    b.put_u32(Limits::DEFAULT_MAX_FRAME_LEN + 1);
    let cap = b.capacity();
    let mut codec = ApmCodec::default();
    let err = codec.decode(&mut b).unwrap_err();
    assert!(matches!(err, DecodeError::FrameTooLarge { .. }));
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    assert_eq!(b.capacity(), cap, "nothing reserved for an oversize frame");

    let mut huge = BytesMut::new();
    huge.put_u32(u32::MAX);
    assert_eq!(code_of(huge), ErrorCode::FrameTooLarge);
}

#[test]
fn bad_version() {
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION + 1, 0x04, &[])),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(code_of(raw(0, 0x04, &[])), ErrorCode::UnsupportedVersion);
}

#[test]
fn bad_header_reported_before_body_arrives() {
    let mut b = raw(PROTOCOL_VERSION, 0x7f, &[0; 100]);
    b.truncate(20);
    assert_eq!(code_of(b), ErrorCode::UnknownType);
}

#[test]
fn unknown_types() {
    for t in [0x00, 0x0b, 0x26, 0x7f, 0x80, 0xbf, 0xc0, 0xff] {
        assert_eq!(
            code_of(raw(PROTOCOL_VERSION, t, &[])),
            ErrorCode::UnknownType
        );
    }
}

#[test]
fn garbage_bodies() {
    // Sub with a channel length far past the body.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x10, &[0x7f, b'a'])),
        ErrorCode::Malformed
    );
    // Ping must be empty.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x04, &[0])),
        ErrorCode::Malformed
    );
    // Trailing bytes after a whole Unsub.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x11, &[1, b'a', 9, 9])),
        ErrorCode::Malformed
    );
    // An Option tag that is neither 0 nor 1.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x10, &[1, b'a', 7])),
        ErrorCode::Malformed
    );
    // A varint that never ends.
    assert_eq!(
        code_of(raw(
            PROTOCOL_VERSION,
            0x25,
            &[
                0, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]
        )),
        ErrorCode::Malformed
    );
    // An enum variant that does not exist.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x40, &[9])),
        ErrorCode::Malformed
    );
    // Empty Publish body.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x20, &[])),
        ErrorCode::Malformed
    );
}

#[test]
fn invalid_utf8_in_names() {
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x10, &[2, 0xc3, 0x28, 0])),
        ErrorCode::Malformed
    );
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x20, &[2, 0xff, 0xfe, 0, 0, b'x'])),
        ErrorCode::Malformed
    );
}

#[test]
fn names_break_rules() {
    // Empty channel.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x10, &[0, 0])),
        ErrorCode::InvalidName
    );
    // Space in a channel.
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x11, &[3, b'a', b' ', b'b'])),
        ErrorCode::InvalidName
    );
    // Longer than the limit.
    let mut body = vec![129, 1];
    body.extend(std::iter::repeat_n(b'x', 129));
    body.push(0);
    assert_eq!(
        code_of(raw(PROTOCOL_VERSION, 0x10, &body)),
        ErrorCode::InvalidName
    );
}

#[test]
fn error_codes_round_trip_and_unknown_maps_to_internal() {
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_u16(*c as u16), *c);
    }
    assert_eq!(ErrorCode::from_u16(999), ErrorCode::Internal);
}
