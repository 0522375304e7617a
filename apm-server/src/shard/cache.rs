//! What a shard keeps of its conversations in memory, within two bounds
//! shared by all of them: the bytes of every ring together (the rings of
//! the least recently used conversations shrink first) and the number of
//! conversations (idle ones leave, least recently used first, and come
//! back from the store). Both walk a second-chance clock over the tables,
//! so the message path only counts bytes.
//!
//! With the disk store nothing is lost by either: a ring is a cache over
//! the store, and a conversation that comes back reads its last seq and
//! read positions from it. With the memory store what leaves is gone; a
//! conversation that comes back starts above every seq the shard forgot,
//! so a client resuming from an old seq is told of the gap, and a user
//! whose unread private messages went is told at the next connect.

use std::sync::Arc;

use crate::conversation::ConversationId;
use crate::fast_map::HashMap;
use crate::hub::Hub;
use crate::ring::Ring;

use super::log::Log;
use super::tables::Tables;

/// A ring's bytes and message count.
pub(super) type Usage = (usize, usize);

/// A shard's memory bounds and what it needs to enforce them.
#[derive(Debug)]
pub(super) struct Cache {
    /// Bytes all rings of the shard may hold together.
    ring_cap: usize,
    ring_bytes: usize,
    ring_len: usize,
    /// The clock hand of the byte cap: the next conversation whose ring
    /// may shrink.
    ring_hand: usize,
    /// Conversations (channels and inboxes) the shard keeps.
    conversation_cap: usize,
    /// The clock hand: the next conversation to look at for leaving.
    hand: usize,
    /// Whether a conversation ever left: until then one that is not in
    /// memory never existed, and nothing needs reading back.
    pub(super) evicted: bool,
    /// The highest last seq of a conversation that left.
    floor: u64,
    /// Users whose unread private messages left with their inbox (memory
    /// store), told at their next connect.
    lost: HashMap<Arc<str>, u64>,
    /// `lost` was full: every inbox that comes back is told it may have
    /// lost messages.
    lost_overflow: bool,
}

impl Cache {
    /// Bounds for one shard of `shards`.
    pub(super) fn new(hub: &Hub, shards: usize) -> Cache {
        let shards = shards.max(1);
        Cache {
            ring_cap: hub.config.history_total_bytes() / shards,
            ring_bytes: 0,
            ring_len: 0,
            ring_hand: 0,
            conversation_cap: (hub.config.max_conversations() / shards).max(16),
            hand: 0,
            evicted: false,
            floor: 0,
            lost: HashMap::default(),
            lost_overflow: false,
        }
    }

    /// What `ring` holds, to compare after a change.
    pub(super) fn usage(ring: &Ring) -> Usage {
        (ring.bytes(), ring.len())
    }

    /// Counts a ring's change from `before` to what it holds now.
    pub(super) fn changed(&mut self, before: Usage, ring: &Ring) {
        let (bytes, len) = Cache::usage(ring);
        self.ring_bytes = self.ring_bytes + bytes - before.0;
        self.ring_len = self.ring_len + len - before.1;
    }

    /// Counts a ring read back from the store.
    pub(super) fn adopt(&mut self, ring: &Ring) {
        self.changed((0, 0), ring);
    }

    /// Messages retained in all rings.
    #[cfg(test)]
    pub(super) fn retained(&self) -> usize {
        self.ring_len
    }

    /// Whether the rings together are over their cap.
    pub(super) fn over(&self) -> bool {
        self.ring_bytes > self.ring_cap
    }

    fn forget(&mut self, log: &Log) {
        self.ring_bytes -= log.ring.bytes();
        self.ring_len -= log.ring.len();
        self.floor = self.floor.max(log.seq);
        self.evicted = true;
    }

    /// How many of `user`'s private messages left memory unread since it
    /// was last told (0: an unknown number, once `lost` overflowed).
    pub(super) fn take_lost(&mut self, user: &str) -> Option<u64> {
        match self.lost.remove(user) {
            Some(n) => Some(n),
            None if self.lost_overflow => Some(0),
            None => None,
        }
    }
}

