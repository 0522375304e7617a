//! The durable store: an embedded redb database in the data directory.
//!
//! Tables: `messages` maps (conversation key, seq) to the server time and
//! the encoded `Deliver` frame; `heads` maps a conversation key to its last
//! seq (kept even when retention has dropped every message, so seqs never
//! restart); `acks` maps (user, conversation key) to a read position;
//! `meta` holds the epoch. Every write is one transaction committed with
//! an fsync, so a batch is on disk whole or not at all.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    AckRecord, Batch, ConversationId, Record, Recovered, RecoveredConversation, Store, StoreError,
};
use crate::history::Retention;

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
const ACKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("acks");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The database file inside the data directory.
const FILE_NAME: &str = "apm.redb";

/// Bytes of server time before the frame in a `messages` value.
const TS_LEN: usize = 8;

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
    db: Mutex<Option<Database>>,
    epoch: u64,
}

impl DiskStore {
    /// Opens (or makes) the store in `dir`.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let db = Database::create(dir.join(FILE_NAME)).map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        let epoch = {
            // Made here, so readers never meet a missing table.
            txn.open_table(MESSAGES).map_err(db_error)?;
            txn.open_table(HEADS).map_err(db_error)?;
            txn.open_table(ACKS).map_err(db_error)?;
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let stored = meta.get("epoch").map_err(db_error)?.map(|v| v.value());
            match stored {
                Some(epoch) => epoch,
                None => {
                    let epoch = crate::shard::now_ms();
                    meta.insert("epoch", epoch).map_err(db_error)?;
                    epoch
                }
            }
        };
        txn.commit().map_err(db_error)?;
        Ok(DiskStore {
            path: dir.join(FILE_NAME),
            db: Mutex::new(Some(db)),
            epoch,
        })
    }

    /// Runs `f` on the database, opening it again first if the last
    /// operation failed.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            *db = Some(Database::create(&self.path).map_err(db_error)?);
        }
        let result = f(db.as_ref().expect("opened above"));
        if result.is_err() {
            *db = None;
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

    fn write(&self, batch: &Batch, keep: Retention) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_db(|db| write(db, batch, keep))
    }

    fn expire(&self, cutoff_ms: u64) -> Result<(), StoreError> {
        self.with_db(|db| expire(db, cutoff_ms))
    }

    fn recover(&self, keep: Retention) -> Result<Recovered, StoreError> {
        self.with_db(|db| recover(db, keep))
    }
}

fn write(db: &Database, batch: &Batch, keep: Retention) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut messages = txn.open_table(MESSAGES).map_err(db_error)?;
        let mut heads = txn.open_table(HEADS).map_err(db_error)?;
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut value = Vec::new();
        for r in &batch.messages {
            let key = r.conversation.key();
            value.clear();
            value.extend_from_slice(&r.ts_ms.to_be_bytes());
            value.extend_from_slice(&r.frame);
            messages
                .insert((key.as_str(), r.seq), value.as_slice())
                .map_err(db_error)?;
            let head = last.entry(key).or_default();
            *head = (*head).max(r.seq);
        }
        for (key, seq) in &last {
            heads.insert(key.as_str(), *seq).map_err(db_error)?;
            // Everything at or below `cut` is past the count limit.
            let cut = seq.saturating_sub(keep.max_messages as u64);
            if cut > 0 {
                messages
                    .retain_in((key.as_str(), 0)..=(key.as_str(), cut), |_, _| false)
                    .map_err(db_error)?;
            }
        }
        let mut acks = txn.open_table(ACKS).map_err(db_error)?;
        for a in &batch.acks {
            let key = a.conversation.key();
            acks.insert((&*a.user, key.as_str()), a.seq)
                .map_err(db_error)?;
        }
    }
    txn.commit().map_err(db_error)
}

fn expire(db: &Database, cutoff_ms: u64) -> Result<(), StoreError> {
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
            let range = (key.as_str(), 0)..=(key.as_str(), u64::MAX);
            let mut cut = None;
            for entry in messages.range(range.clone()).map_err(db_error)? {
                let (k, v) = entry.map_err(db_error)?;
                if ts_of(v.value())? >= cutoff_ms {
                    break;
                }
                cut = Some(k.value().1);
            }
            if let Some(cut) = cut {
                messages
                    .retain_in((key.as_str(), 0)..=(key.as_str(), cut), |_, _| false)
                    .map_err(db_error)?;
            }
        }
    }
    txn.commit().map_err(db_error)
}

