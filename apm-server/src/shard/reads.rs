//! What a shard answers from its logs: history pages, read positions and
//! unread counts, and the logs it starts from after a restart.

use std::sync::Arc;

use apm_core::message::{Conversation, HistoryItem, HistoryRequest, HistoryResponse, Unread};
use apm_core::{ErrorCode, Frame, Message};

use crate::clock::now_ms;
use crate::conversation::ConversationId;
use crate::hub::Seed;
use crate::outbox::Conn;
use crate::store::AckRecord;

use super::Shard;
use super::cache::Cache;
use super::log::Log;
use super::tables::Tables;

impl Shard {
    /// Starts from what the store read back.
    pub(super) fn seed(&mut self, seed: Seed) {
        let hub = &*self.ctx.hub;
        for c in seed.conversations {
            let keep = hub.retention.for_conversation(&c.conversation);
            let log = Log::recovered(c.last, c.messages, keep, hub.config.dedup_window());
            self.tables.cache.adopt(&log.ring);
            match c.conversation {
                ConversationId::Channel(name) => {
                    let ch = self.tables.channel(hub, &name);
                    ch.log = log;
                }
                ConversationId::User(user) => {
                    self.tables.inboxes.insert(user, log);
                }
                ConversationId::Broadcast => self.tables.broadcasts = log,
            }
        }
        self.tables.tidy();
        self.tables.fit_conversations(hub.keeps_history());
        for a in seed.acks {
            if let Some(log) = self.tables.log_mut(&a.conversation) {
                log.acks.insert(a.user, a.seq);
            }
        }
        if !seed.users.is_empty() || !seed.members.is_empty() {
            let presumed = &mut self.tables.presumed;
            presumed.users = seed.users.into_iter().map(Arc::from).collect();
            presumed.members = seed
                .members
                .into_iter()
                .map(|(c, u)| (Arc::from(c), Arc::from(u)))
                .collect();
            presumed.until = Some(
                tokio::time::Instant::now()
                    + std::time::Duration::from_millis(hub.config.presence_grace_ms),
            );
        }
    }

    /// Moves `user`'s read position in a conversation forward (never back,
    /// never past what was delivered).
    pub(super) fn ack(&mut self, user: Arc<str>, conversation: ConversationId, seq: u64) {
        let hub = &*self.ctx.hub;
        if self.tables.cache.evicted {
            self.tables.resident(hub, &conversation.to_protocol());
        }
        let Some(log) = self.tables.log_mut(&conversation) else {
            return;
        };
        let seq = seq.min(log.visible);
        if seq <= Tables::acked(hub, log, &conversation, &user) {
            return;
        }
        log.acks.insert(user.clone(), seq);
        if let Some(cluster) = &hub.cluster {
            cluster.ack(&hub.metrics, user.clone(), conversation.clone(), seq);
        }
        if let Some(commit) = &self.ctx.hub.commit {
            commit.push_ack(AckRecord {
                user,
                conversation,
                seq,
            });
        }
    }

    /// Cluster mode: a read position that moved on some node (this one's
    /// come back too). A conversation not in memory here reads it from
    /// Redis when it comes.
    pub(super) fn remote_ack(&mut self, user: Arc<str>, conversation: ConversationId, seq: u64) {
        if let Some(log) = self.tables.log_mut(&conversation) {
            let known = log.acks.entry(user).or_insert(0);
            *known = (*known).max(seq);
        }
    }

    pub(super) fn unread(&mut self, user: &str, conversation: Conversation) -> Unread {
        let hub = &*self.ctx.hub;
        self.tables.resident(hub, &conversation);
        let id = ConversationId::from(&conversation);
        let (last, acked) = self.tables.log_mut(&id).map_or((0, 0), |log| {
            (log.visible, Tables::acked(hub, log, &id, user))
        });
        Unread {
            conversation,
            last,
            acked,
        }
    }

