//! The ring: one conversation's recent messages, kept as the very `Deliver`
//! frames that were fanned out, for resume, history pages and offline
//! delivery.

use std::collections::VecDeque;

use apm_core::message::HistoryItem;

use crate::retention::Retention;
use apm_core::{Limits, Message};
use bytes::Bytes;

/// One stored message.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    ts_ms: u64,
    /// The encoded `Deliver` frame, shared with the fan-out (no copy).
    frame: Bytes,
}

/// A conversation's retained messages, in seq order. Seqs are contiguous:
/// the ring always holds a suffix of the conversation.
#[derive(Debug, Default)]
pub struct Ring {
    entries: VecDeque<Entry>,
    /// The frames' bytes.
    bytes: usize,
}

impl Ring {
    /// Adds the message just sequenced and drops what retention no longer
    /// allows: past the count, past the bytes, past the age.
    pub fn push(&mut self, seq: u64, ts_ms: u64, frame: Bytes, keep: Retention) {
        if keep.max_messages == 0 {
            return;
        }
        self.bytes += frame.len();
        self.entries.push_back(Entry { seq, ts_ms, frame });
        while self.entries.len() > keep.max_messages
            || (keep.max_bytes > 0 && self.bytes > keep.max_bytes)
        {
            self.pop_front();
        }
        self.expire(ts_ms, keep);
        if self.entries.is_empty() {
            // A ring emptied by its limits gives its buffer back.
            self.entries = VecDeque::new();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.frame.len();
        }
    }

    /// Bytes of the retained frames.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages retained.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the oldest messages until at most half the bytes are left,
    /// for a cap shared with other rings.
    pub fn drop_older_half(&mut self) {
        let target = self.bytes / 2;
        while self.bytes > target {
            self.pop_front();
        }
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
    }

    /// Drops messages older than the age limit, as of `now_ms`.
    pub fn expire(&mut self, now_ms: u64, keep: Retention) {
        if keep.max_age_ms == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(keep.max_age_ms);
        while self.entries.front().is_some_and(|e| e.ts_ms < cutoff) {
            self.pop_front();
        }
    }

    /// The oldest seq that can be replayed, given the conversation's last
    /// seq (`last + 1` when nothing is kept).
    pub fn oldest(&self, last: u64) -> u64 {
        self.entries.front().map_or(last + 1, |e| e.seq)
    }

    fn index_of(&self, seq: u64) -> usize {
        match self.entries.front() {
            Some(first) => (seq.saturating_sub(first.seq) as usize).min(self.entries.len()),
            None => 0,
        }
    }

    /// The frames with a seq above `after`, oldest first.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Bytes> {
        self.entries
            .range(self.index_of(after.saturating_add(1))..)
            .map(|e| &e.frame)
    }

    /// The frames with a seq above `after`, oldest first, cut to the newest
    /// ones whose sizes add up to at most `budget` bytes.
    pub fn newest_within(&self, after: u64, budget: usize) -> impl Iterator<Item = &Bytes> {
        let start = self.index_of(after.saturating_add(1));
        let mut used = 0usize;
        let mut first = self.entries.len();
        for (i, e) in self.entries.iter().enumerate().skip(start).rev() {
            used += e.frame.len();
            if used > budget {
                break;
            }
            first = i;
        }
        self.entries.range(first..).map(|e| &e.frame)
    }

    /// A page: at most `limit` messages with `after < seq < before`. With
    /// `after`, the oldest such ones (paging forward); without, the newest
    /// (the latest messages, or paging back from `before`).
    pub fn page(&self, before: Option<u64>, after: Option<u64>, limit: usize) -> Vec<HistoryItem> {
        let lo = after.map_or(0, |a| self.index_of(a.saturating_add(1)));
        let hi = before.map_or(self.entries.len(), |b| self.index_of(b));
        if lo >= hi {
            return Vec::new();
        }
        let (lo, hi) = if after.is_none() {
            (hi.saturating_sub(limit).max(lo), hi)
        } else {
            (lo, hi.min(lo + limit))
        };
        self.entries
            .range(lo..hi)
            .filter_map(|e| item(&e.frame))
            .collect()
    }
}

/// The seq of a stored `Deliver` frame.
pub fn seq_of(frame: &Bytes) -> Option<u64> {
    item(frame).map(|i| i.seq)
}

/// The sender and client message id of a stored `Deliver` frame.
pub fn origin(frame: &Bytes) -> Option<(String, u64)> {
    item(frame).map(|i| (i.sender, i.msg_id))
}

