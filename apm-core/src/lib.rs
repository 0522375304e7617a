//! The apm wire protocol.
//!
//! Every frame is a big-endian `u32` length, a fixed 8-byte [`Header`] and a
//! body. Bodies are [postcard](https://docs.rs/postcard) encodings of the
//! structs in [`message`]; the four message types that carry an application
//! payload (`Publish`, `Direct`, `Broadcast`, `Deliver`) put the raw payload
//! after the postcard part so it can be split off the read buffer without a
//! copy. `PROTOCOL.md` beside this crate is the normative description.
//!
//! This crate does no I/O: [`codec::ApmCodec`] plugs into
//! `tokio_util::codec::Framed`, and [`Frame::to_bytes`] encodes a frame once
//! into a [`bytes::Bytes`] that many connections can share. Decoding is
//! zero-copy where it matters: a received [`message::Deliver`]'s payload,
//! conversation name and sender are all slices of the frame's bytes (the
//! names as [`ByteString`]s, checked to be UTF-8 once), so a client receives
//! a message without allocating.
//!
//! The `test-support` feature adds `samples` and `fuzzing`, which this
//! crate's tests and its fuzz target share; they are not part of the API.
//!
//! # Examples
//!
//! ```
//! use apm_core::{Frame, Message, message::Publish};
//! use bytes::{Bytes, BytesMut};
//!
//! let frame = Frame::new(7, Message::Publish(Publish {
//!     channel: "news".into(),
//!     kind: 1,
//!     msg_id: 0,
//!     payload: Bytes::from_static(b"hello"),
//! }));
//! let wire = frame.to_bytes().unwrap();
//! let mut buf = BytesMut::from(&wire[..]);
//! let decoded = apm_core::codec::decode_frame(&mut buf, &Default::default()).unwrap().unwrap();
//! assert_eq!(decoded, frame);
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod capabilities;
pub mod codec;
pub mod error;
pub mod frame;
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub mod limits;
pub mod message;
mod message_type;
pub mod names;
#[cfg(feature = "test-support")]
pub mod samples;

pub use bytestring::ByteString;
pub use capabilities::Capabilities;
pub use codec::ApmCodec;
pub use error::{DecodeError, EncodeError, ErrorCode};
pub use frame::{Flags, Frame, HEADER_LEN, Header, LENGTH_LEN, MessageType, PROTOCOL_VERSION};
pub use limits::Limits;
pub use message::Message;