    /// Answers a history page from the conversation's ring, or, when the
    /// page reaches below what the ring holds and the store keeps more,
    /// from the store, read off the loop. Gives `cost` back to the
    /// connection's ingress allowance once the answer is queued.
    pub(super) fn history(
        &mut self,
        conn: &Arc<Conn>,
        request_id: u32,
        req: HistoryRequest,
        cost: usize,
    ) {
        let hub = &self.ctx.hub;
        let config = &hub.config;
        let default = hub.retention.default;
        if !matches!(&req.conversation, Conversation::User(u) if **u != *conn.user) {
            self.tables.resident(hub, &req.conversation);
        }
        let tables = &mut self.tables;
        let cache = &mut tables.cache;
        let (ring, last, keep) = match &req.conversation {
            Conversation::Channel(c) => match tables.channels.get_mut(c.as_str()) {
                Some(ch) => (Some(&mut ch.log.ring), ch.log.visible, ch.keep),
                None => (None, 0, default),
            },
            Conversation::User(u) => {
                if **u != *conn.user {
                    let refusal = Frame::new(
                        request_id,
                        Message::error(ErrorCode::Forbidden, "only your own inbox"),
                    );
                    self.ctx.reply(conn, refusal);
                    conn.release_ingress(cost);
                    return;
                }
                match tables.inboxes.get_mut(u.as_str()) {
                    Some(inbox) => (Some(&mut inbox.ring), inbox.visible, default),
                    None => (None, 0, default),
                }
            }
            Conversation::Broadcast => (
                Some(&mut tables.broadcasts.ring),
                tables.broadcasts.visible,
                default,
            ),
        };
        let limit = req.limit.min(config.history_page_max) as usize;
        let max_frame = config.max_frame_len as usize;
        let Some(ring) = ring else {
            let page = Page::empty(last);
            page.reply(conn, request_id, req, max_frame);
            conn.release_ingress(cost);
            return;
        };
        let before = Cache::usage(ring);
        ring.expire(now_ms(), keep);
        cache.changed(before, ring);
        let in_ring = ring.oldest(last);
        let (lo, hi) = page_range(req.before, req.after, limit, last);
        // What the store keeps beyond the ring, by count (age is checked
        // by the read).
        let stored_from = last.saturating_sub(keep.max_messages as u64) + 1;
        if !hub.keeps_history() || lo >= in_ring || hi < stored_from || lo > hi {
            let page = Page {
                oldest: in_ring,
                last,
                messages: ring.page(req.before, req.after, limit),
            };
            page.reply(conn, request_id, req, max_frame);
            conn.release_ingress(cost);
            return;
        }
        let store = hub.store.clone();
        let policy = hub.retention.clone();
        let conn = conn.clone();
        let read = move || {
            let conversation = ConversationId::from(&req.conversation);
            let page = match store.read_range(&conversation, lo.max(stored_from), hi, &policy) {
                Ok(records) => Page {
                    oldest: records.first().map_or(in_ring, |r| r.seq.min(in_ring)),
                    last,
                    messages: records
                        .iter()
                        .filter_map(|r| crate::ring::item(&r.frame))
                        .collect(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "history read from the store failed");
                    let error = Message::error(ErrorCode::Internal, "history could not be read");
                    if let Ok(bytes) = Frame::new(request_id, error).to_bytes_limited(u32::MAX) {
                        conn.push_reply(bytes);
                    }
                    conn.release_ingress(cost);
                    return;
                }
            };
            page.reply(&conn, request_id, req, max_frame);
            conn.release_ingress(cost);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(read)),
            Err(_) => read(),
        }
    }
}

/// The seqs a history page covers, `lo..=hi`, given the conversation's
/// last seq: with `after`, the oldest `limit` above it; without, the
/// newest `limit` below `before`.
fn page_range(before: Option<u64>, after: Option<u64>, limit: usize, last: u64) -> (u64, u64) {
    let below = before.map_or(last, |b| b.saturating_sub(1).min(last));
    let limit = limit as u64;
    match after {
        Some(a) => {
            let lo = a.saturating_add(1);
            (lo, below.min(lo.saturating_add(limit).saturating_sub(1)))
        }
        None => (below.saturating_sub(limit).saturating_add(1).max(1), below),
    }
}

/// A history page on its way to a client.
struct Page {
    oldest: u64,
    last: u64,
    messages: Vec<HistoryItem>,
}

impl Page {
    fn empty(last: u64) -> Page {
        Page {
            oldest: last + 1,
            last,
            messages: Vec::new(),
        }
    }

    /// Queues the page as a `HistoryResponse`, cut from its far end (the
    /// newest when paging `forward`, else the oldest) until it fits in a
    /// frame of `max_frame` bytes.
    fn reply(self, conn: &Conn, request_id: u32, req: HistoryRequest, max_frame: usize) {
        let Page {
            oldest,
            last,
            mut messages,
        } = self;
        let forward = req.after.is_some();
        while messages.iter().map(|m| m.payload.len() + 64).sum::<usize>() > max_frame {
            if forward {
                messages.pop();
            } else {
                messages.remove(0);
            }
        }
        let conversation = req.conversation;
        let response = Message::HistoryResponse(HistoryResponse {
            conversation,
            oldest,
            last,
            messages,
        });
        if let Ok(bytes) = Frame::new(request_id, response).to_bytes_limited(u32::MAX) {
            conn.push_reply(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::page_range;

    #[test]
    fn page_ranges() {
        // The newest 4 of 10.
        assert_eq!(page_range(None, None, 4, 10), (7, 10));
        // The newest 4 below 7.
        assert_eq!(page_range(Some(7), None, 4, 10), (3, 6));
        // The oldest 4 above 2.
        assert_eq!(page_range(None, Some(2), 4, 10), (3, 6));
        // Both bounds.
        assert_eq!(page_range(Some(5), Some(2), 10, 10), (3, 4));
        // Near the start.
        assert_eq!(page_range(Some(3), None, 10, 10), (1, 2));
        // Nothing.
        let (lo, hi) = page_range(None, Some(10), 4, 10);
        assert!(lo > hi);
    }
}
