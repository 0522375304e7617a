//! The outbound side of a connection: what the shards queued goes to the
//! socket in as few writes as it takes (a lone frame straight from its
//! shared bytes, small ones coalesced), and a closing connection says why
//! before it goes.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use apm_core::{ErrorCode, Frame, Message};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use crate::metrics::Metrics;

use super::Session;

/// Coalesce queued frames into writes of up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing connection waits for its last frame to be taken and
/// for the client to stop sending.
const LINGER: Duration = Duration::from_secs(1);
/// Most input discarded while lingering: a client that keeps sending is
/// cut off after this much (or after [`LINGER`]).
const LINGER_MAX_BYTES: usize = 64 * 1024 * 1024;

impl Session {
    /// Takes queued frames and writes as much as the socket takes without
    /// waiting. A lone frame is written straight from its shared bytes;
    /// several are copied into one buffer of their exact size (at most
    /// [`WRITE_BATCH`]) for one syscall. Buffers are let go as soon as they
    /// are written, so an idle connection holds none.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.out.is_empty() {
                if self.pending.is_empty() {
                    self.pending = self.conn.take_all();
                    if self.pending.is_empty() {
                        self.out = Bytes::new();
                        return self.stream.send_buffered();
                    }
                }
                self.out = next_chunk(&mut self.pending);
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

    /// A slow consumer's end: whatever is queued is abandoned; the frame
    /// being written is finished (a `Close` after half a frame would read
    /// as garbage), then the `Close` saying why goes out, as far as the
    /// client reads within [`LINGER`].
    pub(super) async fn abandon(&mut self, code: ErrorCode) {
        self.conn.clear();
        self.pending = VecDeque::new();
        let out = std::mem::take(&mut self.out);
        let close = Frame::new(0, Message::close(code, code.as_str()))
            .to_bytes()
            .expect("small frame");
        let mut last = BytesMut::with_capacity(out.len() + close.len());
        last.extend_from_slice(&out);
        last.extend_from_slice(&close);
        let _ = timeout(LINGER, self.stream.write_all(&last)).await;
        self.linger().await;
    }

    /// Everything queued is written: say why the connection closes (for a
    /// shutdown or an idle timeout; an `Error` frame was queued for a
    /// violation) and close gracefully.
    pub(super) async fn finish(&mut self, code: ErrorCode) {
        let reason = match code {
            ErrorCode::ServerShutdown if self.hub.cluster.is_some() => Some(
                "server_shutdown: this node is stopping; connect to another node of the \
                 cluster"
                    .to_owned(),
            ),
            ErrorCode::ServerShutdown | ErrorCode::IdleTimeout => Some(code.as_str().to_owned()),
            ErrorCode::TokenExpired => {
                Some("the token expired: connect again with a new one".to_owned())
            }
            ErrorCode::Kicked => Some("disconnected by the server's operator".to_owned()),
            ErrorCode::Revoked => Some(super::handshake::revoked_text(
                self.hub.revoked_until(&self.conn.user).unwrap_or(0),
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            let frame = Frame::new(0, Message::close(code, reason))
                .to_bytes()
                .expect("small frame");
            let _ = timeout(LINGER, self.stream.write_all(&frame)).await;
        }
        self.linger().await;
    }

    /// Shuts the write side, then reads and discards what the client still
    /// sends, until it closes too or [`LINGER`] passes. Closing a socket
    /// with unread input makes the kernel send a reset, which destroys
    /// what the client has not read yet: the frame saying why.
    async fn linger(&mut self) {
        let _ = timeout(LINGER, self.stream.shutdown()).await;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut scratch = vec![0u8; 64 * 1024];
        let mut discarded = 0usize;
        while discarded < LINGER_MAX_BYTES {
            match tokio::time::timeout_at(deadline, self.stream.readable()).await {
                Ok(Ok(())) => match self.stream.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(n) => discarded += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                },
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}

/// The next bytes to write from `pending` (not empty): a lone or large
/// frame as it is, else as many frames as fit in [`WRITE_BATCH`] copied into
/// one buffer of their exact size.
fn next_chunk(pending: &mut VecDeque<Bytes>) -> Bytes {
    let first = pending.pop_front().expect("pending is not empty");
    if pending.is_empty() || first.len() >= WRITE_BATCH {
        return first;
    }
    let mut size = first.len();
    let more = pending
        .iter()
        .take_while(|f| {
            size += f.len();
            size <= WRITE_BATCH
        })
        .count();
    let total = first.len() + pending.iter().take(more).map(Bytes::len).sum::<usize>();
    let mut batch = BytesMut::with_capacity(total);
    batch.extend_from_slice(&first);
    for frame in pending.drain(..more) {
        batch.extend_from_slice(&frame);
    }
    if pending.is_empty() {
        // Let the emptied queue's buffer go: an idle connection holds none.
        *pending = VecDeque::new();
    }
    batch.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(sizes: &[usize]) -> VecDeque<Bytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect()
    }

    #[test]
    fn a_lone_frame_goes_as_it_is() {
        let mut pending = frames(&[10]);
        let ptr = pending[0].as_ptr();
        let chunk = next_chunk(&mut pending);
        assert_eq!(chunk.as_ptr(), ptr, "no copy");
        assert!(pending.is_empty());
    }

    #[test]
    fn small_frames_are_coalesced_up_to_the_batch_size() {
        let mut pending = frames(&[10, 20, 30]);
        let chunk = next_chunk(&mut pending);
        assert_eq!(chunk.len(), 60);
        assert_eq!(&chunk[..10], &[0u8; 10]);
        assert_eq!(&chunk[30..], &[2u8; 30]);
        assert!(pending.is_empty());

        let half = WRITE_BATCH / 2;
        let mut pending = frames(&[half, half, 1]);
        assert_eq!(next_chunk(&mut pending).len(), 2 * half);
        assert_eq!(pending.len(), 1, "what does not fit waits");
    }

    #[test]
    fn a_large_frame_is_not_copied() {
        let mut pending = frames(&[WRITE_BATCH, 5]);
        let ptr = pending[0].as_ptr();
        assert_eq!(next_chunk(&mut pending).as_ptr(), ptr);
        assert_eq!(pending.len(), 1);
    }
}
