//! The store that keeps nothing beyond the forwarding loops' rings.

use super::{Batch, ConversationId, Record, Recovered, Store, StoreError};
use crate::retention::RetentionPolicy;

/// No persistence: history lives in the shards' rings for the life of the
/// process, and each start is a new epoch.
#[derive(Debug)]
pub struct MemoryStore {
    epoch: u64,
    /// Revocations, for the life of the process.
    revoked: std::sync::Mutex<Vec<(String, u64)>>,
}

impl MemoryStore {
    /// A store whose epoch is the time it was made.
    pub fn new() -> MemoryStore {
        MemoryStore {
            epoch: crate::clock::now_ms(),
            revoked: Default::default(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Store for MemoryStore {
    fn is_durable(&self) -> bool {
        false
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn write(&self, _batch: &Batch, _keep: &RetentionPolicy) -> Result<(), StoreError> {
        // The rings are the only copy; nothing outlives the process.
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
        _conversation: &ConversationId,
        _from: u64,
        _to: u64,
        _keep: &RetentionPolicy,
    ) -> Result<Vec<Record>, StoreError> {
        // Nothing outlives the rings, so a miss there is a miss here.
        Ok(Vec::new())
    }

    fn last(&self, _conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    fn acked(
        &self,
        _user: &str,
        _conversation: &ConversationId,
    ) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    fn revoke(&self, user: &str, until_ms: u64) -> Result<(), StoreError> {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|(u, _)| u != user);
        revoked.push((user.to_owned(), until_ms));
        Ok(())
    }

    fn revocations(&self, now_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        Ok(revoked
            .iter()
            .filter(|(_, until)| *until > now_ms)
            .cloned()
            .collect())
    }
}
