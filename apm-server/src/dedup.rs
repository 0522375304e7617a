//! The client message ids a conversation saw recently, so a publisher that
//! retries after a lost receipt (same sender, same `msg_id`) gets the
//! first copy's receipt instead of a second copy.
//!
//! Kept per sender: each sender's last [`Window::per_sender`] ids, and
//! every id younger than [`Window::keep_ms`], whichever holds more. A busy
//! room cannot push a quiet sender's ids out, so a client that was away
//! for a while and sends what it queued is still recognised.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use indexmap::IndexMap;

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

/// How much a conversation remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Ids each sender keeps whatever their age.
    pub(crate) per_sender: usize,
    /// Ids younger than this (milliseconds) are kept whatever their number.
    pub(crate) keep_ms: u64,
    /// Ids one conversation holds at most, all senders together: past it,
    /// the sender at hand keeps only its last `per_sender`, however young.
    pub(crate) max_entries: usize,
}

/// The recent (sender, msg_id) pairs of one conversation.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    seen: HashMap<Key, (Arc<str>, First)>,
    /// Each sender's ids with their time, oldest first; the sweep walks
    /// these so a sender that went quiet loses its old ids too.
    senders: IndexMap<u64, VecDeque<(u64, u64)>, foldhash::fast::RandomState>,
    /// The next sender the sweep looks at.
    sweep: usize,
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

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Remembers a message just sequenced (at `first.ts_ms`, which is now),
    /// then forgets what the window no longer holds: of this sender, and
    /// of one other sender, so quiet senders are trimmed as the
    /// conversation goes on.
    pub(crate) fn insert(
        &mut self,
        sender: &Arc<str>,
        hash: u64,
        msg_id: u64,
        first: First,
        window: Window,
    ) {
        if msg_id == 0 || window.per_sender == 0 {
            return;
        }
        let key = (hash, msg_id);
        if self.seen.insert(key, (sender.clone(), first)).is_some() {
            // Reused id: the newer copy answers retries from now on; its
            // entry in the sender's list stays where it was.
            return;
        }
        let now = first.ts_ms;
        let crowded = self.seen.len() > window.max_entries;
        let ids = self.senders.entry(hash).or_default();
        ids.push_back((msg_id, now));
        trim(&mut self.seen, hash, ids, window, now, crowded);
        if self.senders.len() > 1 {
            self.sweep = (self.sweep + 1) % self.senders.len();
            if let Some((&other, ids)) = self.senders.get_index_mut(self.sweep)
                && other != hash
            {
                trim(&mut self.seen, other, ids, window, now, false);
                if ids.is_empty() {
                    self.senders.swap_remove_index(self.sweep);
                }
            }
        }
    }
}

/// Drops a sender's oldest ids beyond `per_sender` that are older than
/// `keep_ms` (or, when the conversation is `crowded`, whatever their age).
fn trim(
    seen: &mut HashMap<Key, (Arc<str>, First)>,
    hash: u64,
    ids: &mut VecDeque<(u64, u64)>,
    window: Window,
    now: u64,
    crowded: bool,
) {
    while ids.len() > window.per_sender {
        let &(msg_id, at) = ids.front().expect("longer than per_sender");
        if !crowded && at.saturating_add(window.keep_ms) > now {
            break;
        }
        ids.pop_front();
        seen.remove(&(hash, msg_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(seq: u64, ts_ms: u64) -> First {
        First { seq, ts_ms }
    }

    const WINDOW: Window = Window {
        per_sender: 2,
        keep_ms: 1_000,
        max_entries: 100,
    };

    #[test]
    fn remembers_per_sender() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let (ha, hb, hc) = (sender_hash("a"), sender_hash("b"), sender_hash("c"));
        let mut r = Recent::default();
        r.insert(&a, ha, 7, first(1, 0), WINDOW);
        r.insert(&b, hb, 7, first(2, 0), WINDOW);
        assert_eq!(r.get("a", ha, 7), Some(first(1, 0)));
        assert_eq!(r.get("b", hb, 7), Some(first(2, 0)));
        assert_eq!(r.get("c", hc, 7), None);
        assert_eq!(r.get("a", ha, 0), None);
        // A colliding hash with another sender is not a hit.
        assert_eq!(r.get("c", ha, 7), None);
        r.insert(&a, ha, 0, first(4, 0), WINDOW);
        assert_eq!(r.get("a", ha, 0), None, "0 is no id");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn young_ids_stay_whatever_their_number_and_old_ones_down_to_the_last_few() {
        let a: Arc<str> = Arc::from("a");
        let ha = sender_hash("a");
        let mut r = Recent::default();
        for id in 1..=10 {
            r.insert(&a, ha, id, first(id, 10 * id), WINDOW);
        }
        // All within 1 s: all kept.
        assert!((1..=10).all(|id| r.get("a", ha, id).is_some()));
        // Much later: only the last two (this one and the one before).
        r.insert(&a, ha, 11, first(11, 5_000), WINDOW);
        assert_eq!(r.len(), 2);
        assert!(r.get("a", ha, 10).is_some() && r.get("a", ha, 11).is_some());
    }

    #[test]
    fn a_busy_room_does_not_push_a_quiet_senders_ids_out() {
        let (quiet, busy): (Arc<str>, Arc<str>) = (Arc::from("quiet"), Arc::from("busy"));
        let (hq, hb) = (sender_hash("quiet"), sender_hash("busy"));
        let mut r = Recent::default();
        r.insert(&quiet, hq, 42, first(1, 0), WINDOW);
        for id in 1..=5_000 {
            r.insert(&busy, hb, id, first(id + 1, 2_000 + id), WINDOW);
        }
        assert_eq!(r.get("quiet", hq, 42), Some(first(1, 0)));
        // The busy sender keeps the last second's worth.
        assert!(r.len() < 1_100, "{}", r.len());
    }

    #[test]
    fn a_crowded_conversation_keeps_each_sender_to_its_last_few() {
        let a: Arc<str> = Arc::from("a");
        let ha = sender_hash("a");
        let mut r = Recent::default();
        let tight = Window {
            max_entries: 10,
            ..WINDOW
        };
        for id in 1..=50 {
            r.insert(&a, ha, id, first(id, 0), tight);
        }
        assert!(r.len() <= 11, "{}", r.len());
        assert!(r.get("a", ha, 50).is_some());
    }
}
