//! One client connection: the handshake, then a single task that reads
//! frames into commands and writes whatever the shards queued for it.
//!
//! One task per connection (not a reader and a writer) keeps an idle
//! connection down to one task and no buffers: read and write buffers exist
//! only while there is something in them.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apm_core::codec::decode_frame;
use apm_core::message::{
    Conversation, Hello, PresenceQuery, PresenceResponse, Role, UnreadRequest, UnreadResponse,
    Welcome,
};
use apm_core::names::{is_system_channel, validate_name};
use apm_core::{DecodeError, ErrorCode, Frame, Message};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::auth;
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Conn;
use crate::shard::{Answer, Command};
use crate::store::ConversationId;

/// Room for a read when the last one did not fill its buffer: small, since
/// most reads are a frame or two and the buffer is given back after.
const READ_SMALL: usize = 1024;
/// Room for a read after one that filled its buffer (a busy publisher).
const READ_LARGE: usize = 32 * 1024;
/// Coalesce queued frames into writes of up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    // Boxed: the handshake's futures are dead weight once it is over, and
    // would otherwise size every connection's task.
    let Some(session) = Box::pin(handshake(stream, hub)).await else {
        return;
    };
    let span = info_span!("session", id = session.conn.id, user = %session.conn.user, %peer);
    async move {
        let mut session = session;
        let result = session.run(&shutdown).await;
        debug!(reason = ?session.conn.close_code(), ?result, "closed");
        session.leave_all();
    }
    .instrument(span)
    .await
}

/// Reads Hello, authenticates, registers the connection and queues
/// Welcome. `None` if the connection was refused or went away.
async fn handshake(mut stream: TcpStream, hub: Arc<Hub>) -> Option<Session> {
    let _ = stream.set_nodelay(true);
    if hub.config.socket_send_buffer > 0 {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(hub.config.socket_send_buffer);
    }
    let mut rbuf = BytesMut::new();
    let hello = match timeout(
        hub.config.handshake_timeout(),
        first_frame(&stream, &mut rbuf, &hub.handshake_limits()),
    )
    .await
    {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            Metrics::add(&hub.metrics.auth_failures, 1);
            refuse(&mut stream, 0, e.code(), &e.to_string()).await;
            return None;
        }
        Err(_) => {
            Metrics::add(&hub.metrics.auth_failures, 1);
            refuse(
                &mut stream,
                0,
                ErrorCode::HandshakeTimeout,
                "no Hello in time",
            )
            .await;
            return None;
        }
    };
    let request_id = hello.request_id;
    let Message::Hello(hello) = hello.message else {
        Metrics::add(&hub.metrics.auth_failures, 1);
        refuse(
            &mut stream,
            request_id,
            ErrorCode::AuthRequired,
            "the first frame must be Hello",
        )
        .await;
        return None;
    };
    let (user, role) = match authenticate(&hub, &hello) {
        Ok(identity) => identity,
        Err((code, why)) => {
            Metrics::add(&hub.metrics.auth_failures, 1);
            refuse(&mut stream, request_id, code, why).await;
            return None;
        }
    };
    let config = &hub.config;
    let conn = Arc::new(Conn::new(
        hub.next_conn_id(),
        user,
        role,
        config.outbound_queue,
        config.outbound_bytes,
        config.slow_consumer,
    ));
    let welcome = Frame::new(
        request_id,
        Message::Welcome(Welcome {
            session_id: conn.id,
            user: conn.user.to_string(),
            role,
            server_time_ms: now_ms(),
            heartbeat_ms: config.heartbeat_ms as u32,
            idle_timeout_ms: config.idle_timeout_ms as u32,
            max_frame_len: config.max_frame_len,
            epoch: hub.epoch,
        }),
    )
    .to_bytes_limited(u32::MAX)
    .expect("no frame limit");
    let (tx, rx) = oneshot::channel();
    hub.submit(
        hub.shard_of(&conn.user),
        Command::Register {
            conn: conn.clone(),
            welcome,
            reply: tx,
        },
    )
    .await;
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(code)) => {
            refuse(
                &mut stream,
                request_id,
                code,
                "too many connections for this user",
            )
            .await;
            return None;
        }
        Err(_) => return None,
    }
    debug!(id = conn.id, user = %conn.user, client = %hello.client, "connected");
    if rbuf.is_empty() {
        // Most clients say nothing more for a while; hold no buffer.
        rbuf = BytesMut::new();
    }
    let session = Session {
        hub: hub.clone(),
        conn,
        stream,
        rbuf,
        out: Bytes::new(),
        pending: VecDeque::new(),
        subs: BTreeSet::new(),
        last_read: Instant::now(),
        reading: true,
        busy: false,
    };
    Some(session)
}

