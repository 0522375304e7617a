//! The handshake: the first frame must be a `Hello` that authenticates
//! (a token, or any user id in dev mode); then the connection is
//! registered with its user's shard and `Welcome` is queued. A refusal is
//! an `Error` frame and a close.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use apm_core::codec::{decode_frame, peek_request_id};
use apm_core::message::{Hello, Role, Welcome};
use apm_core::names::validate_name;
use apm_core::{Capabilities, DecodeError, ErrorCode, Frame, Message};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{Span, debug, info};

use crate::auth;
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Conn;
use crate::shard::Command;

use super::{READ_SMALL, Session, Transport};

/// Reads Hello, authenticates, registers the connection and queues
/// Welcome. `None` if the connection was refused or went away.
/// With TLS its handshake comes first, and both share the handshake
/// timeout.
pub(super) async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
) -> Option<Session> {
    let deadline = Instant::now() + hub.config.handshake_timeout();
    let _ = stream.set_nodelay(true);
    if hub.config.socket_send_buffer > 0 {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(hub.config.socket_send_buffer);
    }
    let mut stream = Transport::accept(stream, tls.as_ref(), deadline, &hub.metrics).await?;
    let mut rbuf = BytesMut::new();
    let hello = match timeout_at(
        deadline,
        first_frame(&mut stream, &mut rbuf, &hub.handshake_limits()),
    )
    .await
    {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => {
            // Port probes and health checks do this: not worth a line at
            // the default level.
            debug!("gone before Hello");
            return None;
        }
        Ok(Err((request_id, e))) => {
            refused(&hub, e.code());
            refuse(&mut stream, request_id, e.code(), &e.to_string()).await;
            return None;
        }
        Err(_) => {
            refused(&hub, ErrorCode::HandshakeTimeout);
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
    let capabilities = Capabilities::from_flags(hello.flags).intersection(SERVER_CAPABILITIES);
    let Message::Hello(hello) = hello.message else {
        refused(&hub, ErrorCode::AuthRequired);
        refuse(
            &mut stream,
            request_id,
            ErrorCode::AuthRequired,
            "the first frame must be Hello",
        )
        .await;
        return None;
    };
    if !hello.user.is_empty() {
        // Named before it is checked, so a refusal says who tried.
        Span::current().record("user", hello.user.as_str());
    }
    let identity = match authenticate(&hub, &hello) {
        Ok(identity) => identity,
        Err((code, why)) => {
            refused(&hub, code);
            refuse(&mut stream, request_id, code, why).await;
            return None;
        }
    };
    if let Some(until) = hub.revoked_until(&identity.user) {
        refused(&hub, ErrorCode::Revoked);
        refuse(
            &mut stream,
            request_id,
            ErrorCode::Revoked,
            &revoked_text(until),
        )
        .await;
        return None;
    }
    let Identity {
        user,
        role,
        channels,
        exp,
    } = identity;
    if hello.user.is_empty() {
        // Named by the token alone (recorded once: text logs would repeat
        // a field recorded twice).
        Span::current().record("user", &*user);
    }
    let config = &hub.config;
    let conn = Arc::new(
        Conn::new(
            hub.next_conn_id(),
            user,
            role,
            config.outbound_queue,
            config.outbound_bytes,
            config.slow_consumer,
        )
        .with_budgets(config.ingress_allowance(), config.reply_budget()),
    );
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
            epoch: hub.epoch(),
        }),
    )
    .with_flags(capabilities.to_flags())
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
            refused(&hub, code);
            let why = match code {
                ErrorCode::Revoked => revoked_text(hub.revoked_until(&conn.user).unwrap_or(0)),
                _ => "too many connections for this user".to_owned(),
            };
            refuse(&mut stream, request_id, code, &why).await;
            return None;
        }
        Err(_) => return None,
    }
    Span::current().record("id", conn.id);
    info!(client = %hello.client, "connected");
    if rbuf.is_empty() {
        // Most clients say nothing more for a while; hold no buffer.
        rbuf = BytesMut::new();
    }
    let mut session = Session::new(hub, conn, stream, rbuf, channels);
    session.token_exp = exp;
    session.takes_server_subs = capabilities.contains(Capabilities::SERVER_SUBS);
    Some(session)
}

/// Why a user id starting with `$` is refused: such names are the
/// server's own (the HTTP API's senders are `$api/NAME`), so no client
/// may pass for one.
const SERVER_NAMES: &str = "user ids starting with `$` belong to the server";

/// What this server understands beyond version 1, granted to clients that
/// say they do too.
const SERVER_CAPABILITIES: Capabilities = Capabilities::ALL;

/// The text of a `Revoked` refusal: the end time is read from its last
/// words.
pub(super) fn revoked_text(until_ms: u64) -> String {
    format!("this user's tokens are revoked until {until_ms}")
}

/// Reads until one whole frame is buffered (`None` on a clean EOF). A
/// fault comes with the request id of the frame it was found in (0 if its
/// header had not arrived).
async fn first_frame(
    stream: &mut Transport,
    rbuf: &mut BytesMut,
    limits: &apm_core::Limits,
) -> Result<Option<Frame>, (u32, DecodeError)> {
    loop {
        let request_id = peek_request_id(rbuf);
        match decode_frame(rbuf, limits) {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(e) => return Err((request_id, e)),
        }
        stream.readable().await.map_err(|e| (0, e.into()))?;
        rbuf.reserve(READ_SMALL);
        match stream.try_read_buf(rbuf) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err((0, e.into())),
        }
    }
}

/// Counts a refused handshake, in all and by reason.
fn refused(hub: &Hub, code: ErrorCode) {
    Metrics::add(&hub.metrics.auth_failures, 1);
    hub.metrics.handshake_refusals.count(code);
}

/// Sends an `Error` and closes a connection that never got a session.
/// Logged at `info` (in the connection's span: peer, and the user if Hello
/// named one): a refusal is rare and an operator's first question when a
/// client cannot get in.
async fn refuse(stream: &mut Transport, request_id: u32, code: ErrorCode, why: &str) {
    info!(%code, reason = why, "handshake refused");
    if let Ok(frame) = Frame::new(request_id, Message::error(code, why)).to_bytes() {
        let _ = timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    }
    let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Who the `Hello` authenticates.
struct Identity {
    user: Arc<str>,
    role: Role,
    /// The members-only channels the token claims (none in dev mode,
    /// which has no token).
    channels: Box<[Box<str>]>,
    /// When the token expires, seconds since the Unix epoch (none in dev
    /// mode).
    exp: Option<u64>,
}

fn authenticate(hub: &Hub, hello: &Hello) -> Result<Identity, (ErrorCode, &'static str)> {
    let secret = &hub.config.secret;
    if secret.is_empty() {
        if hello.user.is_empty() {
            return Err((ErrorCode::AuthFailed, "dev mode needs a user id in Hello"));
        }
        if hello.user.starts_with('$') {
            return Err((ErrorCode::AuthFailed, SERVER_NAMES));
        }
        return Ok(Identity {
            user: Arc::from(hello.user.as_str()),
            role: Role::User,
            channels: Box::default(),
            exp: None,
        });
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
    if claims.user.starts_with('$') {
        return Err((ErrorCode::AuthFailed, SERVER_NAMES));
    }
    if !hello.user.is_empty() && hello.user != claims.user {
        return Err((ErrorCode::AuthFailed, "user does not match the token"));
    }
    Ok(Identity {
        user: Arc::from(claims.user.as_str()),
        role: claims.role,
        channels: claims.channels.into_iter().map(Box::from).collect(),
        exp: Some(claims.exp),
    })
}
