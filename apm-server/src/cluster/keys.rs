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

/// The first copy's seq and time of `sender`'s message `msg_id`.
pub(crate) fn retry(c: &ConversationId, sender: &str, msg_id: u64) -> String {
    format!("apm:{{{}}}:r:{msg_id}:{sender}", c.key())
}
