//! The store of cluster mode: Redis holds each conversation's seq and
//! stream (written by the sequencing script), and what this reads back:
//! a conversation's last seq, a range of its messages for a resume or a
//! history page, revocations and server-side subscriptions. The rings of
//! the shards are caches of the streams.
//!
//! Reads are synchronous, on one connection per instance: the shards
//! read a conversation's last seq when it comes into memory, the rest
//! runs on tokio's blocking pool.
//!
//! With several instances, each conversation lives on one (`spread.rs`),
//! and what is not a conversation's (revocations, server-side
//! subscriptions, presence) on the first. Each instance holds an epoch of
//! its own; the node's is the newest of them.

use std::sync::Mutex;

use redis::{Commands, Connection};

use super::{keys, wire};
use crate::conversation::ConversationId;
use crate::retention::RetentionPolicy;
use crate::store::{Batch, Record, Recovered, Store, StoreError, SubscriptionChange};

/// Revocations: user -> until when (ms).
const REVOKED: &str = "apm:revoked";

fn subs_key(user: &str) -> String {
    format!("apm:subs:{{{user}}}")
}

/// Set while any user has a server-side subscription.
const SUBS_USED: &str = "apm:subs-used";

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Db(format!("redis: {e}"))
}

/// One Redis instance of the cluster.
struct Instance {
    client: redis::Client,
    /// `None` after a failure: made again by the next read.
    conn: Mutex<Option<Connection>>,
    epoch: u64,
}

/// Redis as the store of a cluster's node.
pub(crate) struct RedisStore {
    instances: Vec<Instance>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("instances", &self.instances.len())
            .field("epochs", &self.epochs())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the cluster's Redis instances (`urls`, comma-separated)
    /// and takes each one's epoch, setting it where this is the first node
    /// of an empty instance.
    pub(crate) fn open(urls: &str) -> Result<RedisStore, StoreError> {
        let urls: Vec<&str> = urls.split(',').map(str::trim).collect();
        let mut instances = Vec::with_capacity(urls.len());
        for url in urls {
            instances.push(Instance::open(url)?);
        }
        Ok(RedisStore { instances })
    }

    /// The instances' clients, for the node's asynchronous connections.
    pub(crate) fn clients(&self) -> Vec<redis::Client> {
        self.instances.iter().map(|i| i.client.clone()).collect()
    }

    /// Each instance's epoch, in order.
    pub(crate) fn epochs(&self) -> Vec<u64> {
        self.instances.iter().map(|i| i.epoch).collect()
    }

    /// The instance that holds `conversation`.
    fn of(&self, conversation: &ConversationId) -> usize {
        super::spread::instance_of(&conversation.key(), self.instances.len())
    }

    fn with_conn<T>(
        &self,
        instance: usize,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let instance = &self.instances[instance];
        let mut slot = instance.conn.lock().unwrap_or_else(|e| e.into_inner());
        let conn = match &mut *slot {
            Some(conn) => conn,
            None => slot.insert(instance.client.get_connection().map_err(redis_error)?),
        };
        let result = f(conn);
        if result
            .as_ref()
            .is_err_and(|e| e.is_io_error() || e.is_connection_dropped())
        {
            *slot = None;
        }
        result.map_err(redis_error)
    }
}

impl Instance {
    fn open(url: &str) -> Result<Instance, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Open {
            path: url.into(),
            why: e.to_string(),
        })?;
        let mut conn = client.get_connection().map_err(|e| StoreError::Open {
            path: url.into(),
            why: format!("cannot reach Redis: {e}"),
        })?;
        let now = crate::clock::now_ms();
        let _: Option<String> = redis::cmd("SET")
            .arg(keys::EPOCH)
            .arg(now)
            .arg("NX")
            .query(&mut conn)
            .map_err(redis_error)?;
        let epoch: u64 = conn.get(keys::EPOCH).map_err(redis_error)?;
        Ok(Instance {
            client,
            conn: Mutex::new(Some(conn)),
            epoch,
        })
    }
}

impl Store for RedisStore {
    fn is_durable(&self) -> bool {
        // Messages are written by the sequencing script, not by batches
        // from the group commit: there is nothing for it to write.
        false
    }

    fn epoch(&self) -> u64 {
        // An instance that lost its data has a newer epoch than it had:
        // so does the node, and clients start their positions over.
        self.epochs().into_iter().max().unwrap_or(0)
    }

