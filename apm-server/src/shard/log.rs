//! One conversation's log: its order (the last seq given and the last one
//! delivered), its retained messages, its readers' positions and the
//! client message ids it saw recently.

use std::sync::Arc;

use apm_core::message::DeliverRef;

use crate::conversation::ConversationId;
use crate::dedup::{First, Recent, Window, sender_hash};
use crate::retention::Retention;
use crate::ring::Ring;
use crate::store::Record;

use crate::fast_map::HashMap;

/// One conversation's order, what is kept of it, and how far its readers
/// have read.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// The last seq assigned.
    pub(super) seq: u64,
    /// The last seq delivered: with a durable store, the last one on disk.
    pub(super) visible: u64,
    pub(super) ring: Ring,
    /// User -> delivered up to this seq (the user's `Ack`s).
    pub(super) acks: HashMap<Arc<str>, u64>,
    /// Recent client message ids, to drop retries.
    recent: Recent,
    /// Used since the cache's clock hand last passed (see `cache.rs`).
    pub(super) used: bool,
    /// It left memory once and came back: read positions it does not
    /// hold are read from the store.
    pub(super) revived: bool,
}

/// A message offered to a conversation, before it has a seq.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer<'a> {
    pub(crate) sender: &'a Arc<str>,
    pub(crate) kind: u16,
    pub(crate) msg_id: u64,
    pub(crate) payload: &'a [u8],
    /// The server time to stamp it with, milliseconds since the Unix
    /// epoch.
    pub(crate) ts_ms: u64,
}

/// What became of a message offered to a conversation.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// It is new: sequenced, stamped and encoded.
    New(Record),
    /// A retry (same sender, same client message id) of a message the
    /// conversation already has.
    Retry {
        conversation: ConversationId,
        first: First,
        /// The conversation's last delivered seq: the first copy's receipt
        /// waits for the store while `first.seq` is above it.
        visible: u64,
    },
}

impl Log {
    /// Starts from what the store read back; the retained messages'
    /// client ids count as recent, so a retry across a restart is still
    /// recognised.
    pub(super) fn recovered(
        last: u64,
        messages: Vec<Record>,
        keep: Retention,
        window: Window,
    ) -> Log {
        let mut log = Log {
            seq: last,
            visible: last,
            ..Log::default()
        };
        for m in messages {
            if let Some((sender, msg_id)) = crate::ring::origin(&m.frame) {
                let first = First {
                    seq: m.seq,
                    ts_ms: m.ts_ms,
                };
                let hash = sender_hash(&sender);
                log.recent
                    .insert(&Arc::from(sender), hash, msg_id, first, window);
            }
            log.ring.push(m.seq, m.ts_ms, m.frame, keep);
        }
        log
    }

    /// Gives `offer` the next seq, the server time and its `Deliver`
    /// frame, unless the conversation saw it recently (a retry). `window`
    /// is how many client message ids the conversation remembers.
    pub(super) fn admit(
        &mut self,
        conversation: ConversationId,
        offer: Offer<'_>,
        window: Window,
    ) -> Admitted {
        let Offer {
            sender,
            kind,
            msg_id,
            payload,
            ts_ms,
        } = offer;
        let hash = if msg_id == 0 { 0 } else { sender_hash(sender) };
        if let Some(first) = self.recent.get(sender, hash, msg_id) {
            return Admitted::Retry {
                conversation,
                first,
                visible: self.visible,
            };
        }
        self.seq += 1;
        let seq = self.seq;
        let frame = DeliverRef {
            conversation: conversation.as_ref(),
            seq,
            ts_ms,
            sender,
            kind,
            msg_id,
            payload,
        }
        .to_frame_bytes(u32::MAX)
        .expect("no frame limit");
        self.recent
            .insert(sender, hash, msg_id, First { seq, ts_ms }, window);
        Admitted::New(Record {
            conversation,
            seq,
            ts_ms,
            frame,
        })
    }

    /// A sequenced message is delivered: it becomes visible and joins the
    /// ring.
    pub(super) fn settle(&mut self, record: &Record, keep: Retention) {
        self.visible = record.seq;
        self.ring
            .push(record.seq, record.ts_ms, record.frame.clone(), keep);
    }
}

#[cfg(test)]
mod tests {
    const WINDOW: crate::dedup::Window = crate::dedup::Window {
        per_sender: 16,
        keep_ms: 60_000,
        max_entries: 1_000,
    };
    use super::*;

    const KEEP: Retention = Retention {
        max_messages: 10,
        max_age_ms: 0,
        max_bytes: 0,
    };

    fn offer<'a>(sender: &'a Arc<str>, msg_id: u64) -> Offer<'a> {
        Offer {
            sender,
            kind: 0,
            msg_id,
            payload: b"x",
            ts_ms: 1,
        }
    }

    #[test]
    fn seqs_count_up_and_retries_keep_the_first() {
        let alice: Arc<str> = Arc::from("alice");
        let bob: Arc<str> = Arc::from("bob");
        let room = || ConversationId::Channel(Arc::from("room"));
        let mut log = Log::default();
        let Admitted::New(first) = log.admit(room(), offer(&alice, 7), WINDOW) else {
            panic!("a new message");
        };
        assert_eq!(first.seq, 1);
        // The same id from another sender is another message.
        assert!(
            matches!(log.admit(room(), offer(&bob, 7), WINDOW), Admitted::New(r) if r.seq == 2)
        );
        // No id: never a retry.
        assert!(
            matches!(log.admit(room(), offer(&alice, 0), WINDOW), Admitted::New(r) if r.seq == 3)
        );
        assert!(
            matches!(log.admit(room(), offer(&alice, 0), WINDOW), Admitted::New(r) if r.seq == 4)
        );
        match log.admit(room(), offer(&alice, 7), WINDOW) {
            Admitted::Retry {
                first: f, visible, ..
            } => {
                assert_eq!((f.seq, f.ts_ms), (1, first.ts_ms));
                assert_eq!(visible, 0, "nothing settled yet");
            }
            Admitted::New(_) => panic!("a retry"),
        }
        assert_eq!(log.seq, 4);
        log.settle(&first, KEEP);
        assert_eq!(log.visible, 1);
        assert_eq!(log.ring.oldest(1), 1);
    }

    #[test]
    fn recovery_remembers_ids_and_seqs() {
        let alice: Arc<str> = Arc::from("alice");
        let room = || ConversationId::Channel(Arc::from("room"));
        let mut before = Log::default();
        let Admitted::New(record) = before.admit(room(), offer(&alice, 9), WINDOW) else {
            panic!("a new message");
        };
        let mut after = Log::recovered(5, vec![record], KEEP, WINDOW);
        assert_eq!((after.seq, after.visible), (5, 5));
        assert!(matches!(
            after.admit(room(), offer(&alice, 9), WINDOW),
            Admitted::Retry { first, .. } if first.seq == 1
        ));
        assert!(
            matches!(after.admit(room(), offer(&alice, 10), WINDOW), Admitted::New(r) if r.seq == 6)
        );
    }
}
