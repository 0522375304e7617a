//! Where apm keeps a conversation in Redis. Every key of a conversation
//! carries its name in braces (a hash tag), so a Redis Cluster keeps them
//! on one node, where the script can reach them all.

use crate::conversation::ConversationId;

/// The cluster's epoch: set once by the first node, gone when Redis lost
/// its data.
pub(crate) const EPOCH: &str = "apm:epoch";

/// Where every message is published, for every node.
pub(crate) const MESSAGES: &str = "apm:messages";

/// Where a node sends itself probes, to learn that its subscription
/// still hears: unique to the node's process.
pub(crate) fn probe() -> String {
    format!(
        "apm:probe:{}:{}",
        std::process::id(),
        crate::clock::now_ms()
    )
}

/// The conversation's stream: entry `0-SEQ` holds message SEQ, and its
/// last id is the conversation's last seq.
pub(crate) fn log(c: &ConversationId) -> String {
    format!("apm:{{{}}}:log", c.key())
}

/// Where read positions are published, for every node.
pub(crate) const ACKS: &str = "apm:acks";

/// The conversation's read positions: user -> seq.
pub(crate) fn acks(c: &ConversationId) -> String {
    format!("apm:{{{}}}:acks", c.key())
}

/// `sender`'s message `msg_id` in `c`, as a field of the retry hashes
/// (`apm:r:PERIOD`, one per period of `--dedup-keep-secs`, named by the
/// script from Redis's clock; the field holds the first copy's `"SEQ
/// TS"`):
/// the conversation's key after its length, the sender, a space, the id
/// (the id has no space, so the last one separates them).
pub(crate) fn retry_field(c: &ConversationId, sender: &str, msg_id: u64) -> String {
    let key = c.key();
    format!("{}:{key}{sender} {msg_id}", key.len())
}
