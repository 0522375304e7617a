//! The session state: what the connection task remembers between frames,
//! kept apart from the socket so that it can be tested without one.
//!
//! It holds the requests waiting for a reply, the receipted messages to send
//! again after a reconnect, each subscription's resume point and the seqs
//! already handed to the app. Its methods take a command, a frame or news
//! of the connection and return what to write; the [`Event`]s they raise
//! queue up until the task takes them with [`State::take_events`]. Replies
//! and messages go straight into the callers' channels, which never block.
//! Routing deliveries and dropping duplicates lives in `state/route.rs`.

use std::collections::HashMap;

use apm_core::message::{Conversation, Deliver, Grant, Receipt, Sub, SubOk, Unsub, Welcome};
use apm_core::{ErrorCode, Flags, Frame, Message};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::streams::Event;

/// Where the answer to a request goes.
pub(crate) type Reply = oneshot::Sender<Result<Frame, Error>>;

/// Where the answer to a subscribe goes.
pub(crate) type SubReply = oneshot::Sender<Result<SubOk, Error>>;

/// What a request id sent on this connection waits for.
enum Pending {
    Caller(Reply),
    /// A message sent with a receipt and a client message id: after a lost
    /// connection it is sent again (the server answers a copy it already
    /// has with the first copy's receipt) instead of failing.
    Retry(Retry),
    Subscribe {
        channel: String,
        tx: mpsc::Sender<Deliver>,
        reply: SubReply,
    },
    Resubscribe {
        channel: String,
    },
    /// A server-side subscription held before a reconnect, resumed from
    /// where its stream was.
    ServerResume {
        channel: String,
    },
    Ignore,
}

/// A receipted message that outlives the connection it was sent on.
struct Retry {
    /// When it was first sent, for re-sending in the same order.
    order: u64,
    message: Message,
    flags: Flags,
    reply: Reply,
}

struct SubState {
    tx: mpsc::Sender<Deliver>,
    /// The resume point: the highest seq handed to (or dropped by) the
    /// stream.
    last_seq: u64,
    dropped: u64,
    /// One of the user's server-side subscriptions: the server joins and
    /// ends it (see `state/server_subs.rs`).
    server: bool,
    /// The server said so (`ServerSub`) on this connection.
    confirmed: bool,
    /// A resume of it is under way: what arrives live before the resume's
    /// `SubOk` comes again in its replay.
    resuming: bool,
}

impl SubState {
    fn new(tx: mpsc::Sender<Deliver>, last_seq: u64) -> SubState {
        SubState {
            tx,
            last_seq,
            dropped: 0,
            server: false,
            confirmed: false,
            resuming: false,
        }
    }
}

/// What the connection does after the state took in a frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Reaction {
    /// Nothing to write.
    Nothing,
    /// Write this frame and flush.
    Send(Frame),
    /// The connection cannot go on: the server closed it or broke the
    /// protocol.
    Lost(String),
    /// The server ended the session and asks not to be called again
    /// (kicked, revoked).
    Ended(String),
}

/// Everything the session knows, without a socket. See the module docs.
pub(crate) struct State {
    /// The user this session is authenticated as: the owner of the inbox.
    user: String,
    /// The server's epoch the seqs below belong to.
    epoch: u64,
    /// The largest frame a request may encode to.
    max_frame_len: u32,
    inbox: mpsc::Sender<Deliver>,
    inbox_dropped: u64,
    /// Where the messages of server-side subscriptions go.
    server: mpsc::Sender<Deliver>,
    /// Looked up for every message received: a fast hash, since the
    /// names come from the server the client chose to talk to.
    subs: HashMap<String, SubState, foldhash::fast::RandomState>,
    pending: HashMap<u32, Pending>,
    /// Messages to send again once reconnected, in the order first sent.
    retry: Vec<Retry>,
    /// Counts messages sent with a receipt (never wraps, unlike ids).
    next_order: u64,
    next_id: u32,
    /// Re-subscriptions not yet answered; `Reconnected` waits for them.
    resubscribing: usize,
    /// Subscription tokens the server took, by channel: sent again on
    /// every new connection, before the channels are re-joined.
    grants: HashMap<String, String>,
    /// Subscription tokens sent and not yet answered, by request id.
    granting: HashMap<u32, String>,
    /// The highest inbox and broadcast seqs handed to the app.
    inbox_seen: u64,
    broadcast_seen: u64,
    events: Vec<Event>,
}

