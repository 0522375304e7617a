//! The handle every forwarding loop holds for a connection: its identity,
//! its bounded outbound queue, and its budgets (bytes of requests in flight
//! towards the shards, bytes of answers waiting to be written).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering};
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
    /// The user's server-side subscriptions changed since the task last
    /// read them.
    subscriptions_changed: AtomicBool,
    /// Cluster mode: messages of this connection on their way through
    /// Redis. A closing connection waits for their receipts.
    in_cluster: AtomicUsize,
    wake: Notify,
    /// Bytes of this connection's commands the shards have handled, ever.
    /// What the task charged less this is what waits at shards (see
    /// [`Allowance`]): only shards write it, so handing a command back
    /// costs them no cache line the task keeps writing.
    released: AtomicUsize,
    /// `released` at which the task wants to be woken (it is waiting for
    /// room); `usize::MAX` when it is not waiting.
    wake_at: AtomicUsize,
    /// Bytes of this connection's commands that may wait at shards.
    ingress_allowance: usize,
    /// While this many bytes of answers wait in the queue, the connection's
    /// requests are not read.
    reply_budget: usize,
    /// The queue's `reply_bytes`, readable without the lock: the
    /// connection's task checks it for every request it reads.
    replies: AtomicUsize,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// How many of `frames` are answers, and their bytes: these count
    /// against the reply budget, the rest against the slow-consumer bound.
    reply_frames: usize,
    reply_bytes: usize,
}

