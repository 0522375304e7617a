//! The connection task: the one owner of the socket. It writes queued
//! commands in batches, routes what the server sends, keeps the connection
//! alive with heartbeats, and after a loss reconnects (see
//! [`connector`](crate::connector)) and re-subscribes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apm_core::message::{Deliver, Sub, SubOk, Unsub, Welcome};
use apm_core::{ErrorCode, Flags, Frame, Message};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::builder::ClientBuilder;
use crate::connector::{self, Io};
use crate::error::Error;
use crate::streams::Event;

pub(crate) type Reply = oneshot::Sender<Result<Frame, Error>>;

/// Most commands written before one flush.
const BATCH: usize = 256;

/// Work for the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a frame; with `reply`, route the answer carrying its request id
    /// back.
    Request {
        message: Message,
        flags: Flags,
        reply: Option<Reply>,
    },
    Subscribe {
        channel: String,
        tx: mpsc::Sender<Deliver>,
        reply: oneshot::Sender<Result<SubOk, Error>>,
    },
    Unsubscribe {
        channel: String,
        reply: Option<Reply>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// What the session knows about itself, readable from the handles.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub(crate) welcome: Welcome,
}

enum Pending {
    Caller(Reply),
    /// A message sent with a receipt and a client message id: after a lost
    /// connection it is sent again (the server answers a copy it already
    /// has with the first copy's receipt) instead of failing.
    Retry {
        /// When it was first sent, for re-sending in the same order.
        order: u64,
        message: Message,
        flags: Flags,
        reply: Reply,
    },
    Subscribe {
        channel: String,
        tx: mpsc::Sender<Deliver>,
        reply: oneshot::Sender<Result<SubOk, Error>>,
    },
    Resubscribe {
        channel: String,
    },
    Ignore,
}

struct SubState {
    tx: mpsc::Sender<Deliver>,
    last_seq: u64,
    dropped: u64,
}

/// How a session ended.
enum End {
    /// Closed on purpose: do not reconnect.
    Closed(Option<oneshot::Sender<()>>),
    /// Lost: reconnect if the policy allows.
    Lost(String),
}

pub(crate) struct Task {
    pub(crate) opts: ClientBuilder,
    pub(crate) cmds: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) inbox: mpsc::Sender<Deliver>,
    pub(crate) inbox_dropped: u64,
    pub(crate) closed: CancellationToken,
    pub(crate) session: Arc<Mutex<SessionInfo>>,
    subs: HashMap<String, SubState>,
    pending: HashMap<u32, Pending>,
    /// Messages to send again once reconnected, in the order first sent.
    retry: Vec<(u64, Message, Flags, Reply)>,
    /// Counts messages sent with a receipt (never wraps, unlike ids).
    next_order: u64,
    next_id: u32,
    /// Re-subscriptions not yet answered; `Reconnected` waits for them.
    resubscribing: usize,
    /// The highest inbox and broadcast seqs handed to the app.
    inbox_seen: u64,
    broadcast_seen: u64,
}

