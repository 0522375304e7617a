//! What a shard answers from its logs: history pages, read positions and
//! unread counts, and the logs it starts from after a restart.

use std::sync::Arc;

use apm_core::message::{Conversation, HistoryRequest, HistoryResponse, Unread};
use apm_core::{ErrorCode, Frame, Message};

use crate::clock::now_ms;
use crate::conversation::ConversationId;
use crate::hub::Seed;
use crate::outbox::Conn;
use crate::store::AckRecord;

use super::Shard;
use super::log::Log;

impl Shard {
    /// Starts from what the store read back.
    pub(super) fn seed(&mut self, seed: Seed) {
        let hub = &*self.ctx.hub;
        for c in seed.conversations {
            let keep = hub.retention.for_conversation(&c.conversation);
            let log = Log::recovered(c.last, c.messages, keep, hub.config.dedup_window);
            match c.conversation {
                ConversationId::Channel(name) => self.tables.channel(hub, &name).log = log,
                ConversationId::User(user) => {
                    self.tables.inboxes.insert(user, log);
                }
                ConversationId::Broadcast => self.tables.broadcasts = log,
            }
        }
        for a in seed.acks {
            if let Some(log) = self.tables.log_mut(&a.conversation) {
                log.acks.insert(a.user, a.seq);
            }
        }
    }

    /// Moves `user`'s read position in a conversation forward (never back,
    /// never past what was delivered).
    pub(super) fn ack(&mut self, user: Arc<str>, conversation: ConversationId, seq: u64) {
        let Some(log) = self.tables.log_mut(&conversation) else {
            return;
        };
        let seq = seq.min(log.visible);
        if seq <= log.acked(&user) {
            return;
        }
        log.acks.insert(user.clone(), seq);
        if let Some(commit) = &self.ctx.hub.commit {
            commit.push_ack(AckRecord {
                user,
                conversation,
                seq,
            });
        }
    }

    pub(super) fn unread(&self, user: &str, conversation: Conversation) -> Unread {
        let (last, acked) = self
            .tables
            .log(&conversation)
            .map_or((0, 0), |log| (log.visible, log.acked(user)));
        Unread {
            conversation,
            last,
            acked,
        }
    }

    pub(super) fn history(&mut self, conn: &Conn, request_id: u32, req: HistoryRequest) {
        let config = &self.ctx.hub.config;
        let default = self.ctx.hub.retention.default;
        let tables = &mut self.tables;
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
                    return self.ctx.reply(conn, refusal);
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
        let (oldest, mut messages) = match ring {
            Some(ring) => {
                ring.expire(now_ms(), keep);
                (ring.oldest(last), ring.page(req.before, req.after, limit))
            }
            None => (last + 1, Vec::new()),
        };
        // A page must fit in a frame: drop from the far end until it does.
        let max = config.max_frame_len as usize;
        let newest_first = req.after.is_none();
        while messages.iter().map(|m| m.payload.len() + 64).sum::<usize>() > max {
            if newest_first {
                messages.remove(0);
            } else {
                messages.pop();
            }
        }
        let response = Message::HistoryResponse(HistoryResponse {
            conversation: req.conversation,
            oldest,
            last,
            messages,
        });
        self.ctx.reply(conn, Frame::new(request_id, response));
    }
}
