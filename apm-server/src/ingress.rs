//! A shard's ingress: the lock-free queue of commands for its forwarding
//! loop, and the wake-ups between the loop and those who feed it.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use tokio::sync::Notify;

use crate::shard::command::Command;

/// One shard's ingress: a lock-free queue with a soft bound (kept by
/// [`crate::hub::Hub::submit`]), and the wake-ups between readers and the
/// shard's forwarding loop.
#[derive(Debug, Default)]
pub(crate) struct Ingress {
    queue: SegQueue<Command>,
    len: AtomicUsize,
    /// Wakes the forwarding loop when a command arrives.
    pub(crate) wake: Notify,
    /// Wakes readers waiting for room.
    pub(crate) space: Notify,
    /// Nanoseconds the loop has spent handling commands, added once per
    /// pass (for the loop-busy metric).
    pub(crate) busy_ns: std::sync::atomic::AtomicU64,
}

impl Ingress {
    /// Takes the oldest command.
    pub(crate) fn pop(&self) -> Option<Command> {
        let cmd = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(cmd)
    }

    /// Queues a command and wakes the loop; the caller has checked room.
    pub(crate) fn push(&self, cmd: Command) {
        self.len.fetch_add(1, Ordering::AcqRel);
        self.queue.push(cmd);
        self.wake.notify_one();
    }

    /// Commands waiting.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether no command waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
