//! The HTTP listener over TLS (`http_tls`): an accept loop that hands
//! each connection to a task of its own, where the TLS handshake runs
//! under the handshake timeout and hyper then serves HTTP/2 or HTTP/1.1,
//! as ALPN agreed.
//!
//! The handshake is off the accept loop so that a client that opens TCP
//! and never finishes TLS holds up nobody else's connection. At shutdown
//! the loop stops accepting, handshakes under way are dropped, and each
//! connection finishes the requests it has under way, then closes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::listener::is_per_connection;
use crate::tls::{ALPN_H2, ALPN_HTTP1};

/// How long the loop waits after an accept error that is not one
/// connection's (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` over TLS on `listener` until `shutdown` fires; returns
/// once every connection has finished its requests under way.
pub(super) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let deadline = Instant::now() + handshake_timeout;
                connections.spawn(connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    deadline,
                    shutdown.clone(),
                ));
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                warn!(error = %e, "HTTP listener: accept failed; backing off");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    // Closed now, not when the last request is answered: a client that
    // connects meanwhile is refused rather than left waiting.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One connection: the TLS handshake by `deadline`, then HTTP until the
/// client closes, or until `shutdown` and the end of the requests under way.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    deadline: Instant,
    shutdown: CancellationToken,
) {
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = timeout_at(deadline, acceptor.accept(tcp)) => r,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            // Port probes: nothing went wrong worth a line.
            debug!(%peer, "HTTPS: gone before the TLS handshake");
            return;
        }
        Ok(Err(e)) => {
            info!(%peer, code = "tls_handshake", reason = %e, "HTTPS handshake refused");
            return;
        }
        Err(_) => {
            info!(
                %peer,
                code = "handshake_timeout",
                reason = "no TLS handshake in time",
                "HTTPS handshake refused"
            );
            return;
        }
    };
    // What ALPN agreed on is what the client will speak: no need to sniff
    // for HTTP/2's preface. A client that offered no ALPN may speak either.
    let builder = auto::Builder::new(TokioExecutor::new());
    let builder = match stream.get_ref().1.alpn_protocol() {
        Some(ALPN_H2) => builder.http2_only(),
        Some(ALPN_HTTP1) => builder.http1_only(),
        _ => builder,
    };
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = shutdown.cancelled() => None,
    };
    let served = match ended {
        Some(r) => r,
        None => {
            // Answers what is under way, then closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        // A client gone mid-request, a malformed request: its own affair.
        debug!(%peer, error = %e, "HTTPS connection ended with an error");
    }
}
