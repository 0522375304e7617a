//! The outbound side of a connection: what the shards queued goes to the
//! socket in as few writes as it takes (small frames copied together,
//! larger ones written from their own shared bytes, several in one
//! vectored write), and a closing connection says why before it goes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Duration;

use apm_core::{ErrorCode, Frame, Message};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use crate::metrics::Metrics;

use super::Session;

/// Most bytes gathered for one write.
const WRITE_BATCH: usize = 64 * 1024;
/// Frames smaller than this are copied together into one buffer: a slice
/// per small frame costs the kernel more than the copy. Larger ones are
/// written from their own bytes.
const FLATTEN_BELOW: usize = 4 * 1024;
/// Most slices in one vectored write.
const MAX_SLICES: usize = 64;
/// How long a closing connection waits for its last frame to be taken and
/// for the client to stop sending.
const LINGER: Duration = Duration::from_secs(1);
/// Most input discarded while lingering: a client that keeps sending is
/// cut off after this much (or after [`LINGER`]).
const LINGER_MAX_BYTES: usize = 64 * 1024 * 1024;

impl Session {
    /// Takes queued frames and writes as much as the socket takes without
    /// waiting, up to [`MAX_SLICES`] chunks in one vectored write (see
    /// [`gather`]). Buffers are let go as soon as they are written, so an
    /// idle connection holds none.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.out.is_empty() {
                if self.pending.is_empty() {
                    self.pending = self.conn.take_all();
                    if self.pending.is_empty() {
                        self.out = VecDeque::new();
                        return self.stream.send_buffered();
                    }
                }
                gather(&mut self.pending, &mut self.out);
            }
            let written = if self.out.len() == 1 {
                self.stream.try_write(&self.out[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                for (slice, chunk) in slices.iter_mut().zip(&self.out) {
                    *slice = IoSlice::new(chunk);
                }
                self.stream
                    .try_write_vectored(&slices[..self.out.len().min(MAX_SLICES)])
            };
            match written {
                Ok(n) => {
                    Metrics::add(&self.hub.metrics.bytes_out, n as u64);
                    advance(&mut self.out, n);
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
        // The first chunk may be part-written; the rest are whole frames
        // not begun, and go with the queue.
        let out = std::mem::take(&mut self.out)
            .pop_front()
            .unwrap_or_default();
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

/// Moves frames from `pending` (not empty) to `out` (empty) as chunks to
/// write: a run of small frames copied into one buffer of its exact size
/// (a run of one moved as it is), a frame of [`FLATTEN_BELOW`] or more
/// moved as it is; at most [`MAX_SLICES`] chunks and about
/// [`WRITE_BATCH`] bytes (a larger lone frame goes alone).
fn gather(pending: &mut VecDeque<Bytes>, out: &mut VecDeque<Bytes>) {
    let mut total = 0;
    while out.len() < MAX_SLICES
        && let Some(first) = pending.front()
    {
        if total > 0 && total + first.len() > WRITE_BATCH {
            break;
        }
        if first.len() >= FLATTEN_BELOW {
            total += first.len();
            out.extend(pending.pop_front());
            continue;
        }
        // A run of small frames that fits what is left of the batch.
        let mut size = 0;
        let run = pending
            .iter()
            .take_while(|f| {
                size += f.len();
                f.len() < FLATTEN_BELOW && total + size <= WRITE_BATCH
            })
            .count()
            .max(1);
        if run == 1 {
            total += first.len();
            out.extend(pending.pop_front());
            continue;
        }
        let mut flat = BytesMut::with_capacity(pending.iter().take(run).map(Bytes::len).sum());
        for frame in pending.drain(..run) {
            flat.extend_from_slice(&frame);
        }
        total += flat.len();
        out.push_back(flat.freeze());
    }
    if pending.is_empty() {
        // Let the emptied queue's buffer go: an idle connection holds none.
        *pending = VecDeque::new();
    }
}

/// Drops the first `n` written bytes of `out`'s chunks.
fn advance(out: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = out.front_mut() else {
            return;
        };
        if n < front.len() {
            front.advance(n);
            return;
        }
        n -= front.len();
        out.pop_front();
    }
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

    fn gathered(pending: &mut VecDeque<Bytes>) -> Vec<usize> {
        let mut out = VecDeque::new();
        gather(pending, &mut out);
        out.iter().map(Bytes::len).collect()
    }

    #[test]
    fn a_lone_frame_goes_as_it_is() {
        let mut pending = frames(&[10]);
        let ptr = pending[0].as_ptr();
        let mut out = VecDeque::new();
        gather(&mut pending, &mut out);
        assert_eq!(out[0].as_ptr(), ptr, "no copy");
        assert!(pending.is_empty());
    }

    #[test]
    fn small_frames_are_copied_together_up_to_the_batch_size() {
        let mut pending = frames(&[10, 20, 30]);
        let mut out = VecDeque::new();
        gather(&mut pending, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 60);
        assert_eq!(&out[0][..10], &[0u8; 10]);
        assert_eq!(&out[0][30..], &[2u8; 30]);
        assert!(pending.is_empty());

        let mut pending = frames(&[4000; 20]);
        assert_eq!(gathered(&mut pending), vec![64_000]);
        assert_eq!(pending.len(), 4, "what does not fit waits");
    }

    #[test]
    fn large_frames_are_not_copied_and_go_between_the_runs() {
        let mut pending = frames(&[10, 20, FLATTEN_BELOW, 5, 6_000, 7]);
        let large = pending[2].as_ptr();
        let mut out = VecDeque::new();
        gather(&mut pending, &mut out);
        let sizes: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![30, FLATTEN_BELOW, 5, 6_000, 7]);
        assert_eq!(out[1].as_ptr(), large, "no copy");
        assert_eq!(out[2][0], 3, "the order is kept");
        assert!(pending.is_empty());

        let mut pending = frames(&[WRITE_BATCH * 2, 5]);
        assert_eq!(gathered(&mut pending), vec![WRITE_BATCH * 2], "goes alone");
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn at_most_max_slices_chunks_a_write() {
        let mut pending = frames(&[FLATTEN_BELOW / 2; 3 * MAX_SLICES]);
        // Alternate small and large so that no two small ones are neighbours.
        for (i, f) in pending.iter_mut().enumerate() {
            if i % 2 == 1 {
                *f = Bytes::from(vec![0u8; FLATTEN_BELOW]);
            }
        }
        let n = gathered(&mut pending).len();
        assert!(n <= MAX_SLICES, "{n} chunks");
    }

    #[test]
    fn advance_drops_what_was_written() {
        let mut out = frames(&[3, 4, 5]);
        advance(&mut out, 5);
        let left: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(left, vec![2, 5]);
        assert_eq!(out[0][..], [1u8, 1]);
        advance(&mut out, 7);
        assert!(out.is_empty());
    }
}
