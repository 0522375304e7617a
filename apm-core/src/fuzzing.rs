//! The decoder harness shared by the cargo-fuzz target and the mutation
//! test in the normal test suite. Built only with the `test-support`
//! feature.

use bytes::BytesMut;

use crate::codec::decode_frame;
use crate::limits::Limits;

/// Feeds arbitrary bytes to the decoder and checks what it must guarantee:
/// no panic, no buffering past the frame limit, and every frame it accepts
/// re-encodes and decodes back to itself.
///
/// Returns how many frames decoded before the input ran out or an error
/// stopped it.
pub fn decode_harness(data: &[u8]) -> usize {
    let limits = Limits {
        max_frame_len: 4096,
        max_name_len: 32,
    };
    let mut buf = BytesMut::from(data);
    let mut frames = 0;
    loop {
        match decode_frame(&mut buf, &limits) {
            Ok(Some(frame)) => {
                frames += 1;
                let wire = frame
                    .to_bytes_limited(limits.max_frame_len)
                    .expect("a decoded frame re-encodes");
                let mut again = BytesMut::from(&wire[..]);
                let back = decode_frame(&mut again, &limits)
                    .expect("re-encoded frame decodes")
                    .expect("re-encoded frame is whole");
                assert_eq!(back, frame);
            }
            Ok(None) => {
                assert!(
                    buf.capacity() <= limits.max_frame_len as usize + 4 + data.len(),
                    "decoder reserved past the frame limit"
                );
                return frames;
            }
            Err(_) => return frames,
        }
    }
}
