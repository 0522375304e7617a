//! The accept loop: connection limit, refusal, and back-off when the
//! process runs out of file descriptors.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apm_core::{ErrorCode, Frame, Message};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::connection;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Decrements the open-connection gauge when a connection task ends.
struct OpenGuard(Arc<Hub>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors that concern one connection, not the listener: accept again.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Accepts until `shutdown` fires, spawning each connection on `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    hub: Arc<Hub>,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    const BACKOFF_MIN: Duration = Duration::from_millis(5);
    const BACKOFF_MAX: Duration = Duration::from_secs(1);
    let mut backoff = BACKOFF_MIN;
    // Each refusal at the limit is only counted (a flood would otherwise
    // be a flood of log lines); reaching the limit and leaving it are
    // logged.
    let mut full = false;
    let refusal = Frame::new(
        0,
        Message::error(ErrorCode::TooManyConnections, "the server is full"),
    )
    .to_bytes()
    .expect("small frame");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = BACKOFF_MIN;
                Metrics::add(&hub.metrics.connections_accepted, 1);
                let open = hub.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                if open as usize >= max_connections {
                    hub.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                    Metrics::add(&hub.metrics.connections_refused, 1);
                    debug!(%peer, open, "refused: connection limit");
                    if !full {
                        full = true;
                        warn!(
                            limit = max_connections,
                            "connection limit reached: new connections are refused \
                             (counted in connections_refused)"
                        );
                    }
                    // A fresh socket's send buffer is empty, so this small
                    // write does not block; the close follows at once.
                    let _ = stream.try_write(&refusal);
                    continue;
                }
                if full {
                    full = false;
                    info!("below the connection limit again: accepting");
                }
                let guard = OpenGuard(hub.clone());
                let hub = hub.clone();
                let shutdown = shutdown.clone();
                // The TLS handshake runs in the connection's task: a slow
                // client holds up no one else's accept.
                let tls = tls.clone();
                tracker.spawn(async move {
                    connection::serve(stream, peer, tls, hub, shutdown).await;
                    drop(guard);
                });
            }
            Err(e) if is_per_connection(&e) => {
                Metrics::add(&hub.metrics.accept_errors, 1);
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: retrying at once would spin.
                Metrics::add(&hub.metrics.accept_errors, 1);
                warn!(error = %e, ?backoff, "accept failed; backing off");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
