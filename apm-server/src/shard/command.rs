//! The shard's vocabulary: the commands its loop takes, the answers it
//! gives to queries, and the records of a message on its way (sequenced,
//! then durable).

use std::sync::Arc;

use apm_core::message::{Conversation, HistoryRequest, PresenceQuery, Unread};
use apm_core::{ErrorCode, Flags};
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::conversation::ConversationId;
use crate::outbox::Conn;
use crate::store::Record;

/// Work for a forwarding loop. Everything that touches a shard's tables
/// arrives this way, so commands from one connection take effect in the
/// order they were sent.
#[derive(Debug)]
pub(crate) enum Command {
    /// A handshake completed: add the connection to its user.
    /// `welcome` is queued to the connection first, then any private
    /// messages it has not acknowledged.
    Register {
        conn: Arc<Conn>,
        welcome: Bytes,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    /// The connection is gone.
    Unregister { conn: Arc<Conn> },
    /// Close every connection of `user` with `code`, answering how many.
    Kick {
        user: Arc<str>,
        code: ErrorCode,
        reply: oneshot::Sender<u32>,
    },
    Sub {
        conn: Arc<Conn>,
        channel: String,
        since: Option<u64>,
        asker: Asker,
    },
    Unsub {
        conn: Arc<Conn>,
        channel: Arc<str>,
        asker: Asker,
    },
    /// `user`'s server-side subscriptions changed: its connections here
    /// read them again. Answers how many it told.
    SubscriptionsChanged {
        user: Arc<str>,
        reply: oneshot::Sender<u32>,
    },
    /// A new message for a channel, a user or everyone.
    Send(Outgoing),
    History {
        conn: Arc<Conn>,
        request_id: u32,
        req: HistoryRequest,
    },
    /// The connection's user has `conversation` up to `seq`.
    Ack {
        conn: Arc<Conn>,
        conversation: ConversationId,
        seq: u64,
    },
    /// Cluster mode: a message from the feed, not yet decoded: this
    /// shard owns its conversation (or, with `sender_copy`, its sender,
    /// whose devices here see a private message they sent elsewhere).
    Published {
        seq: u64,
        body: bytes::Bytes,
        sender_copy: bool,
    },
    /// Cluster mode: `user`'s read position in `conversation` moved on
    /// some node.
    RemoteAck {
        user: Arc<str>,
        conversation: ConversationId,
        seq: u64,
    },
    /// Unread counts of `user` in some of the conversations owned here;
    /// each answer keeps the index it was asked with.
    Unread {
        user: Arc<str>,
        conversations: Vec<(usize, Conversation)>,
        reply: oneshot::Sender<Vec<(usize, Unread)>>,
    },
    /// A `Sub since` whose older part was read from the store, back on
    /// the loop to be replayed with what the ring holds by now.
    Resumed(Box<super::resume::Resumed>),
    /// A connection's inbox read from the store, back on the loop to admit
    /// the connection.
    InboxRead(Box<super::inbox::InboxRead>),
    Query {
        query: PresenceQuery,
        reply: oneshot::Sender<Answer>,
    },
    /// Messages the store made durable, in the order they were sequenced:
    /// deliver them now, then send the replies that waited for them.
    Stored(Durable),
    /// Cluster mode: a message Redis sequenced, to deliver in order.
    Remote(Box<crate::cluster::Remote>),
    /// Cluster mode: the feed was down; read what the conversations with
    /// someone here missed meanwhile.
    CatchUp,
    /// Cluster mode: the read of a gap of `conversation` up to `to` is
    /// done.
    GapRead {
        conversation: ConversationId,
        to: u64,
    },
    /// Cluster mode: a join or leave the cluster announced, for the
    /// channel's members here but `except` (the joining connection, when
    /// it is here).
    ChannelEvent {
        channel: String,
        event: apm_core::message::PresenceEvent,
        except: u64,
    },
    /// A frame another shard made, for connections registered here.
    Forward {
        to: Audience,
        frame: Bytes,
        /// A connection left out (the sender); 0 leaves nobody out.
        except: u64,
    },
}

/// What a command costs its connection's ingress allowance beyond its
/// payload. More than the command's own bytes: it also caps how many
/// commands one connection has queued ahead of others in its shard (256
/// with the default 1 MiB allowance), which is what a small message from
/// another connection waits behind.
const COMMAND_BYTES: usize = 4096;

impl Command {
    /// Whether this is a new message (what waits for a lagging disk).
    pub(crate) fn is_message(&self) -> bool {
        matches!(self, Command::Send(_))
    }

