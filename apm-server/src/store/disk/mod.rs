//! The durable store: an embedded redb database in the data directory.
//!
//! Tables: `messages` maps (conversation key, first seq) to a row holding
//! that conversation's messages from one batch (their seqs, server times
//! and encoded `Deliver` frames); `heads` maps a conversation key to its
//! last seq (kept even when retention has dropped every message, so seqs
//! never restart); `acks` maps (user, conversation key) to a read
//! position; `meta` holds the epoch. Every write is one transaction
//! committed with an fsync, so a batch is on disk whole or not at all.
//!
//! One row per conversation and batch, not per message: a batch of a few
//! hundred messages over ten channels touched ~90 B-tree pages (and as
//! many `pwrite`s) per commit with a row per message; retention then drops
//! whole rows, and reads skip the messages of a row that are past it.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::row;
use super::{
    AckRecord, Batch, ConversationId, Record, Recovered, RecoveredConversation, Store, StoreError,
    SubscriptionChange,
};
use crate::retention::{Retention, RetentionPolicy};

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
const ACKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("acks");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// User → until when (ms since the Unix epoch) their tokens are refused.
/// Added without a schema change: an older build ignores the table.
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");
/// Who was online when the last run shut down: `u\0USER` and
/// `m\0CHANNEL\0USER` (names hold no NUL). Taken back, and emptied, at
/// the next start.
const PRESENCE: TableDefinition<&str, u64> = TableDefinition::new("presence");

/// The layout of the tables, recorded in `meta` as `schema`: a build
/// refuses a file with another one rather than misread it. Bump it with
/// any change to the tables or the row format.
const SCHEMA: u64 = 1;

/// The database file inside the data directory.
const FILE_NAME: &str = "apm.redb";

fn db_error(e: impl Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Messages and read positions in a redb file, fsync'd per batch.
#[derive(Debug)]
pub struct DiskStore {
    path: PathBuf,
    /// `None` after a failure: redb refuses every operation after an I/O
    /// error until the database is opened again, so the next operation
    /// reopens it (after a full disk is cleared, say).
    db: Mutex<Option<Arc<Database>>>,
    epoch: u64,
}

impl DiskStore {
    /// Opens (or makes) the store in `dir`.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| {
            let why = match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "it is open in another process (another apm-server on the same data \
                     directory?)"
                        .to_owned()
                }
                other => other.to_string(),
            };
            StoreError::Open { path, why }
        })?;
        let txn = db.begin_write().map_err(db_error)?;
        let epoch = {
            // Made here, so readers never meet a missing table.
            txn.open_table(MESSAGES).map_err(db_error)?;
            txn.open_table(HEADS).map_err(db_error)?;
            txn.open_table(ACKS).map_err(db_error)?;
            txn.open_table(REVOKED).map_err(db_error)?;
            txn.open_table(PRESENCE).map_err(db_error)?;
            let mut meta = txn.open_table(META).map_err(db_error)?;
            // A file from before the version was recorded has this layout.
            let schema = meta.get("schema").map_err(db_error)?.map(|v| v.value());
            match schema {
                Some(SCHEMA) => {}
                None => {
                    meta.insert("schema", SCHEMA).map_err(db_error)?;
                }
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: dir.join(FILE_NAME),
                        found,
                        supported: SCHEMA,
                    });
                }
            }
            let stored = meta.get("epoch").map_err(db_error)?.map(|v| v.value());
            match stored {
                Some(epoch) => epoch,
                None => {
                    let epoch = crate::clock::now_ms();
                    meta.insert("epoch", epoch).map_err(db_error)?;
                    epoch
                }
            }
        };
        txn.commit().map_err(db_error)?;
        Ok(DiskStore {
            path: dir.join(FILE_NAME),
            db: Mutex::new(Some(Arc::new(db))),
            epoch,
        })
    }

    /// Runs `f` on the database, opening it again first if the last
    /// operation failed.
    /// Runs `f` on the database, opening it again if an earlier call
    /// failed. The lock is held only to take the handle, so a read from a
    /// loop does not wait behind a batch's fsync.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = {
            let mut slot = self.db.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(db) => db.clone(),
                None => {
                    let db = Arc::new(Database::create(&self.path).map_err(db_error)?);
                    *slot = Some(db.clone());
                    db
                }
            }
        };
        let result = f(&db);
        if result.is_err() {
            let mut slot = self.db.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_some_and(|d| Arc::ptr_eq(d, &db)) {
                *slot = None;
            }
        }
        result
    }
}

