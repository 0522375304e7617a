//! Where sequenced messages live beyond the forwarding loops' rings: the
//! [`Store`] seam, its two implementations, and what a restart reads back.
//!
//! The rings in the shards hold the newest of each conversation's retained
//! messages, up to a byte cap, and serve resume and offline delivery. A
//! store adds persistence: [`MemoryStore`] keeps nothing beyond the rings
//! (a restart starts a new epoch), [`DiskStore`] writes every message and
//! acknowledgement to an embedded database with an fsync per batch,
//! rebuilds the rings from it at start, and answers history pages that
//! reach below a ring ([`Store::read_range`]).

pub(crate) mod commit;
mod disk;
mod memory;
#[cfg(test)]
pub(crate) mod recording;
mod row;

use std::sync::Arc;

use bytes::Bytes;

pub use crate::conversation::ConversationId;
use crate::retention::RetentionPolicy;

pub use disk::DiskStore;
pub use memory::MemoryStore;

/// One sequenced message: stored once, whatever the number of recipients.
#[derive(Debug, Clone)]
pub struct Record {
    /// Where it belongs.
    pub conversation: ConversationId,
    /// Its place in the conversation.
    pub seq: u64,
    /// Server time when sequenced, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The encoded `Deliver` frame, length prefix included.
    pub frame: Bytes,
}

/// A user's read position in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRecord {
    /// The user.
    pub user: Arc<str>,
    /// The conversation.
    pub conversation: ConversationId,
    /// Delivered up to and including this seq.
    pub seq: u64,
}

/// What one write makes durable, all or nothing.
#[derive(Debug, Default)]
pub struct Batch {
    /// New messages, in the order they were sequenced.
    pub messages: Vec<Record>,
    /// Read positions that moved.
    pub acks: Vec<AckRecord>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.acks.is_empty()
    }
}

/// One conversation as read back at start.
#[derive(Debug)]
pub struct RecoveredConversation {
    /// Which one.
    pub conversation: ConversationId,
    /// Its last seq: the next message gets `last + 1`, even when retention
    /// has dropped every message.
    pub last: u64,
    /// The retained messages, oldest first.
    pub messages: Vec<Record>,
}

/// Everything a store holds, read back at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every conversation that ever had a message.
    pub conversations: Vec<RecoveredConversation>,
    /// Every user's read positions.
    pub acks: Vec<AckRecord>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be made or opened.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database file could not be opened.
    #[error("cannot open {path}: {why}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// The database refused an operation.
    #[error("store: {0}")]
    Db(String),
    /// Something stored does not read back as what was written.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The database was written with a table layout this build does not
    /// read.
    #[error(
        "{path} holds store schema {found}; this build reads schema {supported}: \
         use the apm-server build that wrote it, or another data directory"
    )]
    Schema {
        /// The database file.
        path: std::path::PathBuf,
        /// The schema it holds.
        found: u64,
        /// The schema this build reads.
        supported: u64,
    },
}

/// Persistence for sequenced messages and read positions.
///
/// Called from one writer thread (group commit) and, at start, from the
/// server's constructor: implementations need no internal ordering beyond
/// applying each batch atomically.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Whether a batch survives a crash once [`Store::write`] returned. A
    /// store that is not durable is never written to: its receipts go out
    /// as soon as a message is sequenced.
    fn is_durable(&self) -> bool;

    /// Identifies this store's conversation state: seqs from another epoch
    /// mean nothing here.
    fn epoch(&self) -> u64;

    /// Makes `batch` durable, atomically, and drops what `keep` no longer
    /// allows by count.
    fn write(&self, batch: &Batch, keep: &RetentionPolicy) -> Result<(), StoreError>;

    /// Drops messages past their conversation's age limit as of `now_ms`.
    fn expire(&self, now_ms: u64, keep: &RetentionPolicy) -> Result<(), StoreError>;

    /// Reads back every conversation's last seq, its messages within
    /// `keep`, and every read position.
    fn recover(&self, keep: &RetentionPolicy) -> Result<Recovered, StoreError>;

    /// `conversation`'s messages with `from <= seq <= to` that `keep`
    /// still allows, oldest first: where a read that misses the in-memory
    /// ring falls back to. A store that keeps nothing beyond the rings
    /// answers with nothing.
    fn read_range(
        &self,
        conversation: &ConversationId,
        from: u64,
        to: u64,
        keep: &RetentionPolicy,
    ) -> Result<Vec<Record>, StoreError>;

    /// `conversation`'s last seq, if it ever had a message: what a
    /// conversation the loop dropped from memory starts from again.
    fn last(&self, conversation: &ConversationId) -> Result<Option<u64>, StoreError>;

    /// How far `user` has read `conversation`, if the store knows.
    fn acked(&self, user: &str, conversation: &ConversationId) -> Result<Option<u64>, StoreError>;

    /// Records that `user`'s tokens are refused until `until_ms`
    /// (milliseconds since the Unix epoch); a time in the past lifts the
    /// revocation. Durable when the store is. A store that cannot keep
    /// them says so, and the revocation is refused.
    fn revoke(&self, user: &str, until_ms: u64) -> Result<(), StoreError> {
        let _ = (user, until_ms);
        Err(StoreError::Db(
            "this store does not keep revocations".into(),
        ))
    }

    /// Adds to what the next start takes back with
    /// [`Store::take_presence`]: users online, and (channel, user)
    /// memberships, when a graceful shutdown began. A store that keeps
    /// nothing across restarts keeps nothing here either.
    fn save_presence(
        &self,
        users: &[String],
        members: &[(String, String)],
    ) -> Result<(), StoreError> {
        let _ = (users, members);
        Ok(())
    }

    /// What [`Store::save_presence`] kept, emptied as it is read.
    #[allow(clippy::type_complexity)]
    fn take_presence(&self) -> Result<(Vec<String>, Vec<(String, String)>), StoreError> {
        Ok((Vec::new(), Vec::new()))
    }

    /// Adds (`on`) or removes `user`'s server-side subscription to
    /// `channel`, keeping at most `max` per user. Durable once returned
    /// when the store is.
    fn set_subscription(
        &self,
        user: &str,
        channel: &str,
        on: bool,
        max: usize,
    ) -> Result<SubscriptionChange, StoreError> {
        let _ = (user, channel, on, max);
        Err(StoreError::Db(
            "this store does not keep server-side subscriptions".into(),
        ))
    }

    /// `user`'s server-side subscriptions, in name order.
    fn subscriptions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let _ = user;
        Ok(Vec::new())
    }

    /// Whether any user has a server-side subscription: when none has, a
    /// handshake skips looking.
    fn has_subscriptions(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Every revocation still running at `now_ms`: user and end time.
    fn revocations(&self, now_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let _ = now_ms;
        Ok(Vec::new())
    }
}

/// What [`Store::set_subscription`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// The subscription is new.
    Added,
    /// The subscription is gone.
    Removed,
    /// It was already so.
    Unchanged,
    /// Not added: the user holds the most allowed.
    Full,
}

/// Which store a server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Nothing beyond memory: history lasts as long as the process.
    Memory,
    /// An embedded database in the data directory (redb), fsync'd per batch.
    Disk,
}