    /// What the command draws from its connection's ingress allowance
    /// while it waits for its shard: its own bytes, and for a request
    /// whose answer can be large (a resume, a history page) the most that
    /// answer can take, so that a connection has few of those in flight.
    /// 0 for commands that do not come from a connection's requests.
    pub(crate) fn ingress_cost(&self, config: &Config) -> usize {
        match self {
            Command::Send(msg) => COMMAND_BYTES + msg.payload.len(),
            Command::Sub { since: Some(_), .. } => COMMAND_BYTES + config.outbound_bytes,
            Command::History { .. } => COMMAND_BYTES + config.max_frame_len as usize,
            Command::Sub { .. }
            | Command::Unsub {
                asker: Asker::Client(_),
                ..
            }
            | Command::Ack { .. } => COMMAND_BYTES,
            _ => 0,
        }
    }
}

/// Who asked for a join or a leave, which says how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asker {
    /// The client, with this request id: `SubOk`, `UnsubOk`.
    Client(u32),
    /// The server, for one of the user's server-side subscriptions:
    /// `ServerSub`, `ServerUnsub`.
    Server,
    /// Nobody waits for an answer: a closing connection leaves.
    Nobody,
}

/// A message as a client sent it, before it has a seq.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The sending connection: its user is the sender.
    pub(crate) conn: Arc<Conn>,
    pub(crate) request_id: u32,
    pub(crate) flags: Flags,
    pub(crate) to: Target,
    pub(crate) kind: u16,
    /// The client's id for retries; 0 for none.
    pub(crate) msg_id: u64,
    pub(crate) payload: Bytes,
}

/// Where a message goes; each target is one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Every member of a channel.
    Channel(String),
    /// Every connection of a user (and the sender's other connections).
    User(String),
    /// Every connection on the server.
    Everyone,
}

/// Who a forwarded frame is for, among the connections of one shard.
#[derive(Debug, Clone)]
pub(crate) enum Audience {
    /// Every connection registered on the shard.
    All,
    /// Every connection of one user.
    User(Arc<str>),
    /// Every member of the `$presence` channel.
    PresenceChannel,
}

/// A shard's part of the answer to a presence query.
#[derive(Debug)]
pub(crate) enum Answer {
    Connections(u32),
    /// Sorted names, at most the page size plus one.
    Names(Vec<String>),
    /// Sorted names with counts, at most the page size plus one.
    Counts(Vec<(String, u32)>),
}

/// A message sequenced and not yet delivered: with a durable store it
/// waits for its batch to be on disk, so nobody sees a message (or a
/// receipt) that a crash could take back.
#[derive(Debug)]
pub(crate) struct Sequenced {
    pub(crate) record: Record,
    /// The sending connection: told the receipt, and left out of the
    /// fan-out unless `echo`.
    pub(crate) from: Arc<Conn>,
    pub(crate) request_id: u32,
    pub(crate) echo: bool,
    pub(crate) receipt: bool,
}

/// What the group commit hands back to one shard after a write.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// Messages now on disk, in the order they were sequenced.
    pub(crate) msgs: Vec<Sequenced>,
    /// Frames to send once those are delivered.
    pub(crate) replies: Vec<(Arc<Conn>, Bytes)>,
}

impl Durable {
    /// Whether there is nothing to hand back.
    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.replies.is_empty()
    }
}
