//! A resume (`Sub since`) that reaches below a channel's ring while the
//! store keeps more: the older part is read from the store off the loop,
//! and the connection joins the channel only when the read is back. Its
//! replay is the read, then what the ring held when the read began, then
//! what was delivered to the channel meanwhile (held back for it), so it
//! gets each message once and in order, however fast the ring moves.

use std::sync::Arc;

use apm_core::{ErrorCode, Frame, Message};

use crate::conversation::ConversationId;
use crate::outbox::Conn;
use crate::store::Record;
use bytes::Bytes;

use super::Shard;
use super::command::{Asker, Command};
use super::tables::Resuming;

/// A resume's read from the store, back on the loop.
#[derive(Debug)]
pub(crate) struct Resumed {
    conn: Arc<Conn>,
    channel: String,
    since: u64,
    request_id: u32,
    /// What the `Sub` took from the connection's ingress allowance.
    cost: usize,
    /// What the ring held above `since` when the read began.
    ring: Vec<Bytes>,
    /// The store's messages, oldest first; `None` when the read failed.
    records: Option<Vec<Record>>,
}

impl Shard {
    /// Starts a read from the store when a resume from `since` reaches
    /// below the ring, the store keeps messages the ring does not, and the
    /// ring alone does not fill the replay budget. Returns whether it did.
    pub(super) fn resume_from_store(
        &mut self,
        conn: &Arc<Conn>,
        name: &str,
        since: u64,
        request_id: u32,
        cost: usize,
    ) -> bool {
        let hub = &self.ctx.hub;
        if !hub.keeps_history() {
            return false;
        }
        let budget = hub.config.outbound_bytes;
        let ch = self.tables.channels.get_mut(name).expect("made by sub");
        let last = ch.log.visible;
        let in_ring = ch.log.ring.oldest(last);
        let stored_from = last.saturating_sub(ch.keep.max_messages as u64) + 1;
        let lo = since.saturating_add(1).max(stored_from);
        let hi = in_ring - 1;
        if lo > hi || ch.log.ring.bytes() >= budget || ch.members.contains_key(&conn.id) {
            return false;
        }
        ch.resuming.push(Resuming {
            conn: conn.id,
            held: Vec::new(),
            held_bytes: 0,
        });
        let ring = ch.log.ring.after(since).cloned().collect();
        let conversation = ConversationId::Channel(ch.name.clone());
        let store = hub.store.clone();
        let policy = hub.retention.clone();
        let mut resumed = Resumed {
            conn: conn.clone(),
            channel: name.to_owned(),
            since,
            request_id,
            cost,
            ring,
            records: None,
        };
        let read = move || {
            resumed.records = match store.read_range(&conversation, lo, hi, &policy) {
                Ok(records) => Some(records),
                Err(e) => {
                    tracing::warn!(error = %e, "a resume could not read the store");
                    None
                }
            };
            resumed
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let hub = hub.clone();
                let index = self.ctx.index;
                drop(runtime.spawn_blocking(move || {
                    hub.submit_now(index, Command::Resumed(Box::new(read())));
                }));
            }
            Err(_) => self.resumed(read()),
        }
        true
    }

    /// The store's part of a resume is back: joins the connection with
    /// that part and the ring's, unless it left or unsubscribed meanwhile.
    pub(super) fn resumed(&mut self, r: Resumed) {
        let Resumed {
            conn,
            channel,
            since,
            request_id,
            cost,
            ring,
            records,
        } = r;
        let budget = self.ctx.config().outbound_bytes;
        let waiting = self
            .tables
            .channels
            .get_mut(channel.as_str())
            .and_then(|ch| {
                let at = ch.resuming.iter().position(|w| w.conn == conn.id)?;
                Some(ch.resuming.swap_remove(at))
            });
        let Some(waiting) = waiting else {
            // It unsubscribed or left meanwhile.
            conn.release_ingress(cost);
            return;
        };
        let Some(records) = records else {
            let error = Message::error(ErrorCode::Internal, "history could not be read");
            self.ctx.reply(&conn, Frame::new(request_id, error));
            conn.release_ingress(cost);
            return;
        };
        if waiting.held_bytes > budget {
            // More arrived during the read than the connection may have
            // queued: as for any member that far behind.
            conn.close(ErrorCode::SlowConsumer);
            conn.release_ingress(cost);
            return;
        }
        let oldest = records.first().map_or_else(
            || {
                ring.first()
                    .and_then(crate::ring::seq_of)
                    .unwrap_or(since + 1)
            },
            |r| r.seq,
        );
        let mut replay: Vec<Bytes> = records.into_iter().map(|r| r.frame).collect();
        replay.extend(ring);
        replay.extend(waiting.held);
        newest_within(&mut replay, budget);
        self.join(
            &conn,
            &channel,
            Asker::Client(request_id),
            Some(since),
            oldest,
            replay,
        );
        conn.release_ingress(cost);
    }
}

/// Cuts `frames` to the newest whose sizes add up to at most `budget`.
pub(super) fn newest_within(frames: &mut Vec<Bytes>, budget: usize) {
    let mut used = 0usize;
    let keep_from = frames
        .iter()
        .rposition(|f| {
            used += f.len();
            used > budget
        })
        .map_or(0, |i| i + 1);
    frames.drain(..keep_from);
}