    fn write(&self, _batch: &Batch, _keep: &RetentionPolicy) -> Result<(), StoreError> {
        Ok(())
    }

    fn expire(&self, _now_ms: u64, _keep: &RetentionPolicy) -> Result<(), StoreError> {
        Ok(())
    }

    fn recover(&self, _keep: &RetentionPolicy) -> Result<Recovered, StoreError> {
        // Conversations come into memory when used, from their last seq.
        Ok(Recovered::default())
    }

    fn read_range(
        &self,
        conversation: &ConversationId,
        from: u64,
        to: u64,
        keep: &RetentionPolicy,
    ) -> Result<Vec<Record>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let entries: redis::streams::StreamRangeReply =
            self.with_conn(self.of(conversation), |c| {
                c.xrange(
                    keys::log(conversation),
                    format!("0-{from}"),
                    format!("0-{to}"),
                )
            })?;
        // Streams are trimmed by count (their ids are seqs, not times): an
        // age limit applies to what is read.
        let max_age_ms = keep.for_conversation(conversation).max_age_ms;
        let oldest = match max_age_ms {
            0 => 0,
            age => crate::clock::now_ms().saturating_sub(age),
        };
        Ok(records(entries)
            .into_iter()
            .filter(|r| r.ts_ms >= oldest)
            .collect())
    }

    fn last(&self, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        // The stream's last id is `0-LAST`, kept even when trimmed empty.
        self.with_conn(self.of(conversation), |c| {
            let info: redis::RedisResult<redis::streams::StreamInfoStreamReply> =
                c.xinfo_stream(keys::log(conversation));
            match info {
                Ok(info) => Ok(info
                    .last_generated_id
                    .strip_prefix("0-")
                    .and_then(|seq| seq.parse().ok())),
                // No such stream: the conversation never had a message.
                Err(e) if e.code() == Some("ERR") => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn acked(&self, user: &str, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        self.with_conn(self.of(conversation), |c| {
            c.hget(keys::acks(conversation), user)
        })
    }

    fn revoke(&self, user: &str, until_ms: u64) -> Result<(), StoreError> {
        self.with_conn(0, |c| {
            if until_ms > crate::clock::now_ms() {
                c.hset(REVOKED, user, until_ms)
            } else {
                c.hdel(REVOKED, user)
            }
        })
    }

    fn revocations(&self, now_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let all: Vec<(String, u64)> = self.with_conn(0, |c| c.hgetall(REVOKED))?;
        Ok(all
            .into_iter()
            .filter(|(_, until)| *until > now_ms)
            .collect())
    }

    fn set_subscription(
        &self,
        user: &str,
        channel: &str,
        on: bool,
        max: usize,
    ) -> Result<SubscriptionChange, StoreError> {
        let key = subs_key(user);
        self.with_conn(0, |c| {
            if !on {
                let removed: usize = c.srem(&key, channel)?;
                return Ok(if removed > 0 {
                    SubscriptionChange::Removed
                } else {
                    SubscriptionChange::Unchanged
                });
            }
            if c.sismember(&key, channel)? {
                return Ok(SubscriptionChange::Unchanged);
            }
            let held: usize = c.scard(&key)?;
            if held >= max {
                return Ok(SubscriptionChange::Full);
            }
            let () = c.sadd(&key, channel)?;
            let () = c.set(SUBS_USED, 1)?;
            Ok(SubscriptionChange::Added)
        })
    }

    fn subscriptions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut channels: Vec<String> = self.with_conn(0, |c| c.smembers(subs_key(user)))?;
        channels.sort();
        Ok(channels)
    }

    fn has_subscriptions(&self) -> Result<bool, StoreError> {
        self.with_conn(0, |c| c.exists(SUBS_USED))
    }
}

/// Stream entries (`0-SEQ`, field `m`) as records; an entry that does not
/// read back is skipped, and shows as a gap.
pub(super) fn records(entries: redis::streams::StreamRangeReply) -> Vec<Record> {
    entries
        .ids
        .iter()
        .filter_map(|entry| {
            let seq = entry.id.strip_prefix("0-")?.parse().ok()?;
            let body: Vec<u8> = entry.get("m")?;
            wire::record(seq, &body)
        })
        .collect()
}
