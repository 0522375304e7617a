//! The handle every forwarding loop holds for a connection: its identity
//! and its bounded outbound queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use apm_core::ErrorCode;
use apm_core::message::Role;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::config::SlowConsumerPolicy;

/// A connection as the rest of the server sees it. Shared as `Arc<Conn>`.
///
/// The outbound queue is a `VecDeque` behind a `std` mutex: an idle
/// connection's queue owns no memory (a lock-free `SegQueue` keeps two
/// cache-padded indices and a 1.2 KiB block per connection, an
/// `ArrayQueue` its whole capacity), and the connection's task takes every
/// queued frame with one lock. Nothing awaits while holding the lock.
#[derive(Debug)]
pub struct Conn {
    /// Server-assigned connection id.
    pub id: u64,
    /// The authenticated user.
    pub user: Arc<str>,
    /// The session's role.
    pub role: Role,
    queue: Mutex<Queue>,
    max_len: usize,
    max_bytes: usize,
    policy: SlowConsumerPolicy,
    /// Why the connection is closing; 0 while open.
    close_code: AtomicU16,
    /// How many connections its user holds, kept by the user's shard, so a
    /// private message from a single-device user skips the copy for the
    /// sender's other devices.
    user_connections: AtomicU32,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
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
            queue: Mutex::new(Queue::default()),
            max_len,
            max_bytes,
            policy,
            close_code: AtomicU16::new(0),
            user_connections: AtomicU32::new(1),
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
        let mut q = self.lock();
        if q.frames.len() >= self.max_len || q.bytes + frame.len() > self.max_bytes {
            drop(q);
            return match self.policy {
                SlowConsumerPolicy::Drop => Pushed::Dropped,
                SlowConsumerPolicy::Disconnect => {
                    self.close(ErrorCode::SlowConsumer);
                    Pushed::SlowConsumer
                }
            };
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Queues a frame the connection asked for (Welcome, a reply, a
    /// replay) outside the slow-consumer bound: such frames are one per
    /// request, or bounded by the caller, and dropping one would leave a
    /// request unanswered.
    pub fn push_reply(&self, frame: Bytes) -> Pushed {
        if self.is_closing() {
            return Pushed::Closed;
        }
        let mut q = self.lock();
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        self.wake.notify_one();
        Pushed::Queued
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue invalid.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every queued frame, oldest first.
    pub fn take_all(&self) -> VecDeque<Bytes> {
        let mut q = self.lock();
        q.bytes = 0;
        std::mem::take(&mut q.frames)
    }

    /// Takes the oldest queued frame.
    pub fn pop(&self) -> Option<Bytes> {
        let mut q = self.lock();
        let frame = q.frames.pop_front()?;
        q.bytes -= frame.len();
        Some(frame)
    }

    /// Drops everything queued.
    pub fn clear(&self) {
        drop(self.take_all());
    }

    /// Marks the connection as closing for `code` (the first reason wins)
    /// and wakes its task.
    pub fn close(&self, code: ErrorCode) {
        let _ =
            self.close_code
                .compare_exchange(0, code as u16, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    /// How many connections the user holds, as of the last change.
    pub fn user_connections(&self) -> u32 {
        self.user_connections.load(Ordering::Relaxed)
    }

    /// Records how many connections the user holds.
    pub fn set_user_connections(&self, n: u32) {
        self.user_connections.store(n, Ordering::Relaxed);
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