/// A stored frame back as a history item (the payload stays shared).
pub fn item(frame: &Bytes) -> Option<HistoryItem> {
    let body = frame.slice(apm_core::LENGTH_LEN..);
    let limits = Limits {
        max_frame_len: u32::MAX,
        max_name_len: usize::MAX,
    };
    match apm_core::codec::decode_frame_bytes(body, &limits)
        .ok()?
        .message
    {
        Message::Deliver(d) => Some(HistoryItem {
            seq: d.seq,
            ts_ms: d.ts_ms,
            sender: d.sender.into(),
            kind: d.kind,
            msg_id: d.msg_id,
            payload: d.payload,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apm_core::message::{ConversationRef, DeliverRef};

    fn frame(seq: u64) -> Bytes {
        DeliverRef {
            conversation: ConversationRef::Channel("c"),
            seq,
            ts_ms: seq * 10,
            sender: "s",
            kind: 0,
            msg_id: 0,
            payload: b"p",
        }
        .to_frame_bytes(u32::MAX)
        .unwrap()
    }

    fn ring(n: u64, keep: Retention) -> Ring {
        let mut r = Ring::default();
        for seq in 1..=n {
            r.push(seq, seq * 10, frame(seq), keep);
        }
        r
    }

    const FIVE: Retention = Retention {
        max_messages: 5,
        max_age_ms: 0,
        max_bytes: 0,
    };

    fn seqs(items: &[HistoryItem]) -> Vec<u64> {
        items.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn keeps_a_suffix() {
        let r = ring(8, FIVE);
        assert_eq!(r.oldest(8), 4);
        assert_eq!(r.after(0).count(), 5);
        assert_eq!(r.after(6).count(), 2);
        assert_eq!(r.after(8).count(), 0);
        assert_eq!(Ring::default().oldest(8), 9);
    }

    #[test]
    fn replay_budget_keeps_the_newest() {
        let r = ring(8, FIVE);
        let one = frame(1).len();
        assert_eq!(r.newest_within(0, 2 * one).count(), 2);
        assert_eq!(r.newest_within(0, usize::MAX).count(), 5);
        assert_eq!(r.newest_within(7, usize::MAX).count(), 1);
        assert_eq!(r.newest_within(0, one - 1).count(), 0);
    }

    #[test]
    fn pages() {
        let r = ring(8, FIVE);
        assert_eq!(seqs(&r.page(None, None, 2)), vec![7, 8]);
        assert_eq!(seqs(&r.page(Some(8), None, 2)), vec![6, 7]);
        assert_eq!(seqs(&r.page(None, Some(5), 10)), vec![6, 7, 8]);
        assert_eq!(seqs(&r.page(Some(7), Some(4), 10)), vec![5, 6]);
        assert!(r.page(Some(4), None, 10).is_empty());
        assert!(r.page(None, Some(8), 10).is_empty());
    }

    #[test]
    fn age_limit() {
        let keep = Retention {
            max_messages: 100,
            max_age_ms: 25,
            max_bytes: 0,
        };
        let r = ring(8, keep);
        // ts of seq n is 10n; at ts 80 the cutoff is 55.
        assert_eq!(r.oldest(8), 6);
    }

    #[test]
    fn byte_limit_drops_the_oldest() {
        let one = frame(1).len();
        let keep = Retention {
            max_bytes: 3 * one,
            ..FIVE
        };
        let r = ring(8, keep);
        assert_eq!(r.oldest(8), 6, "three frames fit");
        assert_eq!(r.bytes(), 3 * one);
        let none = ring(
            2,
            Retention {
                max_bytes: one - 1,
                ..FIVE
            },
        );
        assert_eq!(none.oldest(2), 3, "a frame over the limit is not kept");
        assert_eq!(none.bytes(), 0);
    }

    #[test]
    fn the_older_half_goes() {
        let mut r = ring(5, FIVE);
        r.drop_older_half();
        assert_eq!(
            (r.oldest(5), r.len()),
            (4, 2),
            "two of five frames are under half"
        );
        r.drop_older_half();
        r.drop_older_half();
        assert!(r.is_empty());
    }

    #[test]
    fn nothing_kept() {
        let r = ring(
            3,
            Retention {
                max_messages: 0,
                max_age_ms: 0,
                max_bytes: 0,
            },
        );
        assert_eq!(r.oldest(3), 4);
    }
}
