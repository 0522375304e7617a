//! What a client sends with a payload: `Publish`, `Direct` and
//! `Broadcast`, and the [`content_kind`] values that say what a payload
//! holds.
//!
//! These bodies are not serde types: the payload goes raw after a postcard
//! head (see `body.rs`).

use bytes::Bytes;

/// Well-known values of the `kind` field that says what a payload holds.
/// Values from 16 up are free for applications.
pub mod content_kind {
    /// Opaque bytes.
    pub const BINARY: u16 = 0;
    /// UTF-8 text.
    pub const TEXT: u16 = 1;
    /// A JSON document.
    pub const JSON: u16 = 2;
}

/// Publish to every member of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The channel.
    pub channel: String,
    /// What the payload holds, see [`content_kind`].
    pub kind: u16,
    /// Client message id for de-duplicating retries; 0 for none.
    pub msg_id: u64,
    /// The application payload (the rest of the frame).
    pub payload: Bytes,
}

/// Send to every connection of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct {
    /// The recipient.
    pub user: String,
    /// What the payload holds.
    pub kind: u16,
    /// Client message id; 0 for none.
    pub msg_id: u64,
    /// The application payload.
    pub payload: Bytes,
}

/// Send to every connection on the server (admin role only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// What the payload holds.
    pub kind: u16,
    /// Client message id; 0 for none.
    pub msg_id: u64,
    /// The application payload.
    pub payload: Bytes,
}
