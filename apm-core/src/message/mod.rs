//! Message bodies: the [`Message`] enum, one variant per message type, and
//! the structs those variants carry.
//!
//! How a body turns into bytes and back (postcard, with the raw payload
//! after the postcard head) lives in `body.rs`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, ErrorCode};
use crate::frame::MessageType;
use crate::limits::Limits;
use crate::names::validate_name;

mod body;

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

/// Every message the protocol knows, with its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`ErrorBody`].
    Error(ErrorBody),
    /// Heartbeat request; empty body.
    Ping,
    /// Heartbeat reply; empty body.
    Pong,
    /// See [`CloseBody`].
    Close(CloseBody),
    /// See [`Sub`].
    Sub(Sub),
    /// See [`Unsub`].
    Unsub(Unsub),
    /// See [`SubOk`].
    SubOk(SubOk),
    /// See [`UnsubOk`].
    UnsubOk(UnsubOk),
    /// See [`Publish`].
    Publish(Publish),
    /// See [`Direct`].
    Direct(Direct),
    /// See [`Broadcast`].
    Broadcast(Broadcast),
    /// See [`Deliver`].
    Deliver(Deliver),
    /// See [`Receipt`].
    Receipt(Receipt),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`HistoryRequest`].
    HistoryRequest(HistoryRequest),
    /// See [`HistoryResponse`].
    HistoryResponse(HistoryResponse),
    /// See [`UnreadRequest`].
    UnreadRequest(UnreadRequest),
    /// See [`UnreadResponse`].
    UnreadResponse(UnreadResponse),
    /// See [`PresenceQuery`].
    PresenceQuery(PresenceQuery),
    /// See [`PresenceResponse`].
    PresenceResponse(PresenceResponse),
    /// See [`PresenceEvent`].
    PresenceEvent(PresenceEvent),
}

/// The session's privileges, carried in tokens and `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Role {
    /// An ordinary user.
    #[default]
    User,
    /// May `Broadcast`.
    Admin,
}

/// Client to server, the first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The user id to act as. With token auth it may be empty; if not, it
    /// must equal the token's user.
    pub user: String,
    /// A signed token; empty when the server runs in dev mode.
    pub token: String,
    /// Free-form client name and version, for logs.
    pub client: String,
}

/// Server to client: the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server-assigned id of this connection.
    pub session_id: u64,
    /// The authenticated user id; the sender of everything this connection
    /// publishes.
    pub user: String,
    /// The session's role.
    pub role: Role,
    /// Server clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// How often the client should send something (a `Ping` if idle).
    pub heartbeat_ms: u32,
    /// After this long with nothing received the server closes.
    pub idle_timeout_ms: u32,
    /// The server's frame limit.
    pub max_frame_len: u32,
    /// Identifies the server's conversation state. Seqs from a session
    /// with another epoch mean nothing here (the server started afresh):
    /// a client resets what it remembers of seqs when this changes.
    pub epoch: u64,
}

/// A request failed, or (for fatal codes) the connection is closing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub message: String,
}

/// An orderly close with a reason, sent by either side before it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseBody {
    /// Why.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub reason: String,
}

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

impl Message {
    /// The header type byte for this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Welcome(_) => MessageType::Welcome,
            Message::Error(_) => MessageType::Error,
            Message::Ping => MessageType::Ping,
            Message::Pong => MessageType::Pong,
            Message::Close(_) => MessageType::Close,
            Message::Sub(_) => MessageType::Sub,
            Message::Unsub(_) => MessageType::Unsub,
            Message::SubOk(_) => MessageType::SubOk,
            Message::UnsubOk(_) => MessageType::UnsubOk,
            Message::Publish(_) => MessageType::Publish,
            Message::Direct(_) => MessageType::Direct,
            Message::Broadcast(_) => MessageType::Broadcast,
            Message::Deliver(_) => MessageType::Deliver,
            Message::Receipt(_) => MessageType::Receipt,
            Message::Ack(_) => MessageType::Ack,
            Message::HistoryRequest(_) => MessageType::HistoryRequest,
            Message::HistoryResponse(_) => MessageType::HistoryResponse,
            Message::UnreadRequest(_) => MessageType::UnreadRequest,
            Message::UnreadResponse(_) => MessageType::UnreadResponse,
            Message::PresenceQuery(_) => MessageType::PresenceQuery,
            Message::PresenceResponse(_) => MessageType::PresenceResponse,
            Message::PresenceEvent(_) => MessageType::PresenceEvent,
        }
    }

    /// Checks the channel names and user ids of client-to-server requests
    /// against the naming rules. Server-to-client messages are not checked.
    pub fn validate(&self, limits: &Limits) -> Result<(), DecodeError> {
        let conv = |c: &Conversation| match c {
            Conversation::Channel(n) | Conversation::User(n) => validate_name(n, limits),
            Conversation::Broadcast => Ok(()),
        };
        match self {
            Message::Hello(m) if !m.user.is_empty() => validate_name(&m.user, limits),
            Message::Sub(m) => validate_name(&m.channel, limits),
            Message::Unsub(m) => validate_name(&m.channel, limits),
            Message::Publish(m) => validate_name(&m.channel, limits),
            Message::Direct(m) => validate_name(&m.user, limits),
            Message::Ack(m) => conv(&m.conversation),
            Message::HistoryRequest(m) => conv(&m.conversation),
            Message::UnreadRequest(m) => m.conversations.iter().try_for_each(conv),
            Message::PresenceQuery(PresenceQuery::IsOnline { user }) => validate_name(user, limits),
            Message::PresenceQuery(PresenceQuery::ChannelMembers { channel, .. }) => {
                validate_name(channel, limits)
            }
            _ => Ok(()),
        }
    }

    /// An `Error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error(ErrorBody {
            code,
            message: message.into(),
        })
    }

    /// A `Close` message.
    pub fn close(code: ErrorCode, reason: impl Into<String>) -> Message {
        Message::Close(CloseBody {
            code,
            reason: reason.into(),
        })
    }
}
