//! Conversations and what the server delivers in them: [`Conversation`]
//! and its borrowed form, `Deliver` (owned and borrowed), and the `Receipt`
//! and `Ack` that follow a message through.

use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

/// Which ordered stream a message belongs to.
///
/// The name is a `String` in what a client builds and sends (the default);
/// in a received [`Deliver`] it is a [`ByteString`] that shares the bytes of
/// the frame it came in, so that receiving allocates nothing. Both encode to
/// the same bytes; [`Conversation::as_ref`] compares and matches either
/// without caring which, and `Conversation::from` turns a received one into
/// the `String` form the requests take (for an `Ack`, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conversation<S = String> {
    /// A channel.
    Channel(S),
    /// A user's private inbox: messages sent to that user with `Direct`.
    User(S),
    /// Server-wide broadcasts.
    Broadcast,
}

/// A borrowed [`Conversation`]; encodes to the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ConversationRef<'a> {
    /// A channel.
    Channel(&'a str),
    /// A user's private inbox.
    User(&'a str),
    /// Server-wide broadcasts.
    Broadcast,
}

impl<S: Deref<Target = str>> Conversation<S> {
    /// The borrowed form.
    pub fn as_ref(&self) -> ConversationRef<'_> {
        match self {
            Conversation::Channel(c) => ConversationRef::Channel(c),
            Conversation::User(u) => ConversationRef::User(u),
            Conversation::Broadcast => ConversationRef::Broadcast,
        }
    }

    /// The channel's name, for a channel.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Conversation::Channel(c) => Some(c),
            _ => None,
        }
    }
}

/// A received conversation in the form requests take; copies the name.
impl From<Conversation<ByteString>> for Conversation {
    fn from(c: Conversation<ByteString>) -> Conversation {
        c.as_ref().to_owned()
    }
}

/// A conversation in the received form, for building a [`Deliver`] (in a
/// test, say); the name moves over without a copy.
impl From<Conversation> for Conversation<ByteString> {
    fn from(c: Conversation) -> Conversation<ByteString> {
        match c {
            Conversation::Channel(c) => Conversation::Channel(c.into()),
            Conversation::User(u) => Conversation::User(u.into()),
            Conversation::Broadcast => Conversation::Broadcast,
        }
    }
}

impl ConversationRef<'_> {
    /// The owned form.
    pub fn to_owned(self) -> Conversation {
        match self {
            ConversationRef::Channel(c) => Conversation::Channel(c.to_owned()),
            ConversationRef::User(u) => Conversation::User(u.to_owned()),
            ConversationRef::Broadcast => Conversation::Broadcast,
        }
    }
}

/// The fields of a `Deliver` frame, borrowed, for encoding one without
/// building an owned [`Deliver`] first (the server's per-message path).
#[derive(Debug, Clone, Copy)]
pub struct DeliverRef<'a> {
    /// The conversation.
    pub conversation: ConversationRef<'a>,
    /// Its seq.
    pub seq: u64,
    /// Its server time.
    pub ts_ms: u64,
    /// The sender.
    pub sender: &'a str,
    /// What the payload holds.
    pub kind: u16,
    /// The sender's client message id.
    pub msg_id: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// One message of a conversation, server to client.
///
/// Decoded without a copy: the conversation's name, the sender and the
/// payload all share the bytes of the frame it arrived in, so cloning or
/// keeping one is cheap, and keeping one keeps that frame's memory (a few
/// hundred bytes for a typical message).
///
/// # Examples
///
/// ```
/// use apm_core::message::{Conversation, ConversationRef, Deliver};
///
/// let d = Deliver {
///     conversation: Conversation::Channel("news".into()),
///     seq: 1,
///     ts_ms: 0,
///     sender: "alice".into(),
///     kind: 0,
///     msg_id: 0,
///     payload: "hi".into(),
/// };
/// assert_eq!(d.conversation.as_ref(), ConversationRef::Channel("news"));
/// let sender: &str = &d.sender;
/// assert_eq!(sender, "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The conversation.
    pub conversation: Conversation<ByteString>,
    /// Position in the conversation, starting at 1, increasing by 1.
    pub seq: u64,
    /// Server time when sequenced, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The authenticated user who sent it.
    pub sender: ByteString,
    /// What the payload holds.
    pub kind: u16,
    /// The sender's client message id; 0 for none.
    pub msg_id: u64,
    /// The application payload.
    pub payload: Bytes,
}

/// A publish was sequenced (correlated by the header's request id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The conversation it went to.
    pub conversation: Conversation,
    /// The assigned seq.
    pub seq: u64,
    /// The assigned server time.
    pub ts_ms: u64,
}

/// The client has everything of a conversation up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The conversation.
    pub conversation: Conversation,
    /// Delivered up to and including this seq.
    pub seq: u64,
}
