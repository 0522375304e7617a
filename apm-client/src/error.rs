//! The client's error type.

use apm_core::ErrorCode;

/// What can go wrong with a client call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server refused the handshake (bad token, limits).
    #[error("handshake refused: {code}: {message}")]
    Handshake {
        /// The server's code.
        code: ErrorCode,
        /// The server's detail.
        message: String,
    },
    /// The server refused a request.
    #[error("server refused the request: {code}: {message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's detail.
        message: String,
    },
    /// The connection dropped before the reply came; the request may or may
    /// not have taken effect.
    #[error("disconnected before the reply")]
    Disconnected,
    /// The client was closed (every handle dropped, `close` called, or
    /// reconnecting gave up).
    #[error("the client is closed")]
    Closed,
    /// No reply within the request timeout.
    #[error("no reply within the request timeout")]
    Timeout,
    /// The send queue is full and the client was built to fail rather than
    /// wait.
    #[error("the send queue is full")]
    QueueFull,
    /// The server sent something this client cannot decode, or the request
    /// cannot be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A stream that can be taken once was already taken.
    #[error("{0} was already taken")]
    AlreadyTaken(&'static str),
}

impl Error {
    /// The server's error code, when the server refused something.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Handshake { code, .. } | Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
