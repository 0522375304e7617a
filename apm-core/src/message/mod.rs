//! Message bodies: the [`Message`] enum, one variant per message type,
//! and the structs those variants carry.
//!
//! The structs are grouped by what they are for, one file per group, and
//! re-exported here so every type is `apm_core::message::Name`. How a body
//! turns into bytes and back (postcard, with the raw payload after the
//! postcard head) lives in `body.rs`.

use crate::error::{DecodeError, ErrorCode};
use crate::limits::Limits;
use crate::message_type::MessageType;
use crate::names::validate_name;

mod body;
mod conversation;
mod history;
mod presence;
mod sending;
mod session;
mod subscription;

pub use conversation::{Ack, Conversation, ConversationRef, Deliver, DeliverRef, Receipt};
pub use history::{
    HistoryItem, HistoryRequest, HistoryResponse, Unread, UnreadRequest, UnreadResponse,
};
pub use presence::{PresenceEvent, PresenceQuery, PresenceResponse};
pub use sending::{Broadcast, Direct, Publish, content_kind};
pub use session::{CloseBody, ErrorBody, Grant, GrantOk, Hello, Refresh, RefreshOk, Role, Welcome};
pub use subscription::{Sub, SubOk, Unsub, UnsubOk};

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
    /// See [`Refresh`].
    Refresh(Refresh),
    /// See [`RefreshOk`].
    RefreshOk(RefreshOk),
    /// See [`Grant`].
    Grant(Grant),
    /// See [`GrantOk`].
    GrantOk(GrantOk),
    /// See [`Sub`].
    Sub(Sub),
    /// See [`Unsub`].
    Unsub(Unsub),
    /// See [`SubOk`].
    SubOk(SubOk),
    /// See [`UnsubOk`].
    UnsubOk(UnsubOk),
    /// A server-side subscription took effect: its channel, last seq and
    /// oldest replayable seq, as a [`SubOk`] says them.
    ServerSub(SubOk),
    /// A server-side subscription ended: nothing more of the channel
    /// follows.
    ServerUnsub(UnsubOk),
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
            Message::Refresh(_) => MessageType::Refresh,
            Message::RefreshOk(_) => MessageType::RefreshOk,
            Message::Grant(_) => MessageType::Grant,
            Message::GrantOk(_) => MessageType::GrantOk,
            Message::Sub(_) => MessageType::Sub,
            Message::Unsub(_) => MessageType::Unsub,
            Message::SubOk(_) => MessageType::SubOk,
            Message::UnsubOk(_) => MessageType::UnsubOk,
            Message::ServerSub(_) => MessageType::ServerSub,
            Message::ServerUnsub(_) => MessageType::ServerUnsub,
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