impl Store for DiskStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn write(&self, batch: &Batch, keep: &RetentionPolicy) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_db(|db| write(db, batch, keep))
    }

    fn expire(&self, now_ms: u64, keep: &RetentionPolicy) -> Result<(), StoreError> {
        self.with_db(|db| expire(db, now_ms, keep))
    }

    fn recover(&self, keep: &RetentionPolicy) -> Result<Recovered, StoreError> {
        self.with_db(|db| recover(db, keep))
    }

    fn read_range(
        &self,
        conversation: &ConversationId,
        from: u64,
        to: u64,
        keep: &RetentionPolicy,
    ) -> Result<Vec<Record>, StoreError> {
        self.with_db(|db| read_range(db, conversation, from, to, keep))
    }

    fn last(&self, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        let key = conversation.key();
        self.with_db(|db| {
            let txn = db.begin_read().map_err(db_error)?;
            let heads = txn.open_table(HEADS).map_err(db_error)?;
            Ok(heads
                .get(key.as_str())
                .map_err(db_error)?
                .map(|v| v.value()))
        })
    }

    fn acked(&self, user: &str, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        let key = conversation.key();
        self.with_db(|db| {
            let txn = db.begin_read().map_err(db_error)?;
            let acks = txn.open_table(ACKS).map_err(db_error)?;
            Ok(acks
                .get((user, key.as_str()))
                .map_err(db_error)?
                .map(|v| v.value()))
        })
    }

    fn revoke(&self, user: &str, until_ms: u64) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(db_error)?;
            {
                let mut revoked = txn.open_table(REVOKED).map_err(db_error)?;
                let now = crate::clock::now_ms();
                // Ended revocations go with the next write, so the table
                // holds only running ones.
                revoked.retain(|_, until| until > now).map_err(db_error)?;
                if until_ms > now {
                    revoked.insert(user, until_ms).map_err(db_error)?;
                } else {
                    revoked.remove(user).map_err(db_error)?;
                }
            }
            txn.commit().map_err(db_error)
        })
    }

    fn save_presence(
        &self,
        users: &[String],
        members: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(db_error)?;
            {
                let mut table = txn.open_table(PRESENCE).map_err(db_error)?;
                for user in users {
                    table
                        .insert(format!("u\0{user}").as_str(), 0)
                        .map_err(db_error)?;
                }
                for (channel, user) in members {
                    table
                        .insert(format!("m\0{channel}\0{user}").as_str(), 0)
                        .map_err(db_error)?;
                }
            }
            txn.commit().map_err(db_error)
        })
    }

    fn take_presence(&self) -> Result<(Vec<String>, Vec<(String, String)>), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(db_error)?;
            let (mut users, mut members) = (Vec::new(), Vec::new());
            {
                let mut table = txn.open_table(PRESENCE).map_err(db_error)?;
                for row in table.iter().map_err(db_error)? {
                    let (key, _) = row.map_err(db_error)?;
                    let key = key.value();
                    match key.split('\0').collect::<Vec<_>>()[..] {
                        ["u", user] => users.push(user.to_owned()),
                        ["m", channel, user] => members.push((channel.to_owned(), user.to_owned())),
                        _ => return Err(StoreError::Corrupt(format!("presence row {key:?}"))),
                    }
                }
                table.retain(|_, _| false).map_err(db_error)?;
            }
            txn.commit().map_err(db_error)?;
            Ok((users, members))
        })
    }

    fn set_subscription(
        &self,
        user: &str,
        channel: &str,
        on: bool,
        max: usize,
    ) -> Result<SubscriptionChange, StoreError> {
        self.with_db(|db| subscriptions::set(db, user, channel, on, max))
    }

    fn subscriptions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.with_db(|db| subscriptions::of_user(db, user))
    }

    fn has_subscriptions(&self) -> Result<bool, StoreError> {
        self.with_db(subscriptions::any)
    }

    fn revocations(&self, now_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(db_error)?;
            let revoked = txn.open_table(REVOKED).map_err(db_error)?;
            let mut running = Vec::new();
            for row in revoked.iter().map_err(db_error)? {
                let (user, until) = row.map_err(db_error)?;
                if until.value() > now_ms {
                    running.push((user.value().to_owned(), until.value()));
                }
            }
            Ok(running)
        })
    }
}

