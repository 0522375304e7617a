//! The client message ids a conversation saw recently, so a publisher that
//! retries after a lost receipt (same sender, same `msg_id`) gets the
//! first copy's receipt instead of a second copy.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::fast_map::HashMap;

/// (sender's hash, msg_id): the sender itself is checked on a hit, so a
/// hash collision can only make a retry count as new, never drop a message.
type Key = (u64, u64);

/// Where a message went the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct First {
    pub(crate) seq: u64,
    pub(crate) ts_ms: u64,
}

/// The last `capacity` (sender, msg_id) pairs of one conversation.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    order: VecDeque<Key>,
    seen: HashMap<Key, (Arc<str>, First)>,
}

/// A sender's hash for [`Recent`]: computed once per message, used for
/// both the look-up and the insert.
pub(crate) fn sender_hash(sender: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(sender)
}

impl Recent {
    /// The first copy of `msg_id` from `sender` (whose [`sender_hash`] is
    /// `hash`), if it is recent.
    pub(crate) fn get(&self, sender: &str, hash: u64, msg_id: u64) -> Option<First> {
        if msg_id == 0 {
            return None;
        }
        match self.seen.get(&(hash, msg_id)) {
            Some((s, first)) if **s == *sender => Some(*first),
            _ => None,
        }
    }

    /// Remembers a message just sequenced, forgetting the oldest past
    /// `capacity`.
    pub(crate) fn insert(
        &mut self,
        sender: &Arc<str>,
        hash: u64,
        msg_id: u64,
        first: First,
        capacity: usize,
    ) {
        if msg_id == 0 || capacity == 0 {
            return;
        }
        let key = (hash, msg_id);
        if self.seen.insert(key, (sender.clone(), first)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(seq: u64) -> First {
        First { seq, ts_ms: seq }
    }

    #[test]
    fn remembers_per_sender_within_capacity() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let (ha, hb, hc) = (sender_hash("a"), sender_hash("b"), sender_hash("c"));
        let mut r = Recent::default();
        r.insert(&a, ha, 7, first(1), 2);
        r.insert(&b, hb, 7, first(2), 2);
        assert_eq!(r.get("a", ha, 7), Some(first(1)));
        assert_eq!(r.get("b", hb, 7), Some(first(2)));
        assert_eq!(r.get("c", hc, 7), None);
        assert_eq!(r.get("a", ha, 0), None);
        // A colliding hash with another sender is not a hit.
        assert_eq!(r.get("c", ha, 7), None);
        r.insert(&a, ha, 8, first(3), 2);
        assert_eq!(r.get("a", ha, 7), None, "the oldest is forgotten");
        assert_eq!(r.get("a", ha, 8), Some(first(3)));
        r.insert(&a, ha, 0, first(4), 2);
        assert_eq!(r.get("a", ha, 0), None, "0 is no id");
    }
}
