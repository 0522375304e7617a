//! The handle every forwarding loop holds for a connection: its identity
//! and its bounded outbound queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use apm_core::ErrorCode;
use apm_core::message::Role;
use bytes::Bytes;
use crossbeam_queue::SegQueue;
use tokio::sync::Notify;

use crate::config::SlowConsumerPolicy;

/// A connection as the rest of the server sees it. Shared as `Arc<Conn>`.
///
/// The queue is a `SegQueue`, which allocates only while frames are queued,
/// so an idle connection costs no queue memory; `len` and `bytes` bound it.
#[derive(Debug)]
pub struct Conn {
    /// Server-assigned connection id.
    pub id: u64,
    /// The authenticated user.
    pub user: Arc<str>,
    /// The session's role.
    pub role: Role,
    queue: SegQueue<Bytes>,
    len: AtomicUsize,
    bytes: AtomicUsize,
    max_len: usize,
    max_bytes: usize,
    policy: SlowConsumerPolicy,
    /// Why the connection is closing; 0 while open.
    close_code: AtomicU16,
    wake: Notify,
}

/// What became of a frame offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped under the drop policy.
    Dropped,
    /// Refused: the queue was full, and this push closed the connection as
    /// a slow consumer.
    SlowConsumer,
    /// Refused: the connection is closing.
    Closed,
}

impl Conn {
    /// A connection handle with the given queue bounds.
    pub fn new(
        id: u64,
        user: Arc<str>,
        role: Role,
        max_len: usize,
        max_bytes: usize,
        policy: SlowConsumerPolicy,
    ) -> Conn {
        Conn {
            id,
            user,
            role,
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_len,
            max_bytes,
            policy,
            close_code: AtomicU16::new(0),
            wake: Notify::new(),
        }
    }

    /// Queues a frame for the connection's writer.
    ///
    /// Never blocks. A full queue makes the connection a slow consumer:
    /// closed with `SlowConsumer`, or under the drop policy the frame is
    /// dropped.
    pub fn push(&self, frame: Bytes) -> Pushed {
        if self.is_closing() {
            return Pushed::Closed;
        }
        let size = frame.len();
        let prev_len = self.len.fetch_add(1, Ordering::AcqRel);
        let prev_bytes = self.bytes.fetch_add(size, Ordering::AcqRel);
        if prev_len >= self.max_len || prev_bytes + size > self.max_bytes {
            self.len.fetch_sub(1, Ordering::AcqRel);
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return match self.policy {
                SlowConsumerPolicy::Drop => Pushed::Dropped,
                SlowConsumerPolicy::Disconnect => {
                    self.close(ErrorCode::SlowConsumer);
                    Pushed::SlowConsumer
                }
            };
        }
        self.queue.push(frame);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Takes the next queued frame.
    pub fn pop(&self) -> Option<Bytes> {
        let frame = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Drops everything queued.
    pub fn clear(&self) {
        while self.pop().is_some() {}
    }

    /// Marks the connection as closing for `code` (the first reason wins)
    /// and wakes its task.
    pub fn close(&self, code: ErrorCode) {
        let _ =
            self.close_code
                .compare_exchange(0, code as u16, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::Acquire) != 0
    }

    /// Why the connection is closing, if it is.
    pub fn close_code(&self) -> Option<ErrorCode> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            c => Some(ErrorCode::from_u16(c)),
        }
    }

    /// Resolves when something was queued or the connection began closing
    /// since the last time it resolved.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(policy: SlowConsumerPolicy) -> Conn {
        Conn::new(1, "u".into(), Role::User, 2, 100, policy)
    }

    #[test]
    fn full_queue_closes_a_slow_consumer() {
        let c = conn(SlowConsumerPolicy::Disconnect);
        assert_eq!(c.push(Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(c.push(Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(c.push(Bytes::from_static(b"c")), Pushed::SlowConsumer);
        assert_eq!(c.close_code(), Some(ErrorCode::SlowConsumer));
        assert_eq!(c.push(Bytes::from_static(b"d")), Pushed::Closed);
    }

    #[test]
    fn byte_bound_and_drop_policy() {
        let c = conn(SlowConsumerPolicy::Drop);
        assert_eq!(c.push(Bytes::from(vec![0; 90])), Pushed::Queued);
        assert_eq!(c.push(Bytes::from(vec![0; 20])), Pushed::Dropped);
        assert!(!c.is_closing());
        assert_eq!(c.pop().map(|b| b.len()), Some(90));
        assert_eq!(c.push(Bytes::from(vec![0; 20])), Pushed::Queued);
    }
}