fn write(db: &Database, batch: &Batch, policy: &RetentionPolicy) -> Result<(), StoreError> {
    // One chunk per conversation: the batch's messages of a conversation
    // are consecutive seqs (one loop sequences them, the writer keeps their
    // order), stored as one row keyed by the first.
    let mut order: Vec<(String, Vec<&Record>)> = Vec::new();
    let mut index: HashMap<&ConversationId, usize> = HashMap::new();
    for r in &batch.messages {
        let i = *index.entry(&r.conversation).or_insert_with(|| {
            order.push((r.conversation.key(), Vec::new()));
            order.len() - 1
        });
        order[i].1.push(r);
    }
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut messages = txn.open_table(MESSAGES).map_err(db_error)?;
        let mut heads = txn.open_table(HEADS).map_err(db_error)?;
        let mut value = Vec::new();
        for (key, records) in &order {
            let key = key.as_str();
            let first = records.iter().map(|r| r.seq).min().unwrap_or(0);
            let keep = records
                .first()
                .map_or(policy.default, |r| policy.for_conversation(&r.conversation));
            let last = row::encode(records, &mut value);
            messages
                .insert((key, first), value.as_slice())
                .map_err(db_error)?;
            heads.insert(key, last).map_err(db_error)?;
            // Rows whose every message is past the count limit.
            let cut = last.saturating_sub(keep.max_messages as u64);
            if cut > 0 {
                messages
                    .retain_in((key, 0)..=(key, cut), |_, v| {
                        row::last(v).is_none_or(|l| l > cut)
                    })
                    .map_err(db_error)?;
            }
        }
        let mut acks = txn.open_table(ACKS).map_err(db_error)?;
        for a in &batch.acks {
            let key = a.conversation.key();
            let k = (&*a.user, key.as_str());
            // A position never moves back, even when the loop that sent it
            // had forgotten the stored one.
            let stored = acks.get(k).map_err(db_error)?.map_or(0, |v| v.value());
            if a.seq > stored {
                acks.insert(k, a.seq).map_err(db_error)?;
            }
        }
    }
    txn.commit().map_err(db_error)
}

fn expire(db: &Database, now_ms: u64, policy: &RetentionPolicy) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let heads = txn.open_table(HEADS).map_err(db_error)?;
        let keys: Vec<String> = heads
            .iter()
            .map_err(db_error)?
            .map(|e| e.map(|(k, _)| k.value().to_owned()).map_err(db_error))
            .collect::<Result<_, _>>()?;
        let mut messages = txn.open_table(MESSAGES).map_err(db_error)?;
        for key in keys {
            let key = key.as_str();
            let Some(conversation) = ConversationId::from_key(key) else {
                continue;
            };
            let max_age = policy.for_conversation(&conversation).max_age_ms;
            if max_age == 0 {
                continue;
            }
            let cutoff_ms = now_ms.saturating_sub(max_age);
            // Rows go whole, oldest first, once their newest message is
            // past the cutoff; reads drop older messages of the rest.
            let mut cut = None;
            for entry in messages
                .range((key, 0)..=(key, u64::MAX))
                .map_err(db_error)?
            {
                let (k, v) = entry.map_err(db_error)?;
                if row::newest_ts(v.value()).is_none_or(|ts| ts >= cutoff_ms) {
                    break;
                }
                cut = Some(k.value().1);
            }
            if let Some(cut) = cut {
                messages
                    .retain_in((key, 0)..=(key, cut), |_, _| false)
                    .map_err(db_error)?;
            }
        }
    }
    txn.commit().map_err(db_error)
}