/// Tells whoever waits for `pending` that it failed.
fn fail(pending: Pending, err: Error) {
    match pending {
        Pending::Caller(r) | Pending::Retry(Retry { reply: r, .. }) => {
            let _ = r.send(Err(err));
        }
        Pending::Subscribe { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Pending::Resubscribe { .. } | Pending::ServerResume { .. } | Pending::Ignore => {}
    }
}

/// Whether a message carries a client message id the server can
/// de-duplicate a re-sent copy by.
fn has_msg_id(message: &Message) -> bool {
    match message {
        Message::Publish(m) => m.msg_id != 0,
        Message::Direct(m) => m.msg_id != 0,
        Message::Broadcast(m) => m.msg_id != 0,
        _ => false,
    }
}

/// The count a `MessagesLost` notice starts with, when it has one.
fn lost_count(text: &str) -> u64 {
    text.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn server_error(frame: &Frame) -> Option<Error> {
    match &frame.message {
        Message::Error(e) => Some(Error::Server {
            code: e.code,
            message: e.message.clone(),
        }),
        _ => None,
    }
}

impl State {
    /// The state of a session that has just been welcomed. Private
    /// messages go to `inbox`, those of server-side subscriptions to
    /// `server`; requests over `max_frame_len` fail alone.
    pub(crate) fn new(
        welcome: &Welcome,
        inbox: mpsc::Sender<Deliver>,
        server: mpsc::Sender<Deliver>,
        max_frame_len: u32,
    ) -> State {
        State {
            user: welcome.user.clone(),
            epoch: welcome.epoch,
            max_frame_len,
            inbox,
            inbox_dropped: 0,
            server,
            subs: HashMap::default(),
            pending: HashMap::new(),
            retry: Vec::new(),
            next_order: 0,
            // 1 was the Hello.
            next_id: 2,
            resubscribing: 0,
            grants: HashMap::new(),
            granting: HashMap::new(),
            inbox_seen: 0,
            broadcast_seen: 0,
            events: Vec::new(),
        }
    }

    /// The events raised since the last call, oldest first.
    pub(crate) fn take_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    fn request_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(2);
        id
    }

    /// A request from a handle: the bytes to write, or `None` when there is
    /// nothing to write (the caller gave up, or it cannot be encoded and
    /// has been told so). With `reply`, the answer carrying its request id
    /// is routed back.
    pub(crate) fn request(
        &mut self,
        message: Message,
        flags: Flags,
        reply: Option<Reply>,
    ) -> Option<Bytes> {
        if reply.as_ref().is_some_and(|r| r.is_closed()) {
            // The caller gave up (timed out) while this waited in the
            // queue: sending it now would do what was reported failed.
            return None;
        }
        let id = self.request_id();
        if let Message::Grant(g) = &message {
            self.granting.insert(id, g.token.clone());
        }
        match reply {
            Some(reply) if flags.contains(Flags::RECEIPT) && has_msg_id(&message) => {
                let order = self.next_order;
                self.next_order += 1;
                let retry = Retry {
                    order,
                    message: message.clone(),
                    flags,
                    reply,
                };
                self.pending.insert(id, Pending::Retry(retry));
            }
            Some(reply) => {
                self.pending.insert(id, Pending::Caller(reply));
            }
            None => {}
        }
        self.encode(id, message, flags)
    }

    /// Joins `channel`; once the server confirms, its messages go to `tx`.
    pub(crate) fn subscribe(
        &mut self,
        channel: String,
        tx: mpsc::Sender<Deliver>,
        reply: SubReply,
    ) -> Option<Bytes> {
        let id = self.request_id();
        let message = Message::Sub(Sub {
            channel: channel.clone(),
            since: None,
        });
        self.pending
            .insert(id, Pending::Subscribe { channel, tx, reply });
        self.encode(id, message, Flags::empty())
    }

    /// Leaves `channel` at once (its stream ends) and tells the server.
    /// A server-side subscription stays: the server refuses to end it.
    pub(crate) fn unsubscribe(&mut self, channel: String, reply: Option<Reply>) -> Option<Bytes> {
        if self.subs.get(&channel).is_none_or(|s| !s.server) {
            self.subs.remove(&channel);
        }
        let id = self.request_id();
        self.pending
            .insert(id, reply.map_or(Pending::Ignore, Pending::Caller));
        self.encode(id, Message::Unsub(Unsub { channel }), Flags::empty())
    }

    /// Encodes here so that an oversize request fails alone, not the
    /// connection.
    fn encode(&mut self, id: u32, message: Message, flags: Flags) -> Option<Bytes> {
        let frame = Frame::new(id, message).with_flags(flags);
        match frame.to_bytes_limited(self.max_frame_len) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                if let Some(p) = self.pending.remove(&id) {
                    self.answer(p, Err(Error::Protocol(e.to_string())));
                }
                None
            }
        }
    }

    /// A heartbeat to send; its Pong is ignored.
    pub(crate) fn ping(&mut self) -> Frame {
        let id = self.request_id();
        self.pending.insert(id, Pending::Ignore);
        Frame::new(id, Message::Ping)
    }

    /// A frame from the server.
    pub(crate) fn incoming(&mut self, frame: Frame) -> Reaction {
        match &frame.message {
            Message::Deliver(_) => {
                let Message::Deliver(d) = frame.message else {
                    unreachable!()
                };
                self.route(d)
            }
            Message::PresenceEvent(e) => {
                self.events.push(Event::Presence(e.clone()));
                Reaction::Nothing
            }
            Message::ServerSub(ok) if frame.request_id == 0 => self.server_sub(ok.clone()),
            Message::ServerUnsub(u) if frame.request_id == 0 => {
                self.server_unsub(&u.channel);
                Reaction::Nothing
            }
            Message::Ping => Reaction::Send(Frame::new(frame.request_id, Message::Pong)),
            Message::Close(c) if matches!(c.code, ErrorCode::Kicked | ErrorCode::Revoked) => {
                Reaction::Ended(format!("server closed: {}: {}", c.code, c.reason))
            }
            Message::Close(c) => Reaction::Lost(format!("server closed: {}", c.code)),
            Message::Error(e) if frame.request_id == 0 && e.code == ErrorCode::MessagesLost => {
                // Counted as dropped from the inbox, so the app knows it
                // has not seen everything sent to it.
                self.inbox_dropped += lost_count(&e.message).max(1);
                self.events.push(Event::Lagged {
                    stream: "inbox".into(),
                    dropped: self.inbox_dropped,
                });
                Reaction::Nothing
            }
            Message::Error(e) if frame.request_id == 0 && !e.code.is_fatal() => {
                // A notice about no request in particular: nothing to end.
                tracing::debug!(code = %e.code, message = %e.message, "server notice");
                Reaction::Nothing
            }
            Message::Error(e) if frame.request_id == 0 => {
                Reaction::Lost(format!("server error: {}: {}", e.code, e.message))
            }
            Message::Welcome(_)
            | Message::Hello(_)
            | Message::Refresh(_)
            | Message::Grant(_)
            | Message::Sub(_)
            | Message::Unsub(_)
            | Message::Publish(_)
            | Message::Direct(_)
            | Message::Broadcast(_)
            | Message::Ack(_)
            | Message::HistoryRequest(_)
            | Message::UnreadRequest(_)
            | Message::PresenceQuery(_) => Reaction::Lost(format!(
                "unexpected {:?} from the server",
                frame.message.message_type()
            )),
            _ => {
                if let Message::Receipt(r) = &frame.message {
                    self.own_message(r);
                }
                if let Some(token) = self.granting.remove(&frame.request_id)
                    && let Message::GrantOk(ok) = &frame.message
                {
                    self.grants.insert(ok.channel.clone(), token);
                }
                if let Some(p) = self.pending.remove(&frame.request_id) {
                    let result = match server_error(&frame) {
                        // A refused (re-)subscribe is judged by `answer`,
                        // which must also see the channel.
                        Some(e)
                            if !matches!(
                                p,
                                Pending::Subscribe { .. } | Pending::Resubscribe { .. }
                            ) =>
                        {
                            Err(e)
                        }
                        _ => Ok(frame),
                    };
                    self.answer(p, result);
                }
                Reaction::Nothing
            }
        }
    }

    /// A receipt for a message this client published: where it
    /// subscribes to the same channel, the message is part of what it has
    /// seen, so a resume does not hand it back. The server queues every
    /// `Deliver` of the channel with a lower seq before the receipt, so
    /// nothing is skipped.
    fn own_message(&mut self, receipt: &Receipt) {
        if let Conversation::Channel(channel) = &receipt.conversation
            && let Some(sub) = self.subs.get_mut(channel)
        {
            sub.last_seq = sub.last_seq.max(receipt.seq);
        }
    }

    fn answer(&mut self, pending: Pending, result: Result<Frame, Error>) {
        match pending {
            Pending::Caller(r) | Pending::Retry(Retry { reply: r, .. }) => {
                let _ = r.send(result);
            }
            Pending::Subscribe { channel, tx, reply } => {
                let outcome = result.and_then(|frame| match frame.message {
                    Message::SubOk(ok) => Ok(ok),
                    _ => Err(server_error(&frame)
                        .unwrap_or_else(|| Error::Protocol("expected SubOk".into()))),
                });
                if let Ok(ok) = &outcome {
                    match self.subs.get_mut(&channel) {
                        // Held server-side already: the new stream takes
                        // its messages from here on.
                        Some(sub) if sub.server => sub.tx = tx,
                        _ => {
                            self.subs.insert(channel, SubState::new(tx, ok.seq));
                        }
                    }
                }
                let _ = reply.send(outcome);
            }
            Pending::Resubscribe { channel } => {
                self.resubscribed(channel, result);
                self.resubscribing -= 1;
                if self.resubscribing == 0 {
                    self.events.push(Event::Reconnected);
                }
            }
            Pending::ServerResume { channel } => self.server_resumed(&channel, result),
            Pending::Ignore => {}
        }
    }

    fn resubscribed(&mut self, channel: String, result: Result<Frame, Error>) {
        match result.map(|f| f.message) {
            Ok(Message::SubOk(ok)) => {
                if let Some(sub) = self.subs.get_mut(&channel) {
                    if ok.oldest > sub.last_seq + 1 {
                        self.events.push(Event::Lagged {
                            stream: channel.clone(),
                            dropped: ok.oldest - sub.last_seq - 1,
                        });
                    }
                    // Whatever the server cannot replay is gone; resume
                    // counting from what it has.
                    sub.last_seq = sub.last_seq.max(ok.oldest.saturating_sub(1));
                }
            }
            other => {
                // The channel could not be re-joined; end its stream.
                self.subs.remove(&channel);
                let reason = match other {
                    Ok(Message::Error(e)) => format!("{}: {}", e.code, e.message),
                    Ok(m) => format!("unexpected {:?}", m.message_type()),
                    Err(e) => e.to_string(),
                };
                self.events
                    .push(Event::SubscriptionLost { channel, reason });
            }
        }
    }

    /// The connection is gone: what can be sent again waits for the next
    /// one, the rest fails with `Disconnected`.
    pub(crate) fn disconnected(&mut self, reason: String) {
        self.granting.clear();
        for (_, p) in std::mem::take(&mut self.pending) {
            match p {
                Pending::Retry(retry) => self.retry.push(retry),
                other => fail(other, Error::Disconnected),
            }
        }
        self.retry.sort_by_key(|r| r.order);
        self.resubscribing = 0;
        self.events.push(Event::Disconnected { reason });
        self.server_subs_disconnected();
    }

    /// A new connection was welcomed.
    pub(crate) fn reconnected(&mut self, welcome: &Welcome) {
        if self.epoch != welcome.epoch {
            // The server started afresh: its seqs restarted, so what this
            // client saw says nothing; resume each channel from the start
            // of the new history.
            self.inbox_seen = 0;
            self.broadcast_seen = 0;
            for sub in self.subs.values_mut() {
                sub.last_seq = 0;
            }
        }
        self.epoch = welcome.epoch;
        self.user.clone_from(&welcome.user);
    }

    /// The frames that restore the session on a new connection, to write
    /// in order: each channel re-joined after the last seq seen, then what
    /// was sent with a receipt and not answered, in the order first sent.
    pub(crate) fn resubscribe(&mut self) -> Vec<Frame> {
        // The server joins server-side subscriptions itself; each is
        // resumed when it says so (`server_sub`).
        let channels: Vec<(String, u64)> = self
            .subs
            .iter()
            .filter(|(_, s)| !s.server)
            .map(|(c, s)| (c.clone(), s.last_seq))
            .collect();
        self.resubscribing = channels.len();
        if channels.is_empty() {
            self.events.push(Event::Reconnected);
        }
        let mut frames = Vec::with_capacity(channels.len() + self.retry.len());
        // Grants first: a members-only channel is re-joined on their
        // strength.
        let grants: Vec<String> = self.grants.values().cloned().collect();
        for token in grants {
            let id = self.request_id();
            self.pending.insert(id, Pending::Ignore);
            frames.push(Frame::new(id, Message::Grant(Grant { token })));
        }
        for (channel, last_seq) in channels {
            let id = self.request_id();
            self.pending.insert(
                id,
                Pending::Resubscribe {
                    channel: channel.clone(),
                },
            );
            frames.push(Frame::new(
                id,
                Message::Sub(Sub {
                    channel,
                    since: Some(last_seq),
                }),
            ));
        }
        for retry in std::mem::take(&mut self.retry) {
            if retry.reply.is_closed() {
                // The caller gave up (timed out): its outcome stays unknown.
                continue;
            }
            let id = self.request_id();
            frames.push(Frame::new(id, retry.message.clone()).with_flags(retry.flags));
            self.pending.insert(id, Pending::Retry(retry));
        }
        frames
    }

    /// Fails everything that waits for an answer or a re-send with
    /// `Closed`.
    pub(crate) fn fail_all(&mut self) {
        for retry in self.retry.drain(..) {
            let _ = retry.reply.send(Err(Error::Closed));
        }
        for (_, p) in self.pending.drain() {
            fail(p, Error::Closed);
        }
        self.resubscribing = 0;
    }

    /// Closed for good: every subscription's stream ends.
    pub(crate) fn close(&mut self) {
        self.subs.clear();
        self.events.push(Event::Closed);
    }
}

mod route;
mod server_subs;
#[cfg(test)]
mod tests;
