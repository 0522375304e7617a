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
    /// The TLS handshake failed (a certificate not trusted or not for
    /// this server, a server that does not speak TLS), or the TLS settings
    /// are unusable (a CA PEM with no certificate).
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
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
    /// Too many messages wait for their receipts (sent while the server
    /// was away, say): the outbox's bounds (see
    /// [`ClientBuilder::outbox`](crate::ClientBuilder::outbox)) are reached.
    #[error("the outbox is full: {messages} messages, {bytes} bytes wait for receipts")]
    OutboxFull {
        /// Messages waiting.
        messages: usize,
        /// Their payload bytes.
        bytes: usize,
    },
    /// A message sent with a receipt got none within the give-up time
    /// (see [`ClientBuilder::give_up_after`](crate::ClientBuilder::give_up_after)),
    /// reconnects included. It may or may not have been taken.
    #[error("no receipt within {0:?}: gave up")]
    GaveUp(std::time::Duration),
    /// The app's token callback failed.
    #[error("no token: {0}")]
    Token(String),
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

    /// For a message the server refused for its rate limits
    /// ([`ErrorCode::RateLimited`]), how long it asked to wait before
    /// sending it again: the `N` of the text's closing `retry after N ms`.
    ///
    /// # Examples
    ///
    /// ```
    /// use apm_client::{Error, ErrorCode};
    /// use std::time::Duration;
    ///
    /// let e = Error::Server {
    ///     code: ErrorCode::RateLimited,
    ///     message: "rate limit per user (40/s, burst 40): retry after 25 ms".into(),
    /// };
    /// assert_eq!(e.retry_after(), Some(Duration::from_millis(25)));
    /// ```
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let Error::Server {
            code: ErrorCode::RateLimited,
            message,
        } = self
        else {
            return None;
        };
        let ms = message
            .strip_suffix(" ms")?
            .rsplit_once("retry after ")?
            .1
            .parse()
            .ok()?;
        Some(std::time::Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_after_reads_the_closing_words_only() {
        let limited = |message: &str| Error::Server {
            code: ErrorCode::RateLimited,
            message: message.into(),
        };
        assert_eq!(
            limited("retry after 1 ms").retry_after(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            limited("anything at all: retry after 1500 ms").retry_after(),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "retry after ms",
            "retry after 5ms",
            "retry after -5 ms",
            "slow down",
        ] {
            assert_eq!(limited(bad).retry_after(), None, "{bad:?}");
        }
        let other = Error::Server {
            code: ErrorCode::Forbidden,
            message: "retry after 5 ms".into(),
        };
        assert_eq!(other.retry_after(), None);
        assert_eq!(Error::Timeout.retry_after(), None);
    }
}