impl Tables {
    /// Keeps the rings within their byte cap after one grew: the rings of
    /// conversations not used since the hand last passed lose their older
    /// half, a bounded number of steps per call.
    pub(super) fn tidy(&mut self) {
        const STEPS: usize = 256;
        for _ in 0..STEPS {
            if !self.cache.over() {
                return;
            }
            let total = self.channels.len() + self.inboxes.len();
            if total == 0 {
                return;
            }
            if self.cache.ring_hand >= total {
                self.cache.ring_hand = 0;
            }
            let i = self.cache.ring_hand;
            self.cache.ring_hand += 1;
            let log = if i < self.channels.len() {
                &mut self.channels[i].log
            } else {
                &mut self.inboxes[i - self.channels.len()]
            };
            if log.used {
                log.used = false;
                continue;
            }
            if log.ring.is_empty() {
                continue;
            }
            let before = Cache::usage(&log.ring);
            log.ring.drop_older_half();
            self.cache.changed(before, &log.ring);
        }
    }

    /// A log for a conversation that is not in memory: from the store's
    /// last seq when the conversation left memory earlier, else new.
    pub(super) fn revived(&mut self, hub: &Hub, conversation: &ConversationId) -> Log {
        if !self.cache.evicted && hub.cluster.is_none() {
            return Log::default();
        }
        let last = if hub.keeps_history() {
            hub.store.last(conversation).unwrap_or_else(|e| {
                // Above every seq that left memory, so none is reused.
                tracing::warn!(error = %e, "could not read a conversation's last seq");
                Some(self.cache.floor)
            })
        } else {
            Some(self.cache.floor)
        };
        let mut log = Log::default();
        if let Some(last) = last {
            log.seq = last;
            log.visible = last;
            log.revived = true;
        }
        log
    }

    /// How far `user` has read the log of `conversation`: what the loop
    /// holds, or, for a conversation that came back into memory, what the
    /// store holds.
    pub(super) fn acked(
        hub: &Hub,
        log: &mut Log,
        conversation: &ConversationId,
        user: &str,
    ) -> u64 {
        if let Some(seq) = log.acks.get(user) {
            return *seq;
        }
        if !log.revived || !hub.keeps_history() {
            return 0;
        }
        let seq = hub
            .store
            .acked(user, conversation)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read a read position");
                None
            })
            .unwrap_or(0);
        log.acks.insert(Arc::from(user), seq);
        seq
    }

    /// Lets idle conversations leave memory until they are within the cap,
    /// or none is idle: for the start, when the store may hold more
    /// conversations than memory may.
    pub(super) fn fit_conversations(&mut self, durable: bool) {
        loop {
            let before = self.channels.len() + self.inboxes.len();
            if before <= self.cache.conversation_cap {
                return;
            }
            self.make_room(durable, 0);
            if self.channels.len() + self.inboxes.len() == before {
                // A whole pass found nothing to let go, or only cleared
                // marks: one more pass decides.
                self.make_room(durable, 0);
                if self.channels.len() + self.inboxes.len() == before {
                    return;
                }
            }
        }
    }

    /// Lets idle conversations leave memory while there are more than the
    /// cap less `room`: a second-chance clock over channels then inboxes, a
    /// bounded number of steps per call so the loop is never held long.
    pub(super) fn make_room(&mut self, durable: bool, room: usize) {
        const STEPS: usize = 64;
        for _ in 0..STEPS {
            let total = self.channels.len() + self.inboxes.len();
            if total + room <= self.cache.conversation_cap {
                return;
            }
            if self.cache.hand >= total {
                self.cache.hand = 0;
            }
            let i = self.cache.hand;
            if i < self.channels.len() {
                let ch = &mut self.channels[i];
                if ch.log.used {
                    ch.log.used = false;
                } else if ch.members.is_empty()
                    && ch.resuming.is_empty()
                    && ch.log.seq == ch.log.visible
                {
                    let (_, ch) = self.channels.swap_remove_index(i).expect("in range");
                    self.cache.forget(&ch.log);
                    // The one swapped into `i` is looked at next.
                    continue;
                }
            } else {
                let j = i - self.channels.len();
                let (user, log) = self.inboxes.get_index_mut(j).expect("in range");
                if log.used {
                    log.used = false;
                } else if !self.users.contains_key(user) && log.seq == log.visible {
                    let (user, log) = self.inboxes.swap_remove_index(j).expect("in range");
                    let acked = log.acks.get(&user).copied().unwrap_or(0);
                    let unread = log
                        .visible
                        .saturating_sub(acked.max(log.ring.oldest(log.visible) - 1));
                    if !durable && log.visible > acked {
                        // An entry is a name and a count: a few times
                        // the conversations cost little.
                        if self.cache.lost.len() < 4 * self.cache.conversation_cap {
                            *self.cache.lost.entry(user).or_insert(0) += unread;
                        } else {
                            self.cache.lost_overflow = true;
                        }
                    }
                    self.cache.forget(&log);
                    continue;
                }
            }
            self.cache.hand += 1;
        }
    }
}
