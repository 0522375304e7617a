//! Getting a connection: dialing, the Hello/Welcome handshake, and the
//! reconnect loop with its jittered exponential back-off. The connection
//! task calls in here and gets back a socket ready for the session.

use std::time::Duration;

use apm_core::message::{Hello, Welcome};
use apm_core::{ApmCodec, Capabilities, ErrorCode, Frame, Message};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::builder::{ClientBuilder, ReconnectPolicy};
use crate::error::Error;
use crate::tls::Stream;
use crate::token;

/// A connection that has said Hello and been welcomed.
pub(crate) type Io = Framed<Stream, ApmCodec>;

/// A connection that has been welcomed, and what the server granted.
pub(crate) type Connected = (Io, Welcome, Capabilities);

/// Connects, says Hello and waits for Welcome.
pub(crate) async fn connect(opts: &ClientBuilder) -> Result<Connected, Error> {
    let attempt = async {
        let failed = |e: std::io::Error| Error::Connect {
            addr: opts.addr.clone(),
            reason: e.to_string(),
        };
        let stream = match opts.local_ip {
            None => TcpStream::connect(&opts.addr).await.map_err(failed)?,
            Some(ip) => {
                let remote = tokio::net::lookup_host(&opts.addr)
                    .await
                    .map_err(failed)?
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
                    .ok_or_else(|| failed(std::io::ErrorKind::AddrNotAvailable.into()))?;
                let socket = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .map_err(failed)?;
                socket
                    .bind(std::net::SocketAddr::new(ip, 0))
                    .map_err(failed)?;
                socket.connect(remote).await.map_err(failed)?
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match &opts.tls {
            None => Stream::Plain(stream),
            Some(tls) => tls.connect(stream, &opts.addr).await?,
        };
        // Server frames may exceed the request limit by the names a Deliver
        // adds; leave room.
        let limits = apm_core::Limits {
            max_frame_len: opts.max_frame_len.saturating_add(64 * 1024),
            ..Default::default()
        };
        let mut io = Framed::new(stream, ApmCodec::new(limits));
        let hello = Frame::new(
            1,
            Message::Hello(Hello {
                user: opts.user.clone(),
                token: opts.token.clone(),
                client: opts.client_name.clone(),
            }),
        )
        .with_flags(Capabilities::ALL.to_flags());
        io.send(hello)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        match io.next().await {
            Some(Ok(Frame {
                message: Message::Welcome(w),
                flags,
                ..
            })) => Ok((io, w, Capabilities::from_flags(flags))),
            Some(Ok(Frame {
                message: Message::Error(e),
                ..
            })) => Err(Error::Handshake {
                code: e.code,
                message: e.message,
            }),
            Some(Ok(other)) => Err(Error::Protocol(format!(
                "expected Welcome, got {:?}",
                other.message.message_type()
            ))),
            Some(Err(e)) => Err(Error::Protocol(e.to_string())),
            None => Err(Error::Connect {
                addr: opts.addr.clone(),
                reason: "closed during the handshake".into(),
            }),
        }
    };
    tokio::time::timeout(opts.connect_timeout, attempt)
        .await
        .map_err(|_| Error::Connect {
            addr: opts.addr.clone(),
            reason: "timed out".into(),
        })?
}

/// Connects to the first node that answers, from the one in use on: a
/// cluster's nodes each in turn, once. The last failure is the error;
/// a refusal of the credentials ends the round at once (every node
/// would say the same).
pub(crate) async fn connect_any(opts: &mut ClientBuilder) -> Result<Connected, Error> {
    let mut last = None;
    for _ in 0..opts.node_count() {
        match connect(opts).await {
            Ok(connected) => return Ok(connected),
            Err(e @ Error::Handshake { .. }) => return Err(e),
            Err(e) => {
                debug!(error = %e, node = %opts.addr, "node did not answer");
                last = Some(e);
                opts.next_node();
            }
        }
    }
    Err(last.expect("at least one node"))
}

/// Asks the app's token callback for a new token when there is one and
/// the token in use is missing or expired (by this machine's clock).
pub(crate) async fn renew_if_stale(opts: &mut ClientBuilder) -> Result<(), Error> {
    let Some(source) = &opts.token_source else {
        return Ok(());
    };
    let stale = opts.token.is_empty()
        || token::expiry(&opts.token).is_some_and(|exp| exp * 1000 <= token::now_ms());
    if stale {
        opts.token = source
            .fetch()
            .await
            .map_err(|e| Error::Token(e.to_string()))?;
    }
    Ok(())
}

/// Connects again after a loss, waiting between attempts as the policy
/// says; each attempt goes to the next node of a cluster (the one just
/// left may be the one that stopped). A token that expired is renewed through the app's callback, if
/// it gave one. `None` means give up: the attempts ran out, the
/// credentials were refused or revoked, or `closed` was cancelled while
/// waiting.
pub(crate) async fn reconnect(
    opts: &mut ClientBuilder,
    closed: &CancellationToken,
) -> Option<Connected> {
    let mut backoff = Backoff::new(opts.reconnect);
    loop {
        let delay = backoff.next_delay()?;
        tokio::select! {
            _ = closed.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        if let Err(e) = renew_if_stale(opts).await {
            debug!(error = %e, "token callback failed");
            continue;
        }
        opts.next_node();
        match connect(opts).await {
            Ok(connected) => return Some(connected),
            Err(Error::Handshake {
                code: ErrorCode::TokenExpired,
                ..
            }) if opts.token_source.is_some() => {
                // Expired by the server's clock if not by this one: the
                // next attempt asks for a new token.
                opts.token.clear();
            }
            Err(Error::Handshake {
                code: ErrorCode::AuthFailed | ErrorCode::TokenExpired | ErrorCode::Revoked,
                ..
            }) => {
                // Retrying the same credentials cannot succeed, and a
                // revoked user must not keep knocking.
                return None;
            }
            Err(e) => debug!(error = %e, attempts = backoff.attempts, "reconnect failed"),
        }
    }
}

/// The waits between reconnect attempts: from the policy's initial delay,
/// doubling up to its maximum, each jittered to between half and all of
/// its value so that clients dropped together do not return together.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: ReconnectPolicy,
    /// The un-jittered wait before the next attempt.
    delay: Duration,
    /// Attempts made so far.
    attempts: u32,
}

impl Backoff {
    /// The waits for one outage, starting from the initial delay.
    pub(crate) fn new(policy: ReconnectPolicy) -> Backoff {
        Backoff {
            policy,
            delay: policy.initial_delay,
            attempts: 0,
        }
    }

    /// How long to wait before the next attempt, counting it as made;
    /// `None` once the policy's attempts are used up.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        self.attempts += 1;
        let jittered = self.delay.mul_f64(rand::rng().random_range(0.5..=1.0));
        // The floor keeps a zero initial delay from staying zero (a tight
        // loop against a server that is down).
        self.delay = self.delay.saturating_mul(2).clamp(
            Duration::from_millis(1),
            self.policy.max_delay.max(Duration::from_millis(1)),
        );
        Some(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_maximum_within_the_jitter() {
        let mut backoff = Backoff::new(ReconnectPolicy {
            initial_delay: ms(100),
            max_delay: ms(1000),
            max_attempts: None,
        });
        for full in [100, 200, 400, 800, 1000, 1000, 1000] {
            let d = backoff.next_delay().expect("retries forever");
            assert!(
                d >= ms(full / 2) && d <= ms(full),
                "{d:?} not in {full}/2..={full}"
            );
        }
    }

    #[test]
    fn attempts_run_out() {
        let mut backoff = Backoff::new(ReconnectPolicy {
            initial_delay: ms(1),
            max_delay: ms(2),
            max_attempts: Some(3),
        });
        assert_eq!((0..5).filter_map(|_| backoff.next_delay()).count(), 3);
        assert_eq!(Backoff::new(ReconnectPolicy::NEVER).next_delay(), None);
    }

    #[test]
    fn a_zero_initial_delay_grows_from_a_millisecond() {
        let mut backoff = Backoff::new(ReconnectPolicy {
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_attempts: None,
        });
        assert_eq!(backoff.next_delay(), Some(Duration::ZERO));
        let d = backoff.next_delay().expect("retries forever");
        assert!(d >= Duration::from_micros(500) && d <= ms(1), "{d:?}");
    }
}