impl Queue {
    fn clear_counts(&mut self) {
        self.bytes = 0;
        self.reply_frames = 0;
        self.reply_bytes = 0;
    }
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
            subscriptions_changed: AtomicBool::new(false),
            in_cluster: AtomicUsize::new(0),
            wake: Notify::new(),
            released: AtomicUsize::new(0),
            wake_at: AtomicUsize::new(usize::MAX),
            ingress_allowance: usize::MAX,
            reply_budget: usize::MAX,
            replies: AtomicUsize::new(0),
        }
    }

    /// Sets the connection's budgets: bytes of requests in flight towards
    /// the shards, and bytes of answers waiting to be written. While
    /// either is spent the connection's requests are not read.
    pub fn with_budgets(mut self, ingress_allowance: usize, reply_budget: usize) -> Conn {
        self.ingress_allowance = ingress_allowance;
        self.reply_budget = reply_budget;
        self
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
        let pushed_frames = q.frames.len() - q.reply_frames;
        let pushed_bytes = q.bytes - q.reply_bytes;
        if pushed_frames >= self.max_len || pushed_bytes + frame.len() > self.max_bytes {
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
    /// replay) outside the slow-consumer bound: dropping one would leave a
    /// request unanswered. Answers count against the reply budget instead:
    /// while it is spent, the connection's requests are not read, so they
    /// come at the pace the client reads.
    pub fn push_reply(&self, frame: Bytes) -> Pushed {
        // A closing connection still takes the receipts of what it sent
        // through the cluster: it waits for them.
        if self.is_closing() && self.in_cluster() == 0 {
            return Pushed::Closed;
        }
        let mut q = self.lock();
        q.bytes += frame.len();
        q.reply_frames += 1;
        q.reply_bytes += frame.len();
        self.replies.store(q.reply_bytes, Ordering::Release);
        q.frames.push_back(frame);
        drop(q);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Tells the connection's task that its user's server-side
    /// subscriptions changed: it reads them again when it wakes.
    pub fn subscriptions_changed(&self) {
        self.subscriptions_changed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether the user's server-side subscriptions changed since the
    /// last call.
    pub fn take_subscriptions_changed(&self) -> bool {
        self.subscriptions_changed.load(Ordering::Relaxed)
            && self.subscriptions_changed.swap(false, Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue invalid.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every queued frame, oldest first.
    pub fn take_all(&self) -> VecDeque<Bytes> {
        let mut q = self.lock();
        q.clear_counts();
        self.replies.store(0, Ordering::Release);
        std::mem::take(&mut q.frames)
    }

    /// Takes the oldest queued frame.
    pub fn pop(&self) -> Option<Bytes> {
        let mut q = self.lock();
        let frame = q.frames.pop_front()?;
        q.bytes -= frame.len();
        // Which kind it was is not kept: count answers first, so the
        // slow-consumer bound never tightens.
        q.reply_bytes = q.reply_bytes.min(q.bytes);
        q.reply_frames = q.reply_frames.min(q.frames.len());
        self.replies.store(q.reply_bytes, Ordering::Release);
        Some(frame)
    }

    /// Bytes of answers queued and not yet taken by the connection's task.
    pub fn replies_queued(&self) -> usize {
        self.replies.load(Ordering::Acquire)
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

    /// Cluster mode: messages of this connection waiting for Redis's
    /// answer (and, after it, for their receipt to be queued).
    pub fn in_cluster(&self) -> usize {
        self.in_cluster.load(Ordering::Acquire)
    }

    /// Cluster mode: one more message of this connection went to Redis.
    pub(crate) fn cluster_taken(&self) {
        self.in_cluster.fetch_add(1, Ordering::AcqRel);
    }

    /// Cluster mode: a message of this connection was answered (its
    /// receipt, if any, is queued); wakes a task that waits to close.
    pub(crate) fn cluster_answered(&self) {
        if self.in_cluster.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake.notify_one();
        }
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

    /// A shard handled a command of `bytes` from this connection; wakes
    /// the connection's task if it waits for that much room.
    pub fn release_ingress(&self, bytes: usize) {
        let released = self.released.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if released >= self.wake_at.load(Ordering::Acquire) {
            self.wake_at.store(usize::MAX, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// Bytes of this connection's commands the shards have handled.
    pub fn released(&self) -> usize {
        self.released.load(Ordering::Acquire)
    }

    /// Whether answers queued for the connection are under its reply
    /// budget.
    pub fn has_reply_room(&self) -> bool {
        self.replies_queued() < self.reply_budget
    }

    /// The connection's ingress allowance, for its task's [`Allowance`].
    pub fn allowance(&self) -> Allowance {
        Allowance {
            limit: self.ingress_allowance,
            charged: 0,
            seen: 0,
        }
    }
}

/// The connection task's side of its ingress allowance: what it has
/// charged for the commands it sent to shards, and what it last saw the
/// shards hand back. It looks at the shared count only when its own
/// figures say the allowance may be spent, so a busy connection reads a
/// line the shards write about once per allowance, not once per request.
#[derive(Debug)]
pub struct Allowance {
    limit: usize,
    charged: usize,
    seen: usize,
}

impl Allowance {
    /// Counts a command of `bytes` on its way to a shard.
    pub fn charge(&mut self, bytes: usize) {
        self.charged += bytes;
    }

    /// Whether another request may go to the shards. When not, `conn`
    /// wakes its task once they have handed back enough.
    pub fn has_room(&mut self, conn: &Conn) -> bool {
        if self.charged - self.seen < self.limit {
            return true;
        }
        self.seen = conn.released();
        if self.charged - self.seen < self.limit {
            return true;
        }
        // Ask for a wake-up, then look once more: a release between the
        // two reads would otherwise go unnoticed.
        let target = self.charged - self.limit + 1;
        conn.wake_at.store(target, Ordering::Release);
        self.seen = conn.released();
        self.charged - self.seen < self.limit
    }

    /// Whether the shards handled every command sent them. When not,
    /// `conn` wakes its task once they have.
    pub fn all_handled(&mut self, conn: &Conn) -> bool {
        self.seen = conn.released();
        if self.seen == self.charged {
            return true;
        }
        conn.wake_at.store(self.charged, Ordering::Release);
        self.seen = conn.released();
        self.seen == self.charged
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
    fn answers_count_against_the_reply_budget_not_the_slow_consumer_bound() {
        let c = conn(SlowConsumerPolicy::Disconnect).with_budgets(usize::MAX, 150);
        for _ in 0..3 {
            assert_eq!(c.push_reply(Bytes::from(vec![0; 60])), Pushed::Queued);
        }
        assert!(!c.is_closing(), "answers are not pushed messages");
        assert_eq!(c.replies_queued(), 180);
        assert!(!c.has_reply_room(), "the reply budget is spent");
        assert_eq!(c.push(Bytes::from(vec![0; 90])), Pushed::Queued);
        assert_eq!(c.take_all().len(), 4);
        assert!(c.has_reply_room());
    }

    #[tokio::test]
    async fn the_ingress_allowance_wakes_the_task_when_it_frees() {
        async fn woken(c: &Conn) -> bool {
            tokio::time::timeout(std::time::Duration::ZERO, c.notified())
                .await
                .is_ok()
        }
        let c = conn(SlowConsumerPolicy::Disconnect).with_budgets(100, usize::MAX);
        let mut a = c.allowance();
        a.charge(60);
        assert!(a.has_room(&c));
        a.charge(60);
        assert!(!a.has_room(&c), "120 in flight");
        assert!(!woken(&c).await);
        c.release_ingress(10);
        assert!(!woken(&c).await, "110 in flight: still no room");
        c.release_ingress(50);
        assert!(woken(&c).await, "woken once under the allowance");
        assert!(a.has_room(&c), "60 in flight");
        c.release_ingress(60);
        assert!(!woken(&c).await, "only the task that waits is woken");
        a.charge(200);
        assert!(
            !a.has_room(&c),
            "one large command may overshoot, then none"
        );
        c.release_ingress(200);
        assert!(woken(&c).await);
        assert!(a.has_room(&c));
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
