//! A durable store for unit tests: it keeps every batch it is given in
//! memory, and can be told to fail its next writes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Batch, ConversationId, Record, Recovered, Store, StoreError};
use crate::retention::RetentionPolicy;

/// Keeps what it is given; fails the next `fail` writes first.
#[derive(Debug, Default)]
pub(crate) struct RecordingStore {
    /// Writes still to fail.
    pub(crate) fail: AtomicUsize,
    batches: Mutex<Vec<Batch>>,
}

impl RecordingStore {
    /// A store whose next `n` writes fail.
    pub(crate) fn failing(n: usize) -> RecordingStore {
        RecordingStore {
            fail: AtomicUsize::new(n),
            ..RecordingStore::default()
        }
    }

    /// The seqs of every message written, in order.
    pub(crate) fn seqs(&self) -> Vec<u64> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .iter()
            .flat_map(|b| b.messages.iter().map(|r| r.seq))
            .collect()
    }
}

impl Store for RecordingStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn epoch(&self) -> u64 {
        1
    }

    fn write(&self, batch: &Batch, _keep: &RetentionPolicy) -> Result<(), StoreError> {
        if self
            .fail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Db("disk full".into()));
        }
        let copy = Batch {
            messages: batch.messages.clone(),
            acks: batch.acks.clone(),
        };
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(copy);
        Ok(())
    }

    fn expire(&self, _now_ms: u64, _keep: &RetentionPolicy) -> Result<(), StoreError> {
        Ok(())
    }

    fn recover(&self, _keep: &RetentionPolicy) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }

    fn read_range(
        &self,
        conversation: &ConversationId,
        from: u64,
        to: u64,
        _keep: &RetentionPolicy,
    ) -> Result<Vec<Record>, StoreError> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        Ok(batches
            .iter()
            .flat_map(|b| b.messages.iter())
            .filter(|r| &r.conversation == conversation && (from..=to).contains(&r.seq))
            .cloned()
            .collect())
    }

    fn last(&self, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        Ok(batches
            .iter()
            .flat_map(|b| b.messages.iter())
            .filter(|r| &r.conversation == conversation)
            .map(|r| r.seq)
            .max())
    }

    fn acked(&self, user: &str, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        Ok(batches
            .iter()
            .flat_map(|b| b.acks.iter())
            .filter(|a| &*a.user == user && &a.conversation == conversation)
            .map(|a| a.seq)
            .max())
    }
}
