//! The hub: the shards' ingress queues, how names map to shards, and the
//! settings every task shares.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apm_core::Limits;
use crossbeam_queue::SegQueue;
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::retention::RetentionPolicy;
use crate::shard::Command;
use crate::store::commit::Writer;
use crate::store::{AckRecord, ConversationId, Recovered, RecoveredConversation, Store};

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
    /// How much history each conversation keeps.
    pub(crate) retention: RetentionPolicy,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shards: Vec<Ingress>,
    /// The store's conversation state: seqs restart when it changes.
    pub(crate) epoch: u64,
    /// The group-commit writer, for a durable store; `None` when messages
    /// are delivered as soon as they are sequenced.
    pub(crate) writer: Option<Writer>,
    /// What each shard starts from, taken by its loop.
    seeds: Mutex<Vec<Seed>>,
    next_conn_id: AtomicU64,
    /// Seeded once, so a name maps to the same shard for the process's life.
    hasher: foldhash::fast::RandomState,
}

impl Hub {
    /// A hub over `store`, with each shard's seed taken from what the
    /// store read back.
    pub(crate) fn new(
        config: Config,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        recovered: Recovered,
    ) -> Hub {
        let count = config.shard_count();
        let shards = (0..count).map(|_| Ingress::default()).collect();
        let writer = store.is_durable().then(|| Writer::new(store.clone()));
        // Checked by `Config::validate` before a hub is made.
        let retention = config
            .retention_policy()
            .unwrap_or_else(|_| RetentionPolicy::uniform(config.retention()));
        let mut hub = Hub {
            limits: config.limits(),
            retention,
            config,
            metrics,
            shards,
            epoch: store.epoch(),
            writer,
            seeds: Mutex::new(Vec::new()),
            next_conn_id: AtomicU64::new(1),
            hasher: Default::default(),
        };
        let mut seeds: Vec<Seed> = (0..count).map(|_| Seed::default()).collect();
        for c in recovered.conversations {
            seeds[hub.shard_of_conversation(&c.conversation)]
                .conversations
                .push(c);
        }
        for a in recovered.acks {
            seeds[hub.shard_of_conversation(&a.conversation)]
                .acks
                .push(a);
        }
        hub.seeds = Mutex::new(seeds);
        hub
    }

    /// Shard `index`'s seed; empty after the first call.
    pub(crate) fn take_seed(&self, index: usize) -> Seed {
        self.seeds
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(index).map(std::mem::take))
            .unwrap_or_default()
    }

    /// The shard that sequences a conversation.
    pub(crate) fn shard_of_conversation(&self, c: &ConversationId) -> usize {
        match c {
            ConversationId::Channel(name) | ConversationId::User(name) => self.shard_of(name),
            ConversationId::Broadcast => Hub::BROADCAST_SHARD,
        }
    }

    /// Whether a reader may queue `cmd` for `shard`: the shard's ingress is
    /// under its bound and, for a new message, the disk is not too far
    /// behind. Reads, subscriptions and handshakes do not wait for the disk.
    fn has_room(&self, shard: usize, cmd: &Command) -> bool {
        self.shards[shard].len.load(Ordering::Acquire) < self.config.ingress_queue
            && (!cmd.is_message()
                || self
                    .writer
                    .as_ref()
                    .is_none_or(|w| w.backlog() < self.config.store_backlog))
    }

    /// The writer has handed `n` messages back: wake readers waiting for
    /// the disk to catch up.
    pub(crate) fn writer_drained(&self, n: usize) {
        if let Some(w) = &self.writer {
            w.drained(n);
        }
        for ingress in &self.shards {
            ingress.space.notify_waiters();
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
        if !self.has_room(shard, &cmd) {
            loop {
                let space = ingress.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                if self.has_room(shard, &cmd) {
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
        if !self.has_room(shard, &cmd) {
            return Err(cmd);
        }
        self.shards[shard].push(cmd);
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

/// What a shard's loop starts from: the conversations it owns as the store
/// read them back, and the read positions in them.
#[derive(Debug, Default)]
pub(crate) struct Seed {
    pub(crate) conversations: Vec<RecoveredConversation>,
    pub(crate) acks: Vec<AckRecord>,
}
