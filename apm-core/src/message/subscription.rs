//! Channel membership: `Sub`, `Unsub` and the server's `SubOk` and
//! `UnsubOk` answers.

use serde::{Deserialize, Serialize};

/// Join a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sub {
    /// The channel.
    pub channel: String,
    /// Resume: replay messages with a seq greater than this before going
    /// live. `None` goes live at once.
    pub since: Option<u64>,
}

/// Leave a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsub {
    /// The channel.
    pub channel: String,
}

/// The subscription is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubOk {
    /// The channel.
    pub channel: String,
    /// The seq of the last message sequenced in the channel (0 if none); the
    /// next live message has a greater seq.
    pub seq: u64,
    /// The oldest seq the server can still replay. When a resume asked for
    /// more than that, the messages below it are lost to this client.
    pub oldest: u64,
}

/// The subscription is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubOk {
    /// The channel.
    pub channel: String,
}
