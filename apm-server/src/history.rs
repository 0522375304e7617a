//! The recent history of one conversation: its last messages, kept as the
//! very `Deliver` frames that were fanned out, for resume, history pages
//! and offline delivery.

use std::collections::VecDeque;

use apm_core::message::HistoryItem;

use crate::store::ConversationId;
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

/// How much history to keep per conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most messages kept; 0 keeps none.
    pub max_messages: usize,
    /// Oldest message kept, in milliseconds; 0 means no age limit.
    pub max_age_ms: u64,
}

/// How much history each conversation keeps: rules for channels by name,
/// and a default for the rest (other channels, inboxes, broadcasts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Where no rule applies.
    pub default: Retention,
    /// (pattern, retention), the first matching pattern wins. A pattern is
    /// a channel name, or a prefix ending in `*` (`*` alone is every
    /// channel).
    pub rules: Vec<(String, Retention)>,
}

impl RetentionPolicy {
    /// The same retention everywhere.
    pub fn uniform(keep: Retention) -> RetentionPolicy {
        RetentionPolicy {
            default: keep,
            rules: Vec::new(),
        }
    }

    /// What channel `name` keeps.
    pub fn for_channel(&self, name: &str) -> Retention {
        self.rules
            .iter()
            .find(|(pattern, _)| crate::config::pattern_matches(pattern, name))
            .map_or(self.default, |(_, keep)| *keep)
    }

    /// What a conversation keeps.
    pub fn for_conversation(&self, conversation: &ConversationId) -> Retention {
        match conversation {
            ConversationId::Channel(name) => self.for_channel(name),
            ConversationId::User(_) | ConversationId::Broadcast => self.default,
        }
    }

    /// Reads a rule written `PATTERN=MESSAGES:SECONDS` (`room.*=100:3600`:
    /// channels starting with `room.` keep their last 100 messages, none
    /// older than an hour; 0 seconds is no age limit).
    pub fn parse_rule(rule: &str) -> Result<(String, Retention), String> {
        let bad = || format!("history rule {rule:?}: expected PATTERN=MESSAGES:SECONDS");
        let (pattern, limits) = rule.rsplit_once('=').ok_or_else(bad)?;
        let (messages, seconds) = limits.split_once(':').ok_or_else(bad)?;
        if pattern.is_empty() {
            return Err(bad());
        }
        let max_messages = messages.trim().parse().map_err(|_| bad())?;
        let seconds: u64 = seconds.trim().parse().map_err(|_| bad())?;
        Ok((
            pattern.to_owned(),
            Retention {
                max_messages,
                max_age_ms: seconds.saturating_mul(1000),
            },
        ))
    }
}

/// A conversation's retained messages, in seq order. Seqs are contiguous:
/// the ring always holds a suffix of the conversation.
#[derive(Debug, Default)]
pub struct Ring {
    entries: VecDeque<Entry>,
}

impl Ring {
    /// Adds the message just sequenced and drops what retention no longer
    /// allows.
    pub fn push(&mut self, seq: u64, ts_ms: u64, frame: Bytes, keep: Retention) {
        if keep.max_messages == 0 {
            return;
        }
        self.entries.push_back(Entry { seq, ts_ms, frame });
        while self.entries.len() > keep.max_messages {
            self.entries.pop_front();
        }
        self.expire(ts_ms, keep);
    }

    /// Drops messages older than the age limit, as of `now_ms`.
    pub fn expire(&mut self, now_ms: u64, keep: Retention) {
        if keep.max_age_ms == 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(keep.max_age_ms);
        while self.entries.front().is_some_and(|e| e.ts_ms < cutoff) {
            self.entries.pop_front();
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
fn item(frame: &Bytes) -> Option<HistoryItem> {
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
            sender: d.sender,
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
        };
        let r = ring(8, keep);
        // ts of seq n is 10n; at ts 80 the cutoff is 55.
        assert_eq!(r.oldest(8), 6);
    }

    #[test]
    fn rules_pick_by_channel_name() {
        let short = Retention {
            max_messages: 2,
            max_age_ms: 60_000,
        };
        let policy = RetentionPolicy {
            default: FIVE,
            rules: vec![
                RetentionPolicy::parse_rule("room.*=2:60").unwrap(),
                RetentionPolicy::parse_rule("news=0:0").unwrap(),
            ],
        };
        assert_eq!(policy.for_channel("room.1"), short);
        assert_eq!(policy.for_channel("news").max_messages, 0);
        assert_eq!(policy.for_channel("other"), FIVE);
        let user = ConversationId::User(std::sync::Arc::from("room.1"));
        assert_eq!(policy.for_conversation(&user), FIVE);
        for bad in ["room", "=1:2", "a=1", "a=x:2", "a=1:y"] {
            assert!(RetentionPolicy::parse_rule(bad).is_err(), "{bad}");
        }
        // Names may hold `=`: the last one splits.
        assert_eq!(RetentionPolicy::parse_rule("a=b=3:0").unwrap().0, "a=b");
    }

    #[test]
    fn nothing_kept() {
        let r = ring(
            3,
            Retention {
                max_messages: 0,
                max_age_ms: 0,
            },
        );
        assert_eq!(r.oldest(3), 4);
    }
}
