//! The store that keeps nothing beyond the forwarding loops' rings.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::{Batch, ConversationId, Record, Recovered, Store, StoreError, SubscriptionChange};
use crate::retention::RetentionPolicy;

/// No persistence: history lives in the shards' rings for the life of the
/// process, and each start is a new epoch.
#[derive(Debug)]
pub struct MemoryStore {
    epoch: u64,
    /// Revocations, for the life of the process.
    revoked: Mutex<Vec<(String, u64)>>,
    /// Server-side subscriptions by user, for the life of the process.
    subscriptions: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl MemoryStore {
    /// A store whose epoch is the time it was made.
    pub fn new() -> MemoryStore {
        MemoryStore {
            epoch: crate::clock::now_ms(),
            revoked: Default::default(),
            subscriptions: Default::default(),
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

    fn set_subscription(
        &self,
        user: &str,
        channel: &str,
        on: bool,
        max: usize,
    ) -> Result<SubscriptionChange, StoreError> {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        if !on {
            let Some(held) = subs.get_mut(user) else {
                return Ok(SubscriptionChange::Unchanged);
            };
            let removed = held.remove(channel);
            if held.is_empty() {
                subs.remove(user);
            }
            return Ok(if removed {
                SubscriptionChange::Removed
            } else {
                SubscriptionChange::Unchanged
            });
        }
        let held = subs.entry(user.to_owned()).or_default();
        Ok(if held.contains(channel) {
            SubscriptionChange::Unchanged
        } else if held.len() >= max {
            if held.is_empty() {
                subs.remove(user);
            }
            SubscriptionChange::Full
        } else {
            held.insert(channel.to_owned());
            SubscriptionChange::Added
        })
    }

    fn subscriptions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(subs
            .get(user)
            .map_or_else(Vec::new, |held| held.iter().cloned().collect()))
    }

    fn has_subscriptions(&self) -> Result<bool, StoreError> {
        let subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(!subs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_subscriptions_are_kept_per_user_and_bounded() {
        let store = MemoryStore::new();
        assert!(!store.has_subscriptions().unwrap());
        let set = |user, channel, on| store.set_subscription(user, channel, on, 1).unwrap();
        assert_eq!(set("ann", "a", true), SubscriptionChange::Added);
        assert_eq!(set("ann", "b", true), SubscriptionChange::Full);
        assert_eq!(set("ann", "a", true), SubscriptionChange::Unchanged);
        assert_eq!(store.subscriptions("ann").unwrap(), ["a"]);
        assert_eq!(set("ann", "a", false), SubscriptionChange::Removed);
        assert_eq!(set("ann", "a", false), SubscriptionChange::Unchanged);
        assert!(!store.has_subscriptions().unwrap());
    }
}
