//! The byte stream under a connection: the TCP socket itself, or TLS over
//! it, behind the readiness calls the session is written against
//! (`readable`, `try_read_buf`, `writable`, `try_write`).
//!
//! Plain TCP goes straight to tokio's socket calls: one branch on the
//! variant is all it pays. TLS keeps two kinds of state the socket's
//! readiness does not show, so those calls account for them:
//!
//! - decrypted bytes left over from a read that filled the caller's
//!   buffer: `readable` is ready at once while rustls holds some;
//! - encrypted bytes rustls took but the socket did not (a write that
//!   found the send buffer full): [`Transport::wants_write`] says so, and
//!   [`Transport::send_buffered`] pushes them out once it is writable.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// A client's connection, plain or TLS.
pub(crate) enum Transport {
    /// TCP as accepted.
    Plain(TcpStream),
    /// TLS over TCP, past its handshake (boxed: the session's state is a
    /// few kilobytes and plain connections should not carry the room).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Polls `f` once without a task to wake: the readiness futures
/// (`readable`, `writable`) are what the session waits on, and tokio
/// clears a socket's readiness when a call finds it would block, so they
/// wake it when there is more.
fn once<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    match f(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl Transport {
    /// Runs the TLS handshake on `tcp` when `tls` is set, until `deadline`.
    /// `None` when the handshake failed or ran out of time: the connection
    /// is dropped (there is no session to send an `Error` frame over).
    pub(super) async fn accept(
        tcp: TcpStream,
        tls: Option<&TlsAcceptor>,
        deadline: Instant,
        metrics: &Metrics,
    ) -> Option<Transport> {
        let Some(acceptor) = tls else {
            return Some(Transport::Plain(tcp));
        };
        match timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Some(Transport::Tls(Box::new(stream))),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // Port probes and health checks: as with a plain
                // connection gone before Hello, not worth a line.
                debug!("gone before the TLS handshake");
                None
            }
            Ok(Err(e)) => {
                Metrics::add(&metrics.auth_failures, 1);
                info!(code = "tls_handshake", reason = %e, "handshake refused");
                None
            }
            Err(_) => {
                Metrics::add(&metrics.auth_failures, 1);
                info!(
                    code = "handshake_timeout",
                    reason = "no TLS handshake in time",
                    "handshake refused"
                );
                None
            }
        }
    }

    /// The TCP socket under the connection.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref().0,
        }
    }

    /// Waits until a read may find something.
    pub(super) async fn readable(&self) -> io::Result<()> {
        if let Transport::Tls(s) = self {
            // rustls wants no more input while it holds decrypted bytes
            // (or has the peer's close_notify): a read returns at once.
            if !s.get_ref().1.wants_read() {
                return Ok(());
            }
        }
        self.tcp().readable().await
    }

    /// Waits until a write may go through.
    pub(super) async fn writable(&self) -> io::Result<()> {
        self.tcp().writable().await
    }

    /// Whether encrypted bytes wait for the socket (never on plain TCP).
    pub(super) fn wants_write(&self) -> bool {
        matches!(self, Transport::Tls(s) if s.get_ref().1.wants_write())
    }

    /// Reads into `buf`'s spare room without waiting: `WouldBlock` when
    /// nothing is there, `Ok(0)` at the end of the stream.
    pub(super) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_read_buf(buf),
            Transport::Tls(s) => {
                let s = Pin::new(&mut **s);
                tls_eof_is_end(once(|cx| tokio_util::io::poll_read_buf(s, cx, buf)))
            }
        }
    }

    /// Reads into `buf` without waiting, like [`Transport::try_read_buf`].
    pub(super) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_read(buf),
            Transport::Tls(s) => {
                let mut read = ReadBuf::new(buf);
                let r = once(|cx| Pin::new(&mut **s).poll_read(cx, &mut read));
                tls_eof_is_end(r.map(|()| read.filled().len()))
            }
        }
    }

    /// Writes from `buf` without waiting. With TLS the count is of bytes
    /// rustls took; some may still wait for the socket
    /// ([`Transport::wants_write`]).
    pub(super) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_write(buf),
            Transport::Tls(s) => once(|cx| Pin::new(&mut **s).poll_write(cx, buf)),
        }
    }

    /// Writes from `bufs` in order without waiting, like
    /// [`Transport::try_write`]: one `writev` on plain TCP; with TLS,
    /// rustls takes them into as few records as fit.
    pub(super) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_write_vectored(bufs),
            Transport::Tls(s) => once(|cx| Pin::new(&mut **s).poll_write_vectored(cx, bufs)),
        }
    }

    /// Writes what TLS holds encrypted, as far as the socket takes it now.
    pub(super) fn send_buffered(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(s) => match once(|cx| Pin::new(&mut **s).poll_flush(cx)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                r => r,
            },
        }
    }
}

/// A peer that closes TCP without TLS's close_notify ends the stream like
/// one that closes a plain connection: frames are length-prefixed, so a
/// cut cannot pass for a shorter message, and most clients never send one.
fn tls_eof_is_end(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
