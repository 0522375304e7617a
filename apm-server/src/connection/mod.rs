//! One client connection: the handshake, then a single task that reads
//! frames into commands and writes whatever the shards queued for it.
//!
//! - [`handshake`]: `Hello`, authentication, registration, refusals.
//! - [`dispatch`]: what each request asks, turned into shard commands.
//! - [`queries`]: questions asked of several shards at once.
//! - [`outbound`]: queued frames to the socket, and closing frames.
//! - [`transport`]: the socket, plain or TLS.
//! - [`channels`]: the channels a connection holds.
//!
//! One task per connection (not a reader and a writer) keeps an idle
//! connection down to one task and no buffers: read and write buffers exist
//! only while there is something in them.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apm_core::ErrorCode;
use apm_core::codec::{decode_frame, peek_request_id};
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field, info, info_span};

mod channels;
mod dispatch;
mod handshake;
mod outbound;
mod queries;
mod server_subs;
mod transport;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::{Allowance, Conn};
use crate::rate::Gate;
use crate::shard::{Asker, Command};
use dispatch::Action;
use handshake::handshake;
use transport::Transport;

/// Room for a read when the last one did not fill its buffer: small, since
/// most reads are a frame or two and the buffer is given back after.
pub(super) const READ_SMALL: usize = 1024;
/// Room for a read after one that filled its buffer (a busy publisher).
const READ_LARGE: usize = 32 * 1024;

/// Serves one accepted socket until it closes.
///
/// The whole connection runs in one span carrying the peer's address, and
/// the session id and user once the handshake has named them, so every
/// line about it (refusal, violation, close) says whose it is. Opening and
/// closing are logged at `info`; nothing per message is.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let opened = Instant::now();
    let span = info_span!("conn", %peer, id = field::Empty, user = field::Empty);
    async move {
        // Boxed: the handshake's futures are dead weight once it is over,
        // and would otherwise size every connection's task.
        let Some(mut session) = Box::pin(handshake(stream, tls, hub)).await else {
            return;
        };
        let result = session.run(&shutdown).await;
        let duration_ms = opened.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                // No code means the client went away without a `Close`.
                let reason = session
                    .conn
                    .close_code()
                    .map_or("peer_closed", |c| c.as_str());
                info!(reason, duration_ms, "closed");
            }
            Err(e) => info!(reason = "io_error", error = %e, duration_ms, "closed"),
        }
        session.leave_all();
    }
    .instrument(span)
    .await
}

/// A connection past its handshake: the socket, its buffers, and what the
/// connection holds (its channels).
struct Session {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    stream: Transport,
    rbuf: BytesMut,
    /// Chunks taken off the queue and not yet written, the first perhaps
    /// in part.
    out: VecDeque<Bytes>,
    /// Frames taken off the queue, not yet in `out`.
    pending: VecDeque<Bytes>,
    /// The channels this connection holds.
    subs: channels::Channels,
    /// Those of `subs` that are its user's server-side subscriptions.
    server_subs: BTreeSet<Arc<str>>,
    /// The session was granted `SERVER_SUBS`: it holds its user's
    /// server-side subscriptions.
    takes_server_subs: bool,
    last_read: Instant,
    reading: bool,
    /// The last read filled its buffer: read bigger.
    busy: bool,
    /// What this connection's commands draw from its ingress allowance.
    allowance: Allowance,
    /// The members-only channels the session's token claims.
    channel_claims: Box<[Box<str>]>,
    /// What this connection's messages are counted against; made with its
    /// first message (boxed: an idle connection pays a pointer).
    rate_gate: Option<Box<Gate>>,
    /// Decoding stopped because a budget was spent: frames may wait in
    /// the read buffer, and the socket is not read until the budgets have
    /// room again (checked after each wake-up).
    held: bool,
    /// When the session's token expires, seconds since the Unix epoch
    /// (none in dev mode): the connection closes then with `TokenExpired`
    /// unless a `Refresh` moved it.
    token_exp: Option<u64>,
    /// A `Refresh` moved `token_exp`: the timer must be set again.
    token_moved: bool,
}