/// Tells whoever waits for `pending` that it failed.
fn fail(pending: Pending, err: Error) {
    match pending {
        Pending::Caller(r) | Pending::Retry { reply: r, .. } => {
            let _ = r.send(Err(err));
        }
        Pending::Subscribe { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Pending::Resubscribe { .. } | Pending::Ignore => {}
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

fn server_error(frame: &Frame) -> Option<Error> {
    match &frame.message {
        Message::Error(e) => Some(Error::Server {
            code: e.code,
            message: e.message.clone(),
        }),
        _ => None,
    }
}

impl Task {
    pub(crate) fn new(
        opts: ClientBuilder,
        cmds: mpsc::Receiver<Command>,
        events: broadcast::Sender<Event>,
        inbox: mpsc::Sender<Deliver>,
        closed: CancellationToken,
        session: Arc<Mutex<SessionInfo>>,
    ) -> Task {
        Task {
            opts,
            cmds,
            events,
            inbox,
            inbox_dropped: 0,
            closed,
            session,
            subs: HashMap::new(),
            pending: HashMap::new(),
            retry: Vec::new(),
            next_order: 0,
            // 1 was the Hello.
            next_id: 2,
            resubscribing: 0,
            inbox_seen: 0,
            broadcast_seen: 0,
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn request_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(2);
        id
    }

    fn heartbeat(&self) -> Duration {
        self.opts.heartbeat.unwrap_or_else(|| {
            let ms = self
                .session
                .lock()
                .expect("session lock")
                .welcome
                .heartbeat_ms;
            Duration::from_millis(u64::from(ms.max(100)))
        })
    }

    pub(crate) async fn run(mut self, mut io: Io) {
        loop {
            match self.session(&mut io).await {
                End::Closed(done) => {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        SinkExt::<Bytes>::close(&mut io),
                    )
                    .await;
                    self.finish();
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                End::Lost(reason) => {
                    debug!(%reason, "connection lost");
                    self.lose_pending();
                    self.emit(Event::Disconnected { reason });
                    match self.reconnect().await {
                        Some(new_io) => {
                            io = new_io;
                            if let Err(reason) = self.resubscribe(&mut io).await {
                                self.lose_pending();
                                self.emit(Event::Disconnected { reason });
                                continue;
                            }
                        }
                        None => {
                            self.finish();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Closes for good: fails what waits, ends every stream.
    fn finish(&mut self) {
        self.fail_pending(|| Error::Closed);
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Command::Request { reply: Some(r), .. }
                | Command::Unsubscribe { reply: Some(r), .. } => {
                    let _ = r.send(Err(Error::Closed));
                }
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Command::Close { done } => {
                    let _ = done.send(());
                }
                _ => {}
            }
        }
        self.subs.clear();
        self.emit(Event::Closed);
    }

    /// The connection is gone: what can be sent again waits for the next
    /// one, the rest fails with `Disconnected`.
    fn lose_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending) {
            match p {
                Pending::Retry {
                    order,
                    message,
                    flags,
                    reply,
                } => self.retry.push((order, message, flags, reply)),
                other => fail(other, Error::Disconnected),
            }
        }
        self.retry.sort_by_key(|(order, ..)| *order);
        self.resubscribing = 0;
    }

    fn fail_pending(&mut self, err: impl Fn() -> Error) {
        for (_, _, _, reply) in self.retry.drain(..) {
            let _ = reply.send(Err(err()));
        }
        for (_, p) in self.pending.drain() {
            fail(p, err());
        }
        self.resubscribing = 0;
    }

    /// Connects again (see [`connector::reconnect`]) and adopts the new
    /// Welcome.
    async fn reconnect(&mut self) -> Option<Io> {
        let (io, welcome) = connector::reconnect(&self.opts, &self.closed).await?;
        let mut session = self.session.lock().expect("session lock");
        if session.welcome.epoch != welcome.epoch {
            // The server started afresh: its seqs restarted, so what this
            // client saw says nothing; resume each channel from the start
            // of the new history.
            self.inbox_seen = 0;
            self.broadcast_seen = 0;
            for sub in self.subs.values_mut() {
                sub.last_seq = 0;
            }
        }
        session.welcome = welcome;
        Some(io)
    }

    /// Re-subscribes every channel, resuming after the last seq seen.
    async fn resubscribe(&mut self, io: &mut Io) -> Result<(), String> {
        let channels: Vec<(String, u64)> = self
            .subs
            .iter()
            .map(|(c, s)| (c.clone(), s.last_seq))
            .collect();
        self.resubscribing = channels.len();
        if channels.is_empty() {
            self.emit(Event::Reconnected);
        }
        for (channel, last_seq) in channels {
            let id = self.request_id();
            self.pending.insert(
                id,
                Pending::Resubscribe {
                    channel: channel.clone(),
                },
            );
            let frame = Frame::new(
                id,
                Message::Sub(Sub {
                    channel,
                    since: Some(last_seq),
                }),
            );
            io.feed(frame).await.map_err(|e| e.to_string())?;
        }
        // Then what was sent with a receipt and not answered, in order.
        let mut retry = std::mem::take(&mut self.retry).into_iter();
        while let Some((order, message, flags, reply)) = retry.next() {
            if reply.is_closed() {
                // The caller gave up (timed out): its outcome stays unknown.
                continue;
            }
            let id = self.request_id();
            let frame = Frame::new(id, message.clone()).with_flags(flags);
            self.pending.insert(
                id,
                Pending::Retry {
                    order,
                    message,
                    flags,
                    reply,
                },
            );
            if let Err(e) = io.feed(frame).await {
                // Lost again: the rest wait for the next connection (this
                // one is pending, and goes back with the others).
                self.retry.extend(retry);
                return Err(e.to_string());
            }
        }
        SinkExt::<Bytes>::flush(io).await.map_err(|e| e.to_string())
    }

    async fn session(&mut self, io: &mut Io) -> End {
        let beat = self.heartbeat();
        let mut ticker = tokio::time::interval_at(Instant::now() + beat, beat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_recv = Instant::now();
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = self.closed.cancelled() => {
                    self.say_goodbye(io).await;
                    return End::Closed(None);
                }
                frame = io.next() => match frame {
                    Some(Ok(frame)) => {
                        last_recv = Instant::now();
                        if let Some(end) = self.incoming(frame, io).await {
                            return end;
                        }
                    }
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    None => return End::Lost("closed by the server".into()),
                },
                cmd = self.cmds.recv() => {
                    let Some(cmd) = cmd else {
                        self.say_goodbye(io).await;
                        return End::Closed(None);
                    };
                    if let Some(end) = self.command(cmd, io).await {
                        return end;
                    }
                    for _ in 1..BATCH {
                        let Ok(cmd) = self.cmds.try_recv() else { break };
                        if let Some(end) = self.command(cmd, io).await {
                            return end;
                        }
                    }
                    if let Err(e) = SinkExt::<Bytes>::flush(io).await {
                        return End::Lost(e.to_string());
                    }
                    last_sent = Instant::now();
                }
                _ = ticker.tick() => {
                    if last_recv.elapsed() > beat * 3 {
                        return End::Lost("no heartbeat from the server".into());
                    }
                    // Ping when this side has been quiet, and also when the
                    // server has: a client that only sends fire-and-forget
                    // frames hears nothing back otherwise.
                    if last_sent.elapsed() >= beat || last_recv.elapsed() >= beat {
                        let id = self.request_id();
                        self.pending.insert(id, Pending::Ignore);
                        if let Err(e) = io.send(Frame::new(id, Message::Ping)).await {
                            return End::Lost(e.to_string());
                        }
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    async fn say_goodbye(&mut self, io: &mut Io) {
        let bye = Frame::new(0, Message::close(ErrorCode::Normal, "client closed"));
        let _ = tokio::time::timeout(Duration::from_secs(1), io.send(bye)).await;
    }

    /// Writes one command (without flushing).
    async fn command(&mut self, cmd: Command, io: &mut Io) -> Option<End> {
        let (id, message, flags) = match cmd {
            Command::Request {
                reply: Some(reply), ..
            } if reply.is_closed() => {
                // The caller gave up (timed out) while this waited in the
                // queue: sending it now would do what was reported failed.
                return None;
            }
            Command::Request {
                message,
                flags,
                reply,
            } => {
                let id = self.request_id();
                match reply {
                    Some(reply) if flags.contains(Flags::RECEIPT) && has_msg_id(&message) => {
                        let order = self.next_order;
                        self.next_order += 1;
                        let pending = Pending::Retry {
                            order,
                            message: message.clone(),
                            flags,
                            reply,
                        };
                        self.pending.insert(id, pending);
                    }
                    Some(reply) => {
                        self.pending.insert(id, Pending::Caller(reply));
                    }
                    None => {}
                }
                (id, message, flags)
            }
            Command::Subscribe { channel, tx, reply } => {
                let id = self.request_id();
                let message = Message::Sub(Sub {
                    channel: channel.clone(),
                    since: None,
                });
                self.pending
                    .insert(id, Pending::Subscribe { channel, tx, reply });
                (id, message, Flags::empty())
            }
            Command::Unsubscribe { channel, reply } => {
                self.subs.remove(&channel);
                let id = self.request_id();
                self.pending
                    .insert(id, reply.map_or(Pending::Ignore, Pending::Caller));
                (id, Message::Unsub(Unsub { channel }), Flags::empty())
            }
            Command::Close { done } => {
                self.say_goodbye(io).await;
                return Some(End::Closed(Some(done)));
            }
        };
        let frame = Frame::new(id, message).with_flags(flags);
        // Encode here so an oversize request fails alone, not the
        // connection.
        let bytes: Bytes = match frame.to_bytes_limited(self.opts.max_frame_len) {
            Ok(b) => b,
            Err(e) => {
                if let Some(p) = self.pending.remove(&id) {
                    self.answer(p, Err(Error::Protocol(e.to_string())));
                }
                return None;
            }
        };
        match io.feed(bytes).await {
            Ok(()) => None,
            Err(e) => Some(End::Lost(e.to_string())),
        }
    }

    fn answer(&mut self, pending: Pending, result: Result<Frame, Error>) {
        match pending {
            Pending::Caller(r) | Pending::Retry { reply: r, .. } => {
                let _ = r.send(result);
            }
            Pending::Subscribe { channel, tx, reply } => {
                let outcome = result.and_then(|frame| match frame.message {
                    Message::SubOk(ok) => Ok(ok),
                    _ => Err(server_error(&frame)
                        .unwrap_or_else(|| Error::Protocol("expected SubOk".into()))),
                });
                if let Ok(ok) = &outcome {
                    self.subs.insert(
                        channel,
                        SubState {
                            tx,
                            last_seq: ok.seq,
                            dropped: 0,
                        },
                    );
                }
                let _ = reply.send(outcome);
            }
            Pending::Resubscribe { channel } => {
                self.resubscribed(channel, result);
                self.resubscribing -= 1;
                if self.resubscribing == 0 {
                    self.emit(Event::Reconnected);
                }
            }
            Pending::Ignore => {}
        }
    }

    fn resubscribed(&mut self, channel: String, result: Result<Frame, Error>) {
        match result.map(|f| f.message) {
            Ok(Message::SubOk(ok)) => {
                if let Some(sub) = self.subs.get_mut(&channel) {
                    if ok.oldest > sub.last_seq + 1 {
                        let _ = self.events.send(Event::Lagged {
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
                self.emit(Event::SubscriptionLost { channel, reason });
            }
        }
    }

    async fn incoming(&mut self, frame: Frame, io: &mut Io) -> Option<End> {
        match &frame.message {
            Message::Deliver(_) => {
                let Message::Deliver(d) = frame.message else {
                    unreachable!()
                };
                self.route(d, io).await
            }
            Message::PresenceEvent(e) => {
                self.emit(Event::Presence(e.clone()));
                None
            }
            Message::Ping => match io.send(Frame::new(frame.request_id, Message::Pong)).await {
                Ok(()) => None,
                Err(e) => Some(End::Lost(e.to_string())),
            },
            Message::Close(c) => Some(End::Lost(format!("server closed: {}", c.code))),
            Message::Error(e) if frame.request_id == 0 => Some(End::Lost(format!(
                "server error: {}: {}",
                e.code, e.message
            ))),
            Message::Welcome(_)
            | Message::Hello(_)
            | Message::Sub(_)
            | Message::Unsub(_)
            | Message::Publish(_)
            | Message::Direct(_)
            | Message::Broadcast(_)
            | Message::Ack(_)
            | Message::HistoryRequest(_)
            | Message::UnreadRequest(_)
            | Message::PresenceQuery(_) => Some(End::Lost(format!(
                "unexpected {:?} from the server",
                frame.message.message_type()
            ))),
            _ => {
                if let Some(p) = self.pending.remove(&frame.request_id) {
                    let result = match server_error(&frame) {
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
                None
            }
        }
    }

    async fn route(&mut self, d: Deliver, io: &mut Io) -> Option<End> {
        use apm_core::message::Conversation;
        let Conversation::Channel(channel) = &d.conversation else {
            // The server replays unacknowledged private messages on every
            // connect; drop what this client already handed out.
            // (Copies of what this user sent to others carry the other
            // inbox's seq and are never replayed.)
            let seen = match &d.conversation {
                Conversation::Broadcast => Some(&mut self.broadcast_seen),
                Conversation::User(u)
                    if *u == self.session.lock().expect("session lock").welcome.user =>
                {
                    Some(&mut self.inbox_seen)
                }
                _ => None,
            };
            if let Some(seen) = &seen
                && d.seq <= **seen
            {
                return None;
            }
            let seq = d.seq;
            if self.inbox.try_send(d).is_ok() {
                // Advanced only when handed out, so a message dropped here
                // is taken again when the server replays it.
                if let Some(seen) = seen {
                    *seen = seq;
                }
            } else {
                self.inbox_dropped += 1;
                self.emit(Event::Lagged {
                    stream: "inbox".into(),
                    dropped: self.inbox_dropped,
                });
            }
            return None;
        };
        let sub = self.subs.get_mut(channel.as_str())?;
        if d.seq <= sub.last_seq {
            // Already seen (a resume overlapping what was delivered live).
            return None;
        }
        sub.last_seq = d.seq;
        let failed = match sub.tx.try_send(d) {
            Ok(()) => return None,
            Err(e) => e,
        };
        let (full, d) = match failed {
            mpsc::error::TrySendError::Full(d) => (true, d),
            mpsc::error::TrySendError::Closed(d) => (false, d),
        };
        let Conversation::Channel(channel) = d.conversation else {
            unreachable!("routed as a channel message")
        };
        if full {
            sub.dropped += 1;
            let dropped = sub.dropped;
            self.emit(Event::Lagged {
                stream: channel,
                dropped,
            });
            return None;
        }
        // The Subscription was dropped: leave the channel.
        self.subs.remove(&channel);
        let id = self.request_id();
        self.pending.insert(id, Pending::Ignore);
        match io
            .send(Frame::new(id, Message::Unsub(Unsub { channel })))
            .await
        {
            Ok(()) => None,
            Err(e) => Some(End::Lost(e.to_string())),
        }
    }
}
