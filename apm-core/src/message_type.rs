//! The message type numbers: the header byte that says what a frame
//! holds, and which numbers are free for later versions.

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)*) => {
        /// The message type byte of the header.
        ///
        /// `0x00` is never used; `0x80..=0xBF` are reserved for future
        /// extensions of this protocol and `0xC0..=0xFF` for private,
        /// deployment-specific extensions. A receiver that meets a type it
        /// does not know answers with `UnknownType` and closes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MessageType {
            $($(#[$doc])* $name = $value,)*
        }

        impl MessageType {
            /// Every message type, in numeric order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$name,)*];

            /// The type for a raw header byte, if it is a known one.
            pub fn from_u8(value: u8) -> Option<MessageType> {
                match value {
                    $($value => Some(MessageType::$name),)*
                    _ => None,
                }
            }
        }
    };
}

message_types! {
    /// Client to server, first frame: identity and credentials.
    Hello = 0x01,
    /// Server to client: the handshake succeeded.
    Welcome = 0x02,
    /// Either way: a request failed, or the connection is about to close.
    Error = 0x03,
    /// Either way: heartbeat request.
    Ping = 0x04,
    /// Either way: heartbeat reply.
    Pong = 0x05,
    /// Either way: orderly close with a reason.
    Close = 0x06,
    /// Client to server: a new token for the open session (capability
    /// `TOKEN_REFRESH`).
    Refresh = 0x07,
    /// Server to client: the new token is in force.
    RefreshOk = 0x08,
    /// Client to server: a subscription token for one members-only
    /// channel (capability `SUB_TOKEN`).
    Grant = 0x09,
    /// Server to client: the session may use that channel.
    GrantOk = 0x0a,
    /// Client to server: join a channel.
    Sub = 0x10,
    /// Client to server: leave a channel.
    Unsub = 0x11,
    /// Server to client: the join took effect.
    SubOk = 0x12,
    /// Server to client: the leave took effect.
    UnsubOk = 0x13,
    /// Server to client: the server subscribed the session's user to a
    /// channel (capability `SERVER_SUBS`); the body is a `SubOk`'s.
    ServerSub = 0x14,
    /// Server to client: the server ended one of the user's server-side
    /// subscriptions (capability `SERVER_SUBS`); the body is an `UnsubOk`'s.
    ServerUnsub = 0x15,
    /// Client to server: publish to a channel.
    Publish = 0x20,
    /// Client to server: send to every connection of one user.
    Direct = 0x21,
    /// Client to server: send to every connection (admin role only).
    Broadcast = 0x22,
    /// Server to client: one message of a conversation.
    Deliver = 0x23,
    /// Server to client: a publish was sequenced.
    Receipt = 0x24,
    /// Client to server: delivered up to a sequence number.
    Ack = 0x25,
    /// Client to server: read a page of a conversation's history.
    HistoryRequest = 0x30,
    /// Server to client: a page of history.
    HistoryResponse = 0x31,
    /// Client to server: how far the user has read some conversations.
    UnreadRequest = 0x32,
    /// Server to client: unread counts.
    UnreadResponse = 0x33,
    /// Client to server: a presence question.
    PresenceQuery = 0x40,
    /// Server to client: the answer to a presence question.
    PresenceResponse = 0x41,
    /// Server to client: someone came online, went offline, joined or left.
    PresenceEvent = 0x42,
}
