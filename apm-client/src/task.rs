//! The connection task: the one owner of the socket. It writes queued
//! commands in batches, feeds what the server sends to the session
//! [`State`], keeps the connection alive with heartbeats, and after a loss
//! reconnects (see [`connector`]) and restores the
//! session. What to write and what to remember is the state's business;
//! this file only moves frames between the socket, the handles and it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apm_core::codec::decode_frame;
use apm_core::message::{Deliver, Refresh, Welcome};
use apm_core::{Capabilities, ErrorCode, Flags, Frame, Message};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::builder::ClientBuilder;
use crate::connector::{self, Io};
use crate::error::Error;
use crate::state::{Reaction, Reply, State, SubReply};
use crate::streams::Event;
use crate::token;

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
        reply: SubReply,
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
    /// What the server granted in its Welcome.
    pub(crate) capabilities: Capabilities,
    /// False from a lost connection until the next handshake.
    pub(crate) connected: bool,
    /// Handshakes since the first: a wait that spans one started over.
    pub(crate) reconnects: u64,
    /// The node (`host:port`) of the last handshake.
    pub(crate) node: String,
}

/// How a session ended.
enum End {
    /// Closed on purpose: do not reconnect.
    Closed(Option<oneshot::Sender<()>>),
    /// Lost: reconnect if the policy allows.
    Lost(String),
    /// Ended by the server for good (kicked, revoked): do not reconnect.
    Ended(String),
}

/// The connection task: the handles' channels on one side, the socket and
/// the session [`State`] on the other.
/// Where the task hands messages that no [`crate::Subscription`] takes.
pub(crate) struct Sinks {
    /// Private messages and broadcasts.
    pub(crate) inbox: mpsc::Sender<Deliver>,
    /// Server-side subscriptions' messages.
    pub(crate) server: mpsc::Sender<Deliver>,
}

pub(crate) struct Task {
    opts: ClientBuilder,
    cmds: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    closed: CancellationToken,
    session: Arc<Mutex<SessionInfo>>,
    state: State,
}

impl Task {
    pub(crate) fn new(
        opts: ClientBuilder,
        cmds: mpsc::Receiver<Command>,
        events: broadcast::Sender<Event>,
        streams: Sinks,
        closed: CancellationToken,
        session: Arc<Mutex<SessionInfo>>,
    ) -> Task {
        let state = {
            let info = session.lock().expect("session lock");
            State::new(
                &info.welcome,
                streams.inbox,
                streams.server,
                opts.max_frame_len,
            )
        };
        Task {
            opts,
            cmds,
            events,
            closed,
            session,
            state,
        }
    }

