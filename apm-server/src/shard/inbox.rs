//! A user's inbox on connect: what arrived while it was away, replayed
//! from the ring, or, with the disk store, from the store too when the
//! ring no longer reaches back to the user's read position. The store is
//! read off the loop and the connection is added to its user only once
//! the read is back; private messages that arrive meanwhile are held back
//! for it and come after the older ones, never before.

use std::sync::Arc;

use apm_core::message::Conversation;
use apm_core::{ErrorCode, Frame, Message};
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::conversation::ConversationId;
use crate::outbox::Conn;
use crate::store::Record;

use super::Shard;
use super::cache::Cache;
use super::command::Command;
use super::tables::{Resuming, Tables};

/// A connection waiting for its inbox to be read from the store.
#[derive(Debug)]
pub(crate) struct InboxRead {
    conn: Arc<Conn>,
    welcome: Bytes,
    reply: oneshot::Sender<Result<(), ErrorCode>>,
    /// What the ring held above the read position when the read began.
    ring: Vec<Bytes>,
    /// The store's messages, oldest first (none when the read failed: the
    /// ring's part is still sent).
    records: Vec<Record>,
}

/// An inbox replay's parts, oldest first.
#[derive(Debug)]
pub(super) struct Stored {
    records: Vec<Record>,
    ring: Vec<Bytes>,
    held: Vec<Bytes>,
}

impl Shard {
    /// The seqs to read from the store for `conn`'s inbox replay, when the
    /// store is durable, the ring starts above the user's read position,
    /// keeps less than the replay budget, and the store holds more.
    pub(super) fn inbox_below_ring(&mut self, conn: &Conn) -> Option<(u64, u64, Vec<Bytes>)> {
        let hub = &*self.ctx.hub;
        if !hub.keeps_history() {
            return None;
        }
        let user = &conn.user;
        self.tables
            .resident(hub, &Conversation::User(user.to_string()));
        let inbox = self.tables.inboxes.get_mut(user)?;
        let id = ConversationId::User(user.clone());
        let acked = Tables::acked(hub, inbox, &id, user);
        let in_ring = inbox.ring.oldest(inbox.visible);
        let keep = hub.retention.default;
        let stored_from = inbox.visible.saturating_sub(keep.max_messages as u64) + 1;
        let lo = acked.saturating_add(1).max(stored_from);
        let hi = in_ring - 1;
        if lo > hi || inbox.ring.bytes() >= hub.config.outbound_bytes {
            return None;
        }
        let ring = inbox.ring.after(acked).cloned().collect();
        self.tables.inbox_waiting.push((
            user.clone(),
            Resuming {
                conn: conn.id,
                held: Vec::new(),
                held_bytes: 0,
            },
        ));
        Some((lo, hi, ring))
    }

    /// Reads `lo..=hi` of `conn`'s inbox from the store off the loop, then
    /// admits the connection with it.
    pub(super) fn read_inbox(
        &mut self,
        conn: Arc<Conn>,
        welcome: Bytes,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
        (lo, hi, ring): (u64, u64, Vec<Bytes>),
    ) {
        let hub = self.ctx.hub.clone();
        let index = self.ctx.index;
        let conversation = ConversationId::User(conn.user.clone());
        let mut read = InboxRead {
            conn,
            welcome,
            reply,
            ring,
            records: Vec::new(),
        };
        let run = move |hub: &crate::hub::Hub| {
            read.records = hub
                .store
                .read_range(&conversation, lo, hi, &hub.retention)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "an inbox could not be read from the store");
                    Vec::new()
                });
            read
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || {
                let read = run(&hub);
                hub.submit_now(index, Command::InboxRead(Box::new(read)));
            })),
            Err(_) => {
                let read = run(&hub);
                self.inbox_read(read);
            }
        }
    }

    /// The store's part of an inbox replay is back.
    pub(super) fn inbox_read(&mut self, read: InboxRead) {
        let InboxRead {
            conn,
            welcome,
            reply,
            ring,
            records,
        } = read;
        let waiting = &mut self.tables.inbox_waiting;
        let held = match waiting.iter().position(|(_, w)| w.conn == conn.id) {
            Some(at) => waiting.swap_remove(at).1,
            None => return,
        };
        if held.held_bytes > self.ctx.config().outbound_bytes {
            // More arrived during the read than the connection may have
            // queued: as for any connection that far behind.
            let _ = reply.send(Err(ErrorCode::SlowConsumer));
            return;
        }
        let stored = Stored {
            records,
            ring,
            held: held.held,
        };
        self.admit(conn, welcome, reply, Some(stored));
    }

    /// Queues what arrived in `user`'s inbox while it was away (or is not
    /// yet acknowledged), the newest that fit the replay budget; older ones
    /// stay readable as history. Private messages that left memory unread
    /// (memory store) are announced with `MessagesLost` and count as read.
    pub(super) fn offline_inbox(&mut self, conn: &Conn, user: &Arc<str>, stored: Option<Stored>) {
        let hub = &*self.ctx.hub;
        let durable = hub.keeps_history();
        let tables = &mut self.tables;
        if durable {
            tables.resident(hub, &Conversation::User(user.to_string()));
        }
        let mut lost = if durable {
            None
        } else {
            tables.cache.take_lost(user)
        };
        if let Some(inbox) = tables.inboxes.get_mut(user) {
            let before = Cache::usage(&inbox.ring);
            inbox.ring.expire(now_ms(), hub.retention.default);
            tables.cache.changed(before, &inbox.ring);
            let id = ConversationId::User(user.clone());
            let acked = Tables::acked(hub, inbox, &id, user);
            let oldest = inbox.ring.oldest(inbox.visible);
            if !durable && acked + 1 < oldest {
                *lost.get_or_insert(0) += oldest - 1 - acked;
                inbox.acks.insert(user.clone(), oldest - 1);
            }
            if let Some(n) = lost {
                let text = match n {
                    0 => "private messages sent while you were away may have left the \
                          server's memory before they could be delivered"
                        .to_owned(),
                    n => format!(
                        "{n} private messages sent while you were away left the server's \
                         memory before they could be delivered"
                    ),
                };
                self.ctx.reply(
                    conn,
                    Frame::new(0, Message::error(ErrorCode::MessagesLost, text)),
                );
            }
            let budget = hub.config.outbound_bytes;
            let mut frames: Vec<Bytes> = match stored {
                Some(s) => s
                    .records
                    .into_iter()
                    .map(|r| r.frame)
                    .chain(s.ring)
                    .chain(s.held)
                    .collect(),
                None => inbox.ring.after(acked).cloned().collect(),
            };
            super::resume::newest_within(&mut frames, budget);
            for frame in frames {
                conn.push_reply(frame);
            }
        } else if let Some(n) = lost {
            let text = format!(
                "{n} private messages sent while you were away left the server's memory \
                 before they could be delivered"
            );
            self.ctx.reply(
                conn,
                Frame::new(0, Message::error(ErrorCode::MessagesLost, text)),
            );
        }
    }
}
