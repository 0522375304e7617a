//! The hub: the shards' ingress queues, how names map to shards, and the
//! settings every task shares.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use apm_core::Limits;
use crossbeam_queue::SegQueue;
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shard::Command;

/// One shard's ingress: a lock-free queue with a soft bound, and the
/// wake-ups between readers and the shard's forwarding loop.
#[derive(Debug, Default)]
pub(crate) struct Ingress {
    queue: SegQueue<Command>,
    len: AtomicUsize,
    /// Wakes the forwarding loop when a command arrives.
    pub(crate) wake: Notify,
    /// Wakes readers waiting for room.
    pub(crate) space: Notify,
}

impl Ingress {
    pub(crate) fn pop(&self) -> Option<Command> {
        let cmd = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(cmd)
    }

    fn push(&self, cmd: Command) {
        self.len.fetch_add(1, Ordering::AcqRel);
        self.queue.push(cmd);
        self.wake.notify_one();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

/// State shared by the listener, every connection and every shard.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shards: Vec<Ingress>,
    /// This process's conversation state: seqs restart with it.
    pub(crate) epoch: u64,
    next_conn_id: AtomicU64,
    /// Seeded once, so a name maps to the same shard for the process's life.
    hasher: foldhash::fast::RandomState,
}

impl Hub {
    pub(crate) fn new(config: Config, metrics: Arc<Metrics>) -> Hub {
        let shards = (0..config.shard_count())
            .map(|_| Ingress::default())
            .collect();
        Hub {
            limits: config.limits(),
            config,
            metrics,
            shards,
            epoch: crate::shard::now_ms(),
            next_conn_id: AtomicU64::new(1),
            hasher: Default::default(),
        }
    }

    /// Limits for the first frame: a Hello is small, so a client that has
    /// not authenticated cannot make the server reserve a large buffer.
    pub(crate) fn handshake_limits(&self) -> Limits {
        Limits {
            max_frame_len: self.limits.max_frame_len.min(16 * 1024),
            ..self.limits
        }
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The shard that owns a channel or a user.
    pub(crate) fn shard_of(&self, name: &str) -> usize {
        (self.hasher.hash_one(name) % self.shards.len() as u64) as usize
    }

    /// The shard that sequences broadcasts.
    pub(crate) const BROADCAST_SHARD: usize = 0;

    /// Queues a command from a connection, waiting while the shard's
    /// ingress is over its bound: this is the backpressure on publishers.
    pub(crate) async fn submit(&self, shard: usize, cmd: Command) {
        let ingress = &self.shards[shard];
        let max = self.config.ingress_queue;
        if ingress.len.load(Ordering::Acquire) >= max {
            loop {
                let space = ingress.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                if ingress.len.load(Ordering::Acquire) < max {
                    break;
                }
                space.await;
            }
        }
        ingress.push(cmd);
    }

    /// Queues a command from a connection unless the shard's ingress is
    /// over its bound, in which case the command comes back.
    pub(crate) fn try_submit(&self, shard: usize, cmd: Command) -> Result<(), Command> {
        let ingress = &self.shards[shard];
        if ingress.len.load(Ordering::Acquire) >= self.config.ingress_queue {
            return Err(cmd);
        }
        ingress.push(cmd);
        Ok(())
    }

    /// Queues a command from a forwarding loop or a closing connection.
    /// Never waits, so loops cannot deadlock on each other. What comes this
    /// way is either per connection (leave, unregister, presence events) or
    /// one command per message another shard already admitted through its
    /// bounded ingress (copies of a private message for the sender's other
    /// devices, a broadcast's fan-out).
    pub(crate) fn submit_now(&self, shard: usize, cmd: Command) {
        self.shards[shard].push(cmd);
    }
}