    /// Hands the events the state raised to the [`crate::Events`] streams.
    fn publish_events(&mut self) {
        for event in self.state.take_events() {
            let _ = self.events.send(event);
        }
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
                End::Ended(reason) => {
                    debug!(%reason, "connection ended by the server");
                    self.session.lock().expect("session lock").connected = false;
                    self.state.disconnected(reason);
                    self.publish_events();
                    self.finish();
                    return;
                }
                End::Lost(reason) => {
                    debug!(%reason, "connection lost");
                    self.session.lock().expect("session lock").connected = false;
                    self.state.disconnected(reason);
                    self.publish_events();
                    let Some((new_io, welcome, capabilities)) =
                        connector::reconnect(&mut self.opts, &self.closed).await
                    else {
                        self.finish();
                        return;
                    };
                    io = new_io;
                    self.state.reconnected(&welcome);
                    {
                        let mut session = self.session.lock().expect("session lock");
                        session.welcome = welcome;
                        session.capabilities = capabilities;
                        session.connected = true;
                        session.reconnects += 1;
                        session.node = self.opts.addr.clone();
                    }
                    let restored = self.restore(&mut io).await;
                    if let Err(reason) = restored {
                        self.state.disconnected(reason);
                    }
                    self.publish_events();
                }
            }
        }
    }

    /// Closes for good: fails what waits, ends every stream.
    fn finish(&mut self) {
        self.state.fail_all();
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
        self.state.close();
        self.publish_events();
    }

    /// Writes what restores the session on a new connection.
    async fn restore(&mut self, io: &mut Io) -> Result<(), String> {
        for frame in self.state.resubscribe() {
            // On failure the frames not written are pending already, and
            // `disconnected` puts the receipted ones back for the next try.
            io.feed(frame).await.map_err(|e| e.to_string())?;
        }
        SinkExt::<Bytes>::flush(io).await.map_err(|e| e.to_string())
    }

    /// When to ask for a new token: ahead of the token's expiry, if the
    /// app gave a token callback and the server takes `Refresh`.
    fn refresh_due(&self) -> Option<Instant> {
        self.opts.token_source.as_ref()?;
        let granted = self.session.lock().expect("session lock").capabilities;
        if !granted.contains(Capabilities::TOKEN_REFRESH) {
            return None;
        }
        let exp = token::expiry(&self.opts.token)?;
        let now = token::now_ms();
        let wait = token::refresh_at_ms(exp, now).saturating_sub(now);
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// What a finished token callback leads to: the new token sent as a
    /// `Refresh`, or another try later.
    async fn refreshed(
        &mut self,
        fetched: crate::TokenResult,
        io: &mut Io,
        due: &mut Option<Instant>,
    ) -> Option<End> {
        match fetched {
            Ok(new) => {
                self.opts.token = new.clone();
                *due = self.refresh_due();
                let frame = self.state.request(
                    Message::Refresh(Refresh { token: new }),
                    Flags::empty(),
                    None,
                )?;
                match io.send(frame).await {
                    Ok(()) => None,
                    Err(e) => Some(End::Lost(e.to_string())),
                }
            }
            Err(e) => {
                debug!(error = %e, "token callback failed; trying again");
                // Again in a while, but before the token runs out if it
                // has not yet.
                let left = token::expiry(&self.opts.token)
                    .map(|exp| (exp * 1000).saturating_sub(token::now_ms()))
                    .unwrap_or(0);
                let wait = Duration::from_millis((left / 2).clamp(100, 5_000));
                *due = Some(Instant::now() + wait);
                None
            }
        }
    }

    async fn session(&mut self, io: &mut Io) -> End {
        let beat = self.heartbeat();
        let mut ticker = tokio::time::interval_at(Instant::now() + beat, beat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_recv = Instant::now();
        let mut last_sent = Instant::now();
        // Made once and reset, so a frame received costs no timer
        // registration.
        let mut due = self.refresh_due();
        let refresh_timer = tokio::time::sleep_until(due.unwrap_or_else(Instant::now));
        tokio::pin!(refresh_timer);
        let mut armed_for = due;
        let mut fetching: Option<crate::token::TokenFuture> = None;
        loop {
            if due != armed_for {
                if let Some(at) = due {
                    refresh_timer.as_mut().reset(at);
                }
                armed_for = due;
            }
            let end = tokio::select! {
                biased;
                _ = self.closed.cancelled() => {
                    self.say_goodbye(io).await;
                    Some(End::Closed(None))
                }
                _ = &mut refresh_timer, if due.is_some() && fetching.is_none() => {
                    due = None;
                    fetching = self.opts.token_source.as_ref().map(|s| s.fetch());
                    None
                }
                fetched = async { fetching.as_mut().expect("checked").await }, if fetching.is_some() => {
                    fetching = None;
                    self.refreshed(fetched, io, &mut due).await
                }
                frame = io.next() => match frame {
                    Some(Ok(frame)) => {
                        last_recv = Instant::now();
                        self.received(frame, io).await
                    }
                    Some(Err(e)) => Some(End::Lost(e.to_string())),
                    None => Some(End::Lost("closed by the server".into())),
                },
                cmd = self.cmds.recv() => match cmd {
                    None => {
                        self.say_goodbye(io).await;
                        Some(End::Closed(None))
                    }
                    Some(cmd) => {
                        let end = self.commands(cmd, io).await;
                        if end.is_none() {
                            last_sent = Instant::now();
                        }
                        end
                    }
                },
                _ = ticker.tick() => {
                    if last_recv.elapsed() > beat * 3 {
                        Some(End::Lost("no heartbeat from the server".into()))
                    } else if last_sent.elapsed() >= beat || last_recv.elapsed() >= beat {
                        // Ping when this side has been quiet, and also when
                        // the server has: a client that only sends
                        // fire-and-forget frames hears nothing back
                        // otherwise.
                        match io.send(self.state.ping()).await {
                            Ok(()) => {
                                last_sent = Instant::now();
                                None
                            }
                            Err(e) => Some(End::Lost(e.to_string())),
                        }
                    } else {
                        None
                    }
                }
            };
            self.publish_events();
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Takes in `first` and every other whole frame the last read brought,
    /// straight from the read buffer: one pass of the session loop (and one
    /// wake-up of each stream's task) per read rather than per message.
    /// Replies are written, and flushed once at the end.
    async fn received(&mut self, first: Frame, io: &mut Io) -> Option<End> {
        let limits = *io.codec().limits();
        let mut frame = first;
        let mut replied = false;
        loop {
            match self.state.incoming(frame) {
                Reaction::Nothing => {}
                Reaction::Send(reply) => {
                    if let Err(e) = io.feed(reply).await {
                        return Some(End::Lost(e.to_string()));
                    }
                    replied = true;
                }
                Reaction::Lost(reason) => return Some(End::Lost(reason)),
                Reaction::Ended(reason) => return Some(End::Ended(reason)),
            }
            frame = match decode_frame(io.read_buffer_mut(), &limits) {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => return Some(End::Lost(e.to_string())),
            };
        }
        if replied && let Err(e) = SinkExt::<Bytes>::flush(io).await {
            return Some(End::Lost(e.to_string()));
        }
        None
    }

    /// Writes `first` and whatever else is queued, up to a batch, then
    /// flushes.
    async fn commands(&mut self, first: Command, io: &mut Io) -> Option<End> {
        if let Some(end) = self.command(first, io).await {
            return Some(end);
        }
        for _ in 1..BATCH {
            let Ok(cmd) = self.cmds.try_recv() else { break };
            if let Some(end) = self.command(cmd, io).await {
                return Some(end);
            }
        }
        match SinkExt::<Bytes>::flush(io).await {
            Ok(()) => None,
            Err(e) => Some(End::Lost(e.to_string())),
        }
    }

    async fn say_goodbye(&mut self, io: &mut Io) {
        let bye = Frame::new(0, Message::close(ErrorCode::Normal, "client closed"));
        let _ = tokio::time::timeout(Duration::from_secs(1), io.send(bye)).await;
    }

    /// Writes one command (without flushing).
    async fn command(&mut self, cmd: Command, io: &mut Io) -> Option<End> {
        let bytes = match cmd {
            Command::Request {
                message,
                flags,
                reply,
            } => self.state.request(message, flags, reply),
            Command::Subscribe { channel, tx, reply } => self.state.subscribe(channel, tx, reply),
            Command::Unsubscribe { channel, reply } => self.state.unsubscribe(channel, reply),
            Command::Close { done } => {
                self.say_goodbye(io).await;
                return Some(End::Closed(Some(done)));
            }
        };
        match io.feed(bytes?).await {
            Ok(()) => None,
            Err(e) => Some(End::Lost(e.to_string())),
        }
    }
}