fn recover(db: &Database, keep: Retention) -> Result<Recovered, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let heads = txn.open_table(HEADS).map_err(db_error)?;
    let messages = txn.open_table(MESSAGES).map_err(db_error)?;
    let cutoff = match keep.max_age_ms {
        0 => 0,
        age => crate::shard::now_ms().saturating_sub(age),
    };
    let mut out = Recovered::default();
    for head in heads.iter().map_err(db_error)? {
        let (key, last) = head.map_err(db_error)?;
        let key = key.value();
        let last = last.value();
        let conversation = ConversationId::from_key(key)
            .ok_or_else(|| StoreError::Corrupt(format!("conversation key {key:?}")))?;
        let mut kept = Vec::new();
        if keep.max_messages > 0 {
            let first = last.saturating_sub(keep.max_messages as u64) + 1;
            for entry in messages
                .range((key, first)..=(key, last))
                .map_err(db_error)?
            {
                let (k, v) = entry.map_err(db_error)?;
                let v = v.value();
                let ts_ms = ts_of(v)?;
                if ts_ms < cutoff {
                    continue;
                }
                kept.push(Record {
                    conversation: conversation.clone(),
                    seq: k.value().1,
                    ts_ms,
                    frame: Bytes::copy_from_slice(&v[TS_LEN..]),
                });
            }
        }
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

fn ts_of(value: &[u8]) -> Result<u64, StoreError> {
    let ts: [u8; TS_LEN] = value
        .get(..TS_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("message value shorter than its timestamp".into()))?;
    Ok(u64::from_be_bytes(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(channel: &str, seq: u64, ts_ms: u64) -> Record {
        Record {
            conversation: ConversationId::Channel(Arc::from(channel)),
            seq,
            ts_ms,
            frame: Bytes::from(format!("frame {channel} {seq}")),
        }
    }

    const KEEP: Retention = Retention {
        max_messages: 3,
        max_age_ms: 0,
    };

    #[test]
    fn survives_reopening_with_heads_and_acks() {
        let dir = tempfile::tempdir().unwrap();
        let epoch;
        {
            let store = DiskStore::open(dir.path()).unwrap();
            epoch = store.epoch();
            let mut batch = Batch::default();
            for seq in 1..=5 {
                batch.messages.push(record("a", seq, 100 + seq));
            }
            batch.messages.push(record("b", 1, 100));
            batch.acks.push(AckRecord {
                user: Arc::from("alice"),
                conversation: ConversationId::Channel(Arc::from("a")),
                seq: 4,
            });
            store.write(&batch, KEEP).unwrap();
        }
        let store = DiskStore::open(dir.path()).unwrap();
        assert_eq!(store.epoch(), epoch);
        let rec = store.recover(KEEP).unwrap();
        let a = rec
            .conversations
            .iter()
            .find(|c| c.conversation == ConversationId::Channel(Arc::from("a")))
            .unwrap();
        assert_eq!(a.last, 5);
        let seqs: Vec<u64> = a.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(&a.messages[2].frame[..], b"frame a 5");
        assert_eq!(a.messages[2].ts_ms, 105);
        assert_eq!(rec.acks.len(), 1);
        assert_eq!(rec.acks[0].seq, 4);
    }

    #[test]
    fn expiry_keeps_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        for seq in 1..=3 {
            batch.messages.push(record("a", seq, seq * 10));
        }
        store.write(&batch, KEEP).unwrap();
        store.expire(25).unwrap();
        let rec = store.recover(KEEP).unwrap();
        assert_eq!(rec.conversations[0].last, 3);
        assert_eq!(rec.conversations[0].messages.len(), 1);
        store.expire(u64::MAX).unwrap();
        let rec = store.recover(KEEP).unwrap();
        assert_eq!(rec.conversations[0].last, 3);
        assert!(rec.conversations[0].messages.is_empty());
    }
}