/// Reads until one whole frame is buffered (`None` on a clean EOF).
async fn first_frame(
    stream: &TcpStream,
    rbuf: &mut BytesMut,
    limits: &apm_core::Limits,
) -> Result<Option<Frame>, DecodeError> {
    loop {
        if let Some(frame) = decode_frame(rbuf, limits)? {
            return Ok(Some(frame));
        }
        stream.readable().await?;
        rbuf.reserve(READ_SMALL);
        match stream.try_read_buf(rbuf) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends an `Error` and closes a connection that never got a session.
async fn refuse(stream: &mut TcpStream, request_id: u32, code: ErrorCode, why: &str) {
    debug!(%code, why, "handshake refused");
    if let Ok(frame) = Frame::new(request_id, Message::error(code, why)).to_bytes() {
        let _ = timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    }
    let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
}

fn authenticate(hub: &Hub, hello: &Hello) -> Result<(Arc<str>, Role), (ErrorCode, &'static str)> {
    let secret = &hub.config.secret;
    if secret.is_empty() {
        if hello.user.is_empty() {
            return Err((ErrorCode::AuthFailed, "dev mode needs a user id in Hello"));
        }
        return Ok((Arc::from(hello.user.as_str()), Role::User));
    }
    if hello.token.is_empty() {
        return Err((ErrorCode::AuthFailed, "this server needs a token"));
    }
    let claims = auth::verify(secret.as_bytes(), &hello.token).map_err(|code| match code {
        ErrorCode::TokenExpired => (code, "the token has expired"),
        _ => (code, "the token does not verify"),
    })?;
    if validate_name(&claims.user, &hub.limits).is_err() {
        return Err((
            ErrorCode::AuthFailed,
            "the token's user id is not a valid name",
        ));
    }
    if !hello.user.is_empty() && hello.user != claims.user {
        return Err((ErrorCode::AuthFailed, "user does not match the token"));
    }
    Ok((Arc::from(claims.user.as_str()), claims.role))
}

struct Session {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    stream: TcpStream,
    rbuf: BytesMut,
    /// Bytes taken off the queue and not yet written.
    out: Bytes,
    /// Frames taken off the queue, not yet in `out`.
    pending: VecDeque<Bytes>,
    /// The channels this connection holds.
    subs: BTreeSet<Arc<str>>,
    last_read: Instant,
    reading: bool,
    /// The last read filled its buffer: read bigger.
    busy: bool,
}

/// What a frame asks of the session beyond what `handle` did itself.
enum Action {
    Done,
    Submit(usize, Command),
    Presence(u32, PresenceQuery),
    Unread(u32, UnreadRequest),
}

/// What woke the session.
enum Event {
    Woken,
    Writable,
    Readable,
    Shutdown,
    /// The idle check, or the end of the grace period while closing.
    Timer,
}

impl Session {
    async fn run(&mut self, shutdown: &CancellationToken) -> io::Result<()> {
        let idle = self.hub.config.idle_timeout();
        // The futures below are made once and kept across iterations, so a
        // wake-up costs no timer or waiter re-registration.
        let conn = self.conn.clone();
        let woken = conn.notified();
        let stop = shutdown.clone().cancelled_owned();
        let timer = tokio::time::sleep_until(self.last_read + idle);
        tokio::pin!(woken, stop, timer);
        let mut closing = false;
        // Frames that came in the same read as Hello.
        self.decode_buffered().await;
        loop {
            if let Some(code) = conn.close_code() {
                if code == ErrorCode::SlowConsumer {
                    // Whatever is queued is abandoned; say why if the socket
                    // has room, and go.
                    conn.clear();
                    self.pending = VecDeque::new();
                    // A Close after a partly written frame would read as
                    // garbage: say why only on a clean frame boundary.
                    if self.out.is_empty() {
                        self.try_close_frame(code);
                    }
                    self.out = Bytes::new();
                    return Ok(());
                }
                if !closing {
                    closing = true;
                    self.reading = false;
                    let grace = Duration::from_millis(self.hub.config.shutdown_timeout_ms);
                    timer.as_mut().reset(Instant::now() + grace);
                }
            }
            self.flush()?;
            if closing && self.out.is_empty() {
                let code = conn.close_code().unwrap_or(ErrorCode::Normal);
                if matches!(code, ErrorCode::ServerShutdown | ErrorCode::IdleTimeout) {
                    let frame = Frame::new(0, Message::close(code, code.as_str()))
                        .to_bytes()
                        .expect("small frame");
                    let _ = timeout(Duration::from_secs(1), self.stream.write_all(&frame)).await;
                }
                let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
                return Ok(());
            }
            let event = tokio::select! {
                biased;
                _ = &mut woken => {
                    woken.set(conn.notified());
                    Event::Woken
                }
                r = self.stream.writable(), if !self.out.is_empty() => { r?; Event::Writable }
                r = self.stream.readable(), if self.reading => { r?; Event::Readable }
                _ = &mut stop, if !closing => Event::Shutdown,
                _ = &mut timer => Event::Timer,
            };
            match event {
                Event::Woken | Event::Writable => {}
                Event::Readable => {
                    if !self.read().await? {
                        return Ok(());
                    }
                }
                Event::Shutdown => conn.close(ErrorCode::ServerShutdown),
                Event::Timer if closing => return Ok(()),
                Event::Timer => {
                    let idle_at = self.last_read + idle;
                    if idle_at <= Instant::now() {
                        Metrics::add(&self.hub.metrics.idle_timeouts, 1);
                        conn.close(ErrorCode::IdleTimeout);
                    } else {
                        timer.as_mut().reset(idle_at);
                    }
                }
            }
        }
    }

    /// Takes queued frames and writes as much as the socket takes without
    /// waiting. A lone frame is written straight from its shared bytes;
    /// several are copied into one buffer of their exact size (at most
    /// [`WRITE_BATCH`]) for one syscall. Buffers are let go as soon as they
    /// are written, so an idle connection holds none.
    fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.out.is_empty() {
                if self.pending.is_empty() {
                    self.pending = self.conn.take_all();
                    if self.pending.is_empty() {
                        self.out = Bytes::new();
                        return Ok(());
                    }
                }
                self.out = self.next_chunk();
            }
            match self.stream.try_write(&self.out) {
                Ok(n) => {
                    Metrics::add(&self.hub.metrics.bytes_out, n as u64);
                    self.out.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next bytes to write from `pending`.
    fn next_chunk(&mut self) -> Bytes {
        let first = self.pending.pop_front().expect("pending is not empty");
        if self.pending.is_empty() || first.len() >= WRITE_BATCH {
            return first;
        }
        let mut size = first.len();
        let count = 1 + self
            .pending
            .iter()
            .take_while(|f| {
                size += f.len();
                size <= WRITE_BATCH
            })
            .count();
        let total: usize = first.len()
            + self
                .pending
                .iter()
                .take(count - 1)
                .map(Bytes::len)
                .sum::<usize>();
        let mut batch = BytesMut::with_capacity(total);
        batch.extend_from_slice(&first);
        for frame in self.pending.drain(..count - 1) {
            batch.extend_from_slice(&frame);
        }
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
        }
        batch.freeze()
    }

    /// Best effort: a `Close` frame if the socket takes it right now.
    fn try_close_frame(&mut self, code: ErrorCode) {
        if let Ok(frame) = Frame::new(0, Message::close(code, code.as_str())).to_bytes() {
            let _ = self.stream.try_write(&frame);
        }
    }

    /// Reads what is there and handles every whole frame. `false` on EOF.
    async fn read(&mut self) -> io::Result<bool> {
        let want = if self.busy { READ_LARGE } else { READ_SMALL };
        if self.rbuf.capacity() - self.rbuf.len() < want / 2 {
            self.rbuf.reserve(want);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                self.busy = n == room;
                Metrics::add(&self.hub.metrics.bytes_in, n as u64);
                self.last_read = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
        self.decode_buffered().await;
        Ok(true)
    }

    /// Handles every whole frame in the read buffer.
    async fn decode_buffered(&mut self) {
        loop {
            if !self.reading {
                self.rbuf.clear();
                break;
            }
            match decode_frame(&mut self.rbuf, &self.hub.limits) {
                Ok(Some(frame)) => {
                    Metrics::add(&self.hub.metrics.frames_in, 1);
                    match self.handle(frame) {
                        Action::Done => {}
                        Action::Submit(shard, cmd) => {
                            if let Err(cmd) = self.hub.try_submit(shard, cmd) {
                                // The shard is behind: wait (boxed, as this
                                // is rare) for room.
                                Box::pin(self.hub.submit(shard, cmd)).await;
                            }
                        }
                        Action::Presence(request_id, query) => {
                            let response = Box::pin(self.presence(query)).await;
                            self.reply(Frame::new(request_id, Message::PresenceResponse(response)));
                        }
                        Action::Unread(request_id, req) => {
                            let response = Box::pin(self.unread(req)).await;
                            self.reply(Frame::new(request_id, Message::UnreadResponse(response)));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fatal(0, e.code(), &e.to_string());
                    break;
                }
            }
        }
        if self.rbuf.is_empty() {
            // An idle connection keeps no read buffer.
            self.rbuf = BytesMut::new();
        }
    }

    fn reply(&self, frame: Frame) {
        if let Ok(bytes) = frame.to_bytes_limited(u32::MAX) {
            self.conn.push(bytes);
        }
    }

    fn error(&self, request_id: u32, code: ErrorCode, message: &str) {
        self.reply(Frame::new(request_id, Message::error(code, message)));
    }

    /// Reports a violation and closes once the report is written.
    fn fatal(&mut self, request_id: u32, code: ErrorCode, message: &str) {
        debug!(%code, message, "protocol violation");
        Metrics::add(&self.hub.metrics.protocol_errors, 1);
        self.error(request_id, code, message);
        self.reading = false;
        self.conn.close(code);
    }

    /// Handles one frame. What must go to a shard or wait for shards is
    /// returned, so the common path has no await and the task stays small.
    fn handle(&mut self, frame: Frame) -> Action {
        let Frame {
            request_id,
            flags,
            message,
        } = frame;
        let hub = &*self.hub;
        let conn = &self.conn;
        if matches!(
            message,
            Message::Publish(_) | Message::Direct(_) | Message::Broadcast(_)
        ) && hub.writer.as_ref().is_some_and(|w| w.is_failing())
        {
            // Taken now, it would wait behind a write that keeps failing;
            // refused, the client knows to try again later.
            self.error(
                request_id,
                ErrorCode::Internal,
                "the message store is failing: message not taken, try again later",
            );
            return Action::Done;
        }
        match message {
            Message::Ping => self.reply(Frame::new(request_id, Message::Pong)),
            Message::Pong | Message::Error(_) => {}
            Message::Close(_) => {
                self.reading = false;
                conn.close(ErrorCode::Normal);
            }
            Message::Sub(sub) => {
                if !self.subs.contains(sub.channel.as_str()) {
                    if self.subs.len() >= hub.config.max_subscriptions {
                        let limit = hub.config.max_subscriptions;
                        {
                            self.fatal(
                                request_id,
                                ErrorCode::TooManySubscriptions,
                                &format!("at most {limit} subscriptions per connection"),
                            );
                            return Action::Done;
                        }
                    }
                    self.subs.insert(Arc::from(sub.channel.as_str()));
                }
                let shard = hub.shard_of(&sub.channel);
                let cmd = Command::Sub {
                    conn: conn.clone(),
                    channel: sub.channel,
                    since: sub.since,
                    request_id,
                };
                return Action::Submit(shard, cmd);
            }
            Message::Unsub(unsub) => match self.subs.take(unsub.channel.as_str()) {
                Some(channel) => {
                    let shard = hub.shard_of(&channel);
                    let cmd = Command::Unsub {
                        conn: conn.clone(),
                        channel,
                        request_id: Some(request_id),
                    };
                    return Action::Submit(shard, cmd);
                }
                None => self.reply(Frame::new(
                    request_id,
                    Message::UnsubOk(apm_core::message::UnsubOk {
                        channel: unsub.channel,
                    }),
                )),
            },
            Message::Publish(msg) => {
                if is_system_channel(&msg.channel) {
                    {
                        self.error(
                            request_id,
                            ErrorCode::Forbidden,
                            "channels starting with $ belong to the server",
                        );
                        return Action::Done;
                    }
                }
                let shard = hub.shard_of(&msg.channel);
                let cmd = Command::Publish {
                    conn: conn.clone(),
                    request_id,
                    flags,
                    msg,
                };
                return Action::Submit(shard, cmd);
            }
            Message::Direct(msg) => {
                let shard = hub.shard_of(&msg.user);
                let cmd = Command::Direct {
                    conn: conn.clone(),
                    request_id,
                    flags,
                    msg,
                };
                return Action::Submit(shard, cmd);
            }
            Message::Broadcast(msg) => {
                if conn.role != Role::Admin {
                    {
                        self.error(
                            request_id,
                            ErrorCode::Forbidden,
                            "broadcast needs the admin role",
                        );
                        return Action::Done;
                    }
                }
                let cmd = Command::Broadcast {
                    conn: conn.clone(),
                    request_id,
                    flags,
                    msg,
                };
                return Action::Submit(Hub::BROADCAST_SHARD, cmd);
            }
            Message::Ack(ack) => {
                if let Conversation::User(u) = &ack.conversation
                    && **u != *conn.user
                {
                    self.error(
                        request_id,
                        ErrorCode::Forbidden,
                        "you can acknowledge your own inbox only",
                    );
                    return Action::Done;
                }
                let conversation = ConversationId::from(&ack.conversation);
                let shard = hub.shard_of_conversation(&conversation);
                let cmd = Command::Ack {
                    user: conn.user.clone(),
                    seq: ack.seq,
                    conversation,
                };
                return Action::Submit(shard, cmd);
            }
            Message::UnreadRequest(req) => return Action::Unread(request_id, req),
            Message::HistoryRequest(req) => {
                let shard = match &req.conversation {
                    Conversation::Channel(name) | Conversation::User(name) => hub.shard_of(name),
                    Conversation::Broadcast => Hub::BROADCAST_SHARD,
                };
                let cmd = Command::History {
                    conn: conn.clone(),
                    request_id,
                    req,
                };
                return Action::Submit(shard, cmd);
            }
            Message::PresenceQuery(query) => return Action::Presence(request_id, query),
            other => {
                let kind = other.message_type();
                self.fatal(
                    request_id,
                    ErrorCode::UnexpectedMessage,
                    &format!("{kind:?} is not valid here"),
                );
            }
        }
        Action::Done
    }

    async fn ask(&self, shard: usize, query: PresenceQuery) -> Option<Answer> {
        let (reply, rx) = oneshot::channel();
        self.hub
            .submit(shard, Command::Query { query, reply })
            .await;
        rx.await.ok()
    }

    async fn ask_all(&self, query: PresenceQuery) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(self.hub.shards.len());
        for shard in 0..self.hub.shards.len() {
            answers.extend(self.ask(shard, query.clone()).await);
        }
        answers
    }

    async fn presence(&self, query: PresenceQuery) -> PresenceResponse {
        let cap = self.hub.config.presence_page_max;
        match query {
            PresenceQuery::IsOnline { user } => {
                let shard = self.hub.shard_of(&user);
                let connections = match self
                    .ask(shard, PresenceQuery::IsOnline { user: user.clone() })
                    .await
                {
                    Some(Answer::Connections(n)) => n,
                    _ => 0,
                };
                PresenceResponse::IsOnline { user, connections }
            }
            PresenceQuery::OnlineUsers { after, limit } => {
                let limit = limit.min(cap);
                let mut users: Vec<String> = self
                    .ask_all(PresenceQuery::OnlineUsers { after, limit })
                    .await
                    .into_iter()
                    .flat_map(|a| match a {
                        Answer::Names(n) => n,
                        _ => Vec::new(),
                    })
                    .collect();
                users.sort_unstable();
                let next = page(&mut users, limit, |u| u.clone());
                PresenceResponse::Users { users, next }
            }
            PresenceQuery::ChannelMembers {
                channel,
                after,
                limit,
            } => {
                let limit = limit.min(cap);
                let shard = self.hub.shard_of(&channel);
                let q = PresenceQuery::ChannelMembers {
                    channel: channel.clone(),
                    after,
                    limit,
                };
                let mut users = match self.ask(shard, q).await {
                    Some(Answer::Names(n)) => n,
                    _ => Vec::new(),
                };
                let next = page(&mut users, limit, |u| u.clone());
                PresenceResponse::Members {
                    channel,
                    users,
                    next,
                }
            }
            PresenceQuery::Channels { after, limit } => {
                let limit = limit.min(cap);
                let mut channels: Vec<(String, u32)> = self
                    .ask_all(PresenceQuery::Channels { after, limit })
                    .await
                    .into_iter()
                    .flat_map(|a| match a {
                        Answer::Counts(c) => c,
                        _ => Vec::new(),
                    })
                    .collect();
                channels.sort_unstable();
                let next = page(&mut channels, limit, |(c, _)| c.clone());
                PresenceResponse::Channels { channels, next }
            }
            PresenceQuery::MyChannels => PresenceResponse::MyChannels {
                channels: self.subs.iter().map(|c| c.to_string()).collect(),
            },
        }
    }

    /// Asks each shard owning some of the conversations for the user's
    /// counts there, and answers in the order asked. Only the user's own
    /// inbox is answered among inboxes; others count as empty.
    async fn unread(&self, req: UnreadRequest) -> UnreadResponse {
        let hub = &self.hub;
        let cap = hub.config.unread_page_max as usize;
        let mut per_shard: Vec<Vec<(usize, Conversation)>> = vec![Vec::new(); hub.shards.len()];
        let asked: Vec<Conversation> = req.conversations.into_iter().take(cap).collect();
        let mut counts: Vec<Option<apm_core::message::Unread>> = vec![None; asked.len()];
        for (i, conversation) in asked.iter().enumerate() {
            if matches!(conversation, Conversation::User(u) if **u != *self.conn.user) {
                // Not this user's to count: answered as empty below.
                continue;
            }
            let shard = hub.shard_of_conversation(&ConversationId::from(conversation));
            per_shard[shard].push((i, conversation.clone()));
        }
        for (shard, conversations) in per_shard.into_iter().enumerate() {
            if conversations.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Unread {
                user: self.conn.user.clone(),
                conversations,
                reply,
            };
            hub.submit(shard, cmd).await;
            for (i, unread) in rx.await.unwrap_or_default() {
                counts[i] = Some(unread);
            }
        }
        // Another user's inbox, or a shard that did not answer (shutting
        // down), counts as empty: one entry per conversation asked.
        let counts = counts
            .into_iter()
            .zip(asked)
            .map(|(count, conversation)| {
                count.unwrap_or(apm_core::message::Unread {
                    conversation,
                    last: 0,
                    acked: 0,
                })
            })
            .collect();
        UnreadResponse { counts }
    }

    /// Takes the connection out of every channel and off its user.
    fn leave_all(&mut self) {
        let hub = &self.hub;
        for channel in std::mem::take(&mut self.subs) {
            hub.submit_now(
                hub.shard_of(&channel),
                Command::Unsub {
                    conn: self.conn.clone(),
                    channel,
                    request_id: None,
                },
            );
        }
        hub.submit_now(
            hub.shard_of(&self.conn.user),
            Command::Unregister {
                conn: self.conn.clone(),
            },
        );
        // Frames still queued hold payloads; free them now.
        self.conn.close(ErrorCode::Normal);
        self.conn.clear();
    }
}

/// Cuts a sorted list to one page; the cursor for the next page if more
/// remain.
fn page<T>(items: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(key)
    } else {
        None
    }
}