/// The oldest server time retention `keep` allows as of `now` (0: any).
fn cutoff(keep: Retention, now: u64) -> u64 {
    match keep.max_age_ms {
        0 => 0,
        age => now.saturating_sub(age),
    }
}

/// `conversation`'s stored messages with `lo <= seq <= hi` and a server
/// time from `cutoff` on, oldest first. Rows are keyed by their first seq:
/// the newest rows are read back to the one holding `lo`.
fn read_rows(
    messages: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    conversation: &ConversationId,
    key: &str,
    lo: u64,
    hi: u64,
    cutoff: u64,
) -> Result<Vec<Record>, StoreError> {
    let mut rows = Vec::new();
    for entry in messages
        .range((key, 0)..=(key, hi))
        .map_err(db_error)?
        .rev()
    {
        let (k, v) = entry.map_err(db_error)?;
        rows.push(Bytes::copy_from_slice(v.value()));
        if k.value().1 <= lo {
            break;
        }
    }
    let mut kept = Vec::new();
    for row in rows.iter().rev() {
        for entry in row::entries(row) {
            let (seq, ts_ms, frame) = entry?;
            if seq >= lo && seq <= hi && ts_ms >= cutoff {
                kept.push(Record {
                    conversation: conversation.clone(),
                    seq,
                    ts_ms,
                    frame,
                });
            }
        }
    }
    kept.sort_by_key(|r| r.seq);
    kept.dedup_by_key(|r| r.seq);
    Ok(kept)
}

fn read_range(
    db: &Database,
    conversation: &ConversationId,
    from: u64,
    to: u64,
    policy: &RetentionPolicy,
) -> Result<Vec<Record>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let key = conversation.key();
    let Some(last) = txn
        .open_table(HEADS)
        .map_err(db_error)?
        .get(key.as_str())
        .map_err(db_error)?
        .map(|v| v.value())
    else {
        return Ok(Vec::new());
    };
    let keep = policy.for_conversation(conversation);
    if keep.max_messages == 0 {
        return Ok(Vec::new());
    }
    let lo = from.max(last.saturating_sub(keep.max_messages as u64) + 1);
    let hi = to.min(last);
    if lo > hi {
        return Ok(Vec::new());
    }
    let messages = txn.open_table(MESSAGES).map_err(db_error)?;
    let cutoff = cutoff(keep, crate::clock::now_ms());
    read_rows(&messages, conversation, &key, lo, hi, cutoff)
}

fn recover(db: &Database, policy: &RetentionPolicy) -> Result<Recovered, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let heads = txn.open_table(HEADS).map_err(db_error)?;
    let messages = txn.open_table(MESSAGES).map_err(db_error)?;
    let now = crate::clock::now_ms();
    let mut out = Recovered::default();
    for head in heads.iter().map_err(db_error)? {
        let (key, last) = head.map_err(db_error)?;
        let key = key.value();
        let last = last.value();
        let conversation = ConversationId::from_key(key)
            .ok_or_else(|| StoreError::Corrupt(format!("conversation key {key:?}")))?;
        let keep: Retention = policy.for_conversation(&conversation);
        let lo = last.saturating_sub(keep.max_messages as u64) + 1;
        let kept = if keep.max_messages > 0 {
            read_rows(&messages, &conversation, key, lo, last, cutoff(keep, now))?
        } else {
            Vec::new()
        };
        out.conversations.push(RecoveredConversation {
            conversation,
            last,
            messages: kept,
        });
    }
    let acks = txn.open_table(ACKS).map_err(db_error)?;
    for entry in acks.iter().map_err(db_error)? {
        let (k, seq) = entry.map_err(db_error)?;
        let (user, key) = k.value();
        let conversation = ConversationId::from_key(key)
            .ok_or_else(|| StoreError::Corrupt(format!("conversation key {key:?}")))?;
        out.acks.push(AckRecord {
            user: user.into(),
            conversation,
            seq: seq.value(),
        });
    }
    Ok(out)
}

mod subscriptions;
#[cfg(test)]
mod tests;
