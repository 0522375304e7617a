//! Presence: who is online and in which channels, asked with
//! `PresenceQuery` or pushed as `PresenceEvent`.

use serde::{Deserialize, Serialize};

/// A presence question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceQuery {
    /// Is this user connected anywhere?
    IsOnline {
        /// The user.
        user: String,
    },
    /// Online users, sorted, after a cursor.
    OnlineUsers {
        /// Start after this user id (exclusive).
        after: Option<String>,
        /// Page size (the server caps it).
        limit: u32,
    },
    /// Users subscribed to a channel, sorted, after a cursor.
    ChannelMembers {
        /// The channel.
        channel: String,
        /// Start after this user id (exclusive).
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// Channels with at least one member, sorted, after a cursor.
    Channels {
        /// Start after this channel (exclusive).
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// This connection's channels.
    MyChannels,
}

/// The answer to a [`PresenceQuery`], correlated by request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceResponse {
    /// Answers `IsOnline`.
    IsOnline {
        /// The user.
        user: String,
        /// How many connections the user holds (0 = offline).
        connections: u32,
    },
    /// Answers `OnlineUsers`.
    Users {
        /// A page of user ids.
        users: Vec<String>,
        /// Cursor for the next page, if there is one.
        next: Option<String>,
    },
    /// Answers `ChannelMembers`.
    Members {
        /// The channel.
        channel: String,
        /// A page of user ids.
        users: Vec<String>,
        /// Cursor for the next page.
        next: Option<String>,
    },
    /// Answers `Channels`.
    Channels {
        /// Channels with their member counts (distinct users).
        channels: Vec<(String, u32)>,
        /// Cursor for the next page.
        next: Option<String>,
    },
    /// Answers `MyChannels`.
    MyChannels {
        /// The channels, sorted.
        channels: Vec<String>,
    },
}

/// Presence news, pushed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceEvent {
    /// The user's first connection came up (sent on `$presence`).
    Online {
        /// The user.
        user: String,
    },
    /// The user's last connection went away (sent on `$presence`).
    Offline {
        /// The user.
        user: String,
    },
    /// The user joined the channel (first connection of that user).
    Join {
        /// The channel.
        channel: String,
        /// The user.
        user: String,
    },
    /// The user left the channel (last connection of that user).
    Leave {
        /// The channel.
        channel: String,
        /// The user.
        user: String,
    },
}
