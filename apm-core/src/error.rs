//! Error codes carried on the wire and the codec's error types.

use serde::{Deserialize, Serialize};

use crate::message_type::MessageType;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $fatal:expr, $text:expr;)*) => {
        /// The `code` of an `Error` or `Close` body.
        ///
        /// Codes below 100 are defined here; 100 and above are reserved for
        /// future versions, and a receiver treats an unknown code as
        /// [`ErrorCode::Internal`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $($(#[$doc])* $name = $value,)*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code for a raw number; unknown numbers map to `Internal`.
            pub fn from_u16(value: u16) -> ErrorCode {
                match value {
                    $($value => ErrorCode::$name,)*
                    _ => ErrorCode::Internal,
                }
            }

            /// Whether the server closes the connection after sending it.
            pub fn is_fatal(self) -> bool {
                match self {
                    $(ErrorCode::$name => $fatal,)*
                }
            }

            /// A short snake_case name, used in logs, metrics and `Close`
            /// reasons.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body could not be decoded for its message type.
    Malformed = 1, true, "malformed";
    /// The header's protocol version is not one the receiver speaks.
    UnsupportedVersion = 2, true, "unsupported_version";
    /// The header's message type is not known.
    UnknownType = 3, true, "unknown_type";
    /// The length prefix exceeds the receiver's frame limit.
    FrameTooLarge = 4, true, "frame_too_large";
    /// A channel name or user id breaks the naming rules.
    InvalidName = 5, true, "invalid_name";
    /// A message that is not valid in this direction or state.
    UnexpectedMessage = 6, true, "unexpected_message";
    /// The first frame was not `Hello`.
    AuthRequired = 10, true, "auth_required";
    /// The token is malformed or its signature does not verify.
    AuthFailed = 11, true, "auth_failed";
    /// The token's expiry has passed.
    TokenExpired = 12, true, "token_expired";
    /// No `Hello` arrived within the handshake timeout.
    HandshakeTimeout = 13, true, "handshake_timeout";
    /// The session's role does not allow the request (broadcast without the
    /// admin role, publishing to a `$` channel).
    Forbidden = 14, false, "forbidden";
    /// The connection already holds the maximum number of subscriptions.
    TooManySubscriptions = 20, true, "too_many_subscriptions";
    /// The server holds the maximum number of connections.
    TooManyConnections = 21, true, "too_many_connections";
    /// The user holds the maximum number of connections.
    TooManyUserConnections = 22, true, "too_many_user_connections";
    /// A message over one of the server's rate limits, not taken. The
    /// text ends with `retry after N ms`: when the same message would be
    /// let through. The connection stays open.
    RateLimited = 23, false, "rate_limited";
    /// The connection's outbound queue was full.
    SlowConsumer = 30, true, "slow_consumer";
    /// Nothing was received within the idle timeout.
    IdleTimeout = 31, true, "idle_timeout";
    /// The server is shutting down.
    ServerShutdown = 32, true, "server_shutdown";
    /// The request needs a feature this server does not have enabled.
    Unsupported = 33, false, "unsupported";
    /// The peer closed normally.
    Normal = 34, true, "normal";
    /// Messages sent to this user while it was away left the server's
    /// memory before they could be delivered (memory store, over its
    /// memory bounds). Sent with request id 0 after `Welcome`; the text
    /// says how many when known. They count as read.
    MessagesLost = 35, false, "messages_lost";
    /// The server's operator ended the session (sent as `Close`): the
    /// client must not reconnect on its own.
    Kicked = 36, true, "kicked";
    /// The user's tokens are refused until a time the text gives as
    /// `until N` (milliseconds since the Unix epoch): a handshake refusal
    /// or a `Close`. The client must not reconnect on its own.
    Revoked = 37, true, "revoked";
    /// Something went wrong inside the server.
    Internal = 50, false, "internal";
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(*self as u16)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why bytes could not be decoded into a frame.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix exceeds the frame limit; nothing was buffered.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The length prefix is smaller than the fixed header.
    #[error("frame length {len} is shorter than the header")]
    BadLength {
        /// The announced length.
        len: usize,
    },
    /// The header names a protocol version this crate does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The header names an unknown message type.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The body is not a valid encoding of its message type.
    #[error("malformed {kind:?} body: {reason}")]
    Malformed {
        /// The message type being decoded.
        kind: MessageType,
        /// What was wrong.
        reason: String,
    },
    /// A name inside the body breaks the naming rules.
    #[error("invalid name \"{name}\": {why}")]
    InvalidName {
        /// The name, cut to 64 characters, with whitespace (but U+0020),
        /// control and invisible characters written as `\u{...}`.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The underlying stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl DecodeError {
    /// The wire error code that reports this error to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::BadLength { .. } => ErrorCode::Malformed,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Malformed { .. } => ErrorCode::Malformed,
            DecodeError::InvalidName { .. } => ErrorCode::InvalidName,
            DecodeError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame would exceed the frame limit.
    #[error("encoded frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The body could not be serialized.
    #[error("serialize: {0}")]
    Serialize(#[from] postcard::Error),
    /// The underlying stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
