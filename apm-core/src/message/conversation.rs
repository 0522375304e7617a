//! Conversations and what the server delivers in them: [`Conversation`]
//! and its borrowed form, `Deliver` (owned and borrowed), and the `Receipt`
//! and `Ack` that follow a message through.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which ordered stream a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conversation {
    /// A channel.
    Channel(String),
    /// A user's private inbox: messages sent to that user with `Direct`.
    User(String),
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

impl Conversation {
    /// The borrowed form.
    pub fn as_ref(&self) -> ConversationRef<'_> {
        match self {
            Conversation::Channel(c) => ConversationRef::Channel(c),
            Conversation::User(u) => ConversationRef::User(u),
            Conversation::Broadcast => ConversationRef::Broadcast,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The conversation.
    pub conversation: Conversation,
    /// Position in the conversation, starting at 1, increasing by 1.
    pub seq: u64,
    /// Server time when sequenced, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The authenticated user who sent it.
    pub sender: String,
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
