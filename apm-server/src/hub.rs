//! The hub: what every task shares. The shards' ingress queues and how
//! names map to shards, the settings, the sequencer and the group commit's
//! queue.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use apm_core::{ErrorCode, Limits};

use crate::access::ChannelRules;
use crate::config::Config;
use crate::conversation::ConversationId;
use crate::ingress::Ingress;
use crate::metrics::Metrics;
use crate::rate::Registry;
use crate::retention::RetentionPolicy;
use crate::revocation::Revocations;
use crate::shard::command::Command;
use crate::shard::sequencer::{LocalSequencer, Sequencer};
use crate::store::commit::CommitQueue;
use crate::store::{AckRecord, Recovered, RecoveredConversation, Store, StoreError};

/// State shared by the listener, every connection and every shard.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    /// How much history each conversation keeps.
    pub(crate) retention: RetentionPolicy,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shards: Arc<[Ingress]>,
    /// Who assigns seqs, and their epoch.
    pub(crate) sequencer: Box<dyn Sequencer>,
    /// Where messages live beyond the rings: what a read that misses a
    /// ring falls back to.
    pub(crate) store: Arc<dyn Store>,
    /// The group commit's queue, for a durable store; `None` when messages
    /// are delivered as soon as they are sequenced.
    pub(crate) commit: Option<Arc<CommitQueue>>,
    /// Who may use which channel.
    pub(crate) access: ChannelRules,
    /// Message rate limits, and each user's count.
    pub(crate) rates: Registry,
    /// Users whose tokens are refused until a time.
    pub(crate) revocations: Revocations,
    /// Cluster mode's link to Redis; `None` on a single node.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// What each shard starts from, taken by its loop.
    seeds: Mutex<Vec<Seed>>,
    next_conn_id: AtomicU64,
    /// Whether any server-side subscription may exist (see
    /// `server_subs.rs`).
    pub(crate) subscriptions_used: AtomicBool,
    /// Whether the client listener is accepting (for readiness probes).
    pub(crate) accepting: AtomicBool,
    /// When the server was made, for its uptime.
    pub(crate) started: Instant,
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
        cluster: Option<crate::cluster::Cluster>,
    ) -> Hub {
        let count = config.shard_count();
        let shards = (0..count).map(|_| Ingress::default()).collect();
        let commit = store
            .is_durable()
            .then(|| Arc::new(CommitQueue::new(store.clone())));
        // Checked by `Config::validate` before a hub is made.
        let retention = config
            .retention_policy()
            .unwrap_or_else(|_| RetentionPolicy::uniform(config.retention()));
        let rates = Registry::new(
            config
                .rate_policy()
                .unwrap_or_else(|_| crate::rate::RatePolicy::off()),
        );
        let access = config.channel_rules().unwrap_or_default();
        let revocations = match store.revocations(crate::clock::now_ms()) {
            Ok(running) => Revocations::new(running),
            Err(e) => {
                // Not fatal to start: the store's other reads worked, and
                // the operator can revoke again.
                tracing::error!(error = %e, "cannot read revocations back");
                Revocations::default()
            }
        };
        let subscriptions_used = store.has_subscriptions().unwrap_or_else(|e| {
            // Looked for at every handshake instead: slower, not wrong.
            tracing::error!(error = %e, "cannot tell whether server-side subscriptions exist");
            true
        });
        let mut hub = Hub {
            subscriptions_used: AtomicBool::new(subscriptions_used),
            revocations,
            cluster,
            limits: config.limits(),
            access,
            rates,
            retention,
            config,
            metrics,
            shards,
            sequencer: Box::new(LocalSequencer::new(store.epoch())),
            store: store.clone(),
            commit,
            seeds: Mutex::new(Vec::new()),
            next_conn_id: AtomicU64::new(1),
            accepting: AtomicBool::new(false),
            started: Instant::now(),
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
        match store.take_presence() {
            Ok((users, members)) => {
                for user in users {
                    seeds[hub.shard_of(&user)].users.push(user);
                }
                for (channel, user) in members {
                    seeds[hub.shard_of(&channel)].members.push((channel, user));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read presence back: returning users will be announced");
            }
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
    /// under its bound and, for a new message, the disk (or the cluster's
    /// Redis) is not too far behind. Reads, subscriptions and handshakes
    /// do not wait for them.
    fn has_room(&self, shard: usize, cmd: &Command) -> bool {
        self.shards[shard].len() < self.config.ingress_queue
            && (!cmd.is_message()
                || (self
                    .commit
                    .as_ref()
                    .is_none_or(|c| c.backlog() < self.config.store_backlog)
                    && self.cluster.as_ref().is_none_or(|c| c.has_room())))
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

    /// The shard that owns the conversation of a key made by
    /// `ConversationId::key`.
    pub(crate) fn shard_of_key(&self, key: &str) -> Option<usize> {
        match key.split_at_checked(1)? {
            ("#" | "@", name) if !name.is_empty() => Some(self.shard_of(name)),
            ("*", "") => Some(Hub::BROADCAST_SHARD),
            _ => None,
        }
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

    /// Whether the store keeps more of a conversation than its ring: a
    /// read that misses the ring goes there.
    pub(crate) fn keeps_history(&self) -> bool {
        self.commit.is_some() || self.cluster.is_some()
    }

    /// The epoch seqs belong to.
    pub(crate) fn epoch(&self) -> u64 {
        self.sequencer.epoch()
    }

    /// Closes every connection of `user` with `Close(Kicked)`, or with
    /// `Close(Revoked)` after refusing the user's tokens until
    /// `revoke_until_ms` (kept in the store first, so a revocation that
    /// was answered survives a restart). Answers how many connections it
    /// closed.
    pub(crate) async fn disconnect_user(
        self: &Arc<Self>,
        user: &str,
        revoke_until_ms: Option<u64>,
    ) -> Result<u32, StoreError> {
        let code = match revoke_until_ms {
            Some(until) => {
                let store = self.store.clone();
                let owned = user.to_owned();
                tokio::task::spawn_blocking(move || store.revoke(&owned, until))
                    .await
                    .map_err(|e| StoreError::Db(e.to_string()))??;
                // Set before the kick reaches the shard: a handshake the
                // shard admits after the kick sees it there.
                self.revocations.set(user, until, crate::clock::now_ms());
                ErrorCode::Revoked
            }
            None => ErrorCode::Kicked,
        };
        let (reply, closed) = tokio::sync::oneshot::channel();
        self.submit_now(
            self.shard_of(user),
            Command::Kick {
                user: user.into(),
                code,
                reply,
            },
        );
        Ok(closed.await.unwrap_or(0))
    }

    /// Until when `user`'s tokens are refused, if they are now.
    pub(crate) fn revoked_until(&self, user: &str) -> Option<u64> {
        self.revocations.until(user, crate::clock::now_ms())
    }
}

/// What a shard's loop starts from: the conversations it owns as the store
/// read them back, and the read positions in them.
#[derive(Debug, Default)]
pub(crate) struct Seed {
    pub(crate) conversations: Vec<RecoveredConversation>,
    pub(crate) acks: Vec<AckRecord>,
    /// Users online when the last run shut down.
    pub(crate) users: Vec<String>,
    /// (channel, user) memberships when the last run shut down.
    pub(crate) members: Vec<(String, String)>,
}
