//! What a shard keeps of its conversations in memory, within two bounds
//! shared by all of them: the bytes of every ring together (the shard's
//! oldest message goes first) and the number of conversations (idle ones
//! leave, least recently used first, and come back from the store).
//!
//! With the disk store nothing is lost by either: a ring is a cache over
//! the store, and a conversation that comes back reads its last seq and
//! read positions from it. With the memory store what leaves is gone; a
//! conversation that comes back starts above every seq the shard forgot,
//! so a client resuming from an old seq is told of the gap, and a user
//! whose unread private messages went is told at the next connect.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::conversation::ConversationId;
use crate::fast_map::HashMap;
use crate::hub::Hub;
use crate::ring::Ring;
use crate::store::Record;

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
    /// Every retained message, in the order it joined its ring. Entries
    /// whose message already left (its ring's own limits, a conversation
    /// dropped) are skipped when reached, and swept out once they
    /// outnumber the live ones.
    order: VecDeque<(ConversationId, u64)>,
    /// An in-place compaction of `order` under way: (kept, examined).
    sweep: Option<(usize, usize)>,
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
            order: VecDeque::new(),
            sweep: None,
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

    /// Counts a message that joined its ring (when the ring kept it).
    pub(super) fn kept(&mut self, record: &Record, before: Usage, ring: &Ring) {
        self.changed(before, ring);
        if ring.newest() == Some(record.seq) {
            self.order
                .push_back((record.conversation.clone(), record.seq));
        }
    }

    /// Counts a ring read back from the store, its messages in seq order.
    pub(super) fn adopt(&mut self, conversation: &ConversationId, ring: &Ring) {
        self.changed((0, 0), ring);
        for seq in ring.seqs() {
            self.order.push_back((conversation.clone(), seq));
        }
    }

    /// Entries in the order of retained messages.
    #[cfg(test)]
    pub(super) fn order_len(&self) -> usize {
        self.order.len()
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
    /// Keeps the bounds after a message joined a ring: drops the shard's
    /// oldest retained messages until the rings are within their byte
    /// cap, and takes out of the order entries whose message left already,
    /// a few at a time, so it stays near the number retained without ever
    /// holding the loop for a whole pass.
    pub(super) fn tidy(&mut self) {
        if self.cache.sweep.is_none() && self.cache.order.len() > self.cache.ring_len + 1024 {
            // Stale entries at the front, the common case.
            for _ in 0..2 {
                let Some((conversation, seq)) = self.cache.order.pop_front() else {
                    break;
                };
                if self.is_retained(&conversation, seq) {
                    self.cache.order.push_front((conversation, seq));
                    break;
                }
            }
        }
        while self.cache.over() {
            let Some((conversation, seq)) = self.pop_order() else {
                break;
            };
            if let Some(log) = self.log_mut(&conversation) {
                let before = Cache::usage(&log.ring);
                log.ring.drop_through(seq);
                let after = Cache::usage(&log.ring);
                self.cache.ring_bytes -= before.0 - after.0;
                self.cache.ring_len -= before.1 - after.1;
            }
        }
        // Live entries at the front can hold stale ones behind them (a
        // conversation left memory, a ring dropped by its own limits): an
        // in-place compaction, a few entries per message, takes them out.
        if self.cache.sweep.is_none() && self.cache.order.len() > 2 * self.cache.ring_len + 4096 {
            self.cache.sweep = Some((0, 0));
        }
        if self.cache.sweep.is_some() {
            self.sweep_order(16);
        }
    }

    /// Whether the message at `seq` of `conversation` is still in memory.
    fn is_retained(&mut self, conversation: &ConversationId, seq: u64) -> bool {
        self.log_mut(conversation)
            .is_some_and(|log| log.ring.oldest(log.seq) <= seq)
    }

    /// The order's oldest entry, keeping a compaction in progress aligned.
    fn pop_order(&mut self) -> Option<(ConversationId, u64)> {
        let entry = self.cache.order.pop_front()?;
        if let Some((w, r)) = &mut self.cache.sweep
            && *r > 0
        {
            *r -= 1;
            *w = w.saturating_sub(1);
        }
        Some(entry)
    }

    /// Compacts `steps` more entries of the order: entries before `w` are
    /// kept ones, between `w` and `r` free slots, from `r` on unexamined.
    fn sweep_order(&mut self, steps: usize) {
        let Some((mut w, mut r)) = self.cache.sweep else {
            return;
        };
        for _ in 0..steps {
            if r >= self.cache.order.len() {
                self.cache.order.truncate(w);
                self.cache.sweep = None;
                return;
            }
            let (conversation, seq) = self.cache.order[r].clone();
            if self.is_retained(&conversation, seq) {
                self.cache.order.swap(w, r);
                w += 1;
            }
            r += 1;
        }
        self.cache.sweep = Some((w, r));
    }

    /// A log for a conversation that is not in memory: from the store's
    /// last seq when the conversation left memory earlier, else new.
    pub(super) fn revived(&mut self, hub: &Hub, conversation: &ConversationId) -> Log {
        if !self.cache.evicted {
            return Log::default();
        }
        let last = if hub.commit.is_some() {
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
        if !log.revived || hub.commit.is_none() {
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
