//! Reading back: pages of a conversation's history and per-conversation
//! unread counts.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Conversation;

/// Read a page of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The conversation.
    pub conversation: Conversation,
    /// Only messages with a seq below this.
    pub before: Option<u64>,
    /// Only messages with a seq above this.
    pub after: Option<u64>,
    /// At most this many (the server caps it further).
    pub limit: u32,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The conversation.
    pub conversation: Conversation,
    /// The oldest seq still retained.
    pub oldest: u64,
    /// The newest seq.
    pub last: u64,
    /// The messages, in seq order.
    pub messages: Vec<HistoryItem>,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Its seq.
    pub seq: u64,
    /// Its server time.
    pub ts_ms: u64,
    /// Who sent it.
    pub sender: String,
    /// What the payload holds.
    pub kind: u16,
    /// The sender's client message id.
    pub msg_id: u64,
    /// The payload.
    pub payload: Bytes,
}

/// How far the user has read some conversations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadRequest {
    /// The conversations, answered in this order (the server answers at
    /// most its unread page size).
    pub conversations: Vec<Conversation>,
}

/// The answer to an [`UnreadRequest`], correlated by request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadResponse {
    /// One entry per conversation asked about, in the order asked.
    pub counts: Vec<Unread>,
}

/// One user's position in one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    /// The conversation.
    pub conversation: Conversation,
    /// Its last delivered seq (0 if it has none).
    pub last: u64,
    /// The highest seq the user acknowledged with `Ack` (0 if none).
    pub acked: u64,
}

impl Unread {
    /// Messages after the user's acknowledged seq.
    pub fn count(&self) -> u64 {
        self.last.saturating_sub(self.acked)
    }
}