impl Session {
    fn new(
        hub: Arc<Hub>,
        conn: Arc<Conn>,
        stream: Transport,
        rbuf: BytesMut,
        channel_claims: Box<[Box<str>]>,
    ) -> Session {
        Session {
            channel_claims,
            hub,
            stream,
            rbuf,
            out: VecDeque::new(),
            pending: VecDeque::new(),
            subs: channels::Channels::default(),
            server_subs: BTreeSet::new(),
            takes_server_subs: false,
            last_read: Instant::now(),
            reading: true,
            busy: false,
            held: false,
            token_exp: None,
            token_moved: false,
            rate_gate: None,
            allowance: conn.allowance(),
            conn,
        }
    }
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
        let timer = tokio::time::sleep_until(self.next_check(idle));
        tokio::pin!(woken, stop, timer);
        let mut closing = false;
        // The rare paths' futures are boxed: inline, they would size every
        // connection's task for as long as it lives.
        if self.takes_server_subs && self.hub.subscriptions_used() {
            Box::pin(self.sync_server_subs()).await;
        }
        // Frames that came in the same read as Hello.
        self.decode_buffered().await;
        loop {
            if conn.take_subscriptions_changed() && self.takes_server_subs && !closing {
                Box::pin(self.sync_server_subs()).await;
            }
            if let Some(code) = conn.close_code() {
                if code == ErrorCode::SlowConsumer {
                    Box::pin(self.abandon(code)).await;
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
            if self.held && self.reading && self.may_take_requests() {
                // Requests read while a budget was spent waited here.
                self.decode_buffered().await;
                continue;
            }
            if self.token_moved && !closing {
                self.token_moved = false;
                timer.as_mut().reset(self.next_check(idle));
            }
            // In cluster mode, what the connection sent is answered before
            // it closes (within the grace period): the shards have taken
            // it, and Redis has answered.
            if closing
                && self.out.is_empty()
                && (self.hub.cluster.is_none()
                    || (self.allowance.all_handled(&conn) && conn.in_cluster() == 0))
            {
                Box::pin(self.finish(conn.close_code().unwrap_or(ErrorCode::Normal))).await;
                return Ok(());
            }
            let event = tokio::select! {
                biased;
                _ = &mut woken => {
                    woken.set(conn.notified());
                    Event::Woken
                }
                r = self.stream.writable(), if !self.out.is_empty() || self.stream.wants_write() => {
                    r?;
                    Event::Writable
                }
                r = self.stream.readable(), if self.reading && !self.held => {
                    r?;
                    Event::Readable
                }
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
                    if self.token_exp.is_some_and(|exp| now_ms() >= exp * 1000) {
                        info!("token expired");
                        conn.close(ErrorCode::TokenExpired);
                    } else if self.last_read + idle <= Instant::now() {
                        Metrics::add(&self.hub.metrics.idle_timeouts, 1);
                        conn.close(ErrorCode::IdleTimeout);
                    } else {
                        timer.as_mut().reset(self.next_check(idle));
                    }
                }
            }
        }
    }

    /// When the timer must next look: at the idle deadline, or at the
    /// token's expiry if that comes first.
    fn next_check(&self, idle: Duration) -> Instant {
        let idle_at = self.last_read + idle;
        match self.token_exp {
            Some(exp) => {
                let left = (exp * 1000).saturating_sub(now_ms());
                idle_at.min(Instant::now() + Duration::from_millis(left))
            }
            None => idle_at,
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
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Readiness said readable and nothing was there (it does
                // after the read that emptied the socket): an idle
                // connection keeps no read buffer.
                if self.rbuf.is_empty() {
                    self.rbuf = BytesMut::new();
                }
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
        self.decode_buffered().await;
        Ok(true)
    }

    /// Whether the next request may be read: neither the ingress
    /// allowance nor the reply budget is spent.
    fn may_take_requests(&mut self) -> bool {
        self.conn.has_reply_room() && self.allowance.has_room(&self.conn)
    }

    /// Handles the whole frames in the read buffer, as long as the
    /// connection's ingress allowance and reply budget last; the rest wait
    /// in the buffer (and the socket) until they free.
    async fn decode_buffered(&mut self) {
        loop {
            if !self.reading {
                self.rbuf.clear();
                break;
            }
            self.held = !self.may_take_requests();
            if self.held {
                break;
            }
            let request_id = peek_request_id(&self.rbuf);
            match decode_frame(&mut self.rbuf, &self.hub.limits) {
                Ok(Some(frame)) => {
                    Metrics::add(&self.hub.metrics.frames_in, 1);
                    match self.handle(frame) {
                        Action::Done => {}
                        Action::Submit(shard, cmd) => {
                            self.allowance.charge(cmd.ingress_cost(&self.hub.config));
                            if let Err(cmd) = self.hub.try_submit(shard, cmd) {
                                // The shard is behind: wait (boxed, as this
                                // is rare) for room.
                                Box::pin(self.hub.submit(shard, cmd)).await;
                            }
                        }
                        Action::Ask(request_id, query) => {
                            Box::pin(self.answer(request_id, query)).await;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fatal(request_id, e.code(), &e.to_string());
                    break;
                }
            }
        }
        if self.rbuf.is_empty() {
            // An idle connection keeps no read buffer.
            self.rbuf = BytesMut::new();
        }
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
                    asker: Asker::Nobody,
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
