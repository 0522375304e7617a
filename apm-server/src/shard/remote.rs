//! Cluster mode's way in: messages Redis sequenced, from this node's link
//! (with the connection that sent them) or from the feed (every node's),
//! delivered in seq order. The next seq goes out at once, followed by any
//! held behind it; one further on is held while the gap before it is read
//! from the conversation's stream; one already delivered is dropped (the
//! feed brings this node's own messages back, too).
//!
//! What waits behind gaps draws from a byte budget per shard (an eighth
//! of `--memory-budget`, shared by the shards). Past it a message is let
//! go, not lost: it is in its conversation's stream, and is read from
//! there once what is before it went out. A let-go message of this node
//! keeps its sender's connection, so its receipt still goes out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cluster::{Origin, Remote, wire};
use crate::conversation::ConversationId;
use crate::metrics::Metrics;

use super::command::{Audience, Command, Sequenced};
use super::log::Log;
use super::{NOBODY, Shard};

/// Messages of one conversation waiting for a gap before them to fill.
#[derive(Debug, Default)]
pub(crate) struct Held {
    msgs: BTreeMap<u64, Remote>,
    /// A read of the gap is under way.
    filling: bool,
    /// The highest seq let go for lack of room: read from the stream
    /// once everything before it went out.
    beyond: u64,
    /// This node's messages let go for lack of room: who sent them, and
    /// their time, for the receipt.
    origins: BTreeMap<u64, (Origin, u64)>,
}

/// A shard's held messages, and their bytes.
#[derive(Debug, Default)]
pub(crate) struct HeldRemote {
    by: HashMap<ConversationId, Held>,
    bytes: usize,
}

impl Shard {
    /// A sequenced message for a conversation owned here.
    pub(super) fn remote(&mut self, mut r: Remote) {
        let conversation = r.record.conversation.clone();
        let seq = r.record.seq;
        if r.origin.is_none()
            && let Some(held) = self.tables.held.by.get_mut(&conversation)
        {
            r.origin = held.origins.remove(&seq).map(|(origin, _)| origin);
        }
        let visible = self.arriving(&conversation, seq);
        if seq <= visible {
            self.already_delivered(r);
            return;
        }
        if seq > visible + 1 {
            let limit = self.held_limit();
            let all = &mut self.tables.held;
            let held = all.by.entry(conversation.clone()).or_default();
            let size = r.record.frame.len();
            if all.bytes + size > limit {
                Metrics::add(&self.ctx.metrics().cluster_held_let_go, 1);
                held.beyond = held.beyond.max(seq);
                if let Some(origin) = r.origin {
                    held.origins.insert(seq, (origin, r.record.ts_ms));
                }
            } else if let Some(before) = held.msgs.insert(seq, r) {
                all.bytes = all.bytes + size - before.record.frame.len();
            } else {
                all.bytes += size;
            }
            if !held.filling {
                held.filling = true;
                let hub = self.ctx.hub.clone();
                if let Some(cluster) = &hub.cluster {
                    cluster.fill(&hub, conversation, visible + 1, seq - 1);
                }
            }
            return;
        }
        self.settle_remote(r);
        self.release_held(&conversation);
    }

    /// A message from the feed, for a conversation owned here (or, with
    /// `sender_copy`, sent by a user owned here). Only what concerns this
    /// node is decoded: a channel or an inbox it holds, a user connected
    /// here, a broadcast. What nobody here holds is skipped: a node that
    /// takes the conversation up later starts from Redis.
    pub(super) fn published(&mut self, seq: u64, body: bytes::Bytes, sender_copy: bool) {
        let Some((key, sender)) = wire::head(&body) else {
            tracing::warn!("a published message does not read back; skipped");
            return;
        };
        if sender_copy {
            if self.tables.users.contains_key(sender)
                && let Some(record) = wire::record(seq, &body)
            {
                let to = Audience::User(Arc::from(sender));
                self.deliver_here(&to, &record.frame, NOBODY);
            }
            return;
        }
        let tables = &self.tables;
        let delivered = match key.split_at_checked(1) {
            Some(("#", name)) => tables.channels.get(name).map(|ch| ch.log.visible),
            Some(("@", name)) => tables.inboxes.get(name).map(|log| log.visible),
            _ => (tables.broadcasts.seq > 0).then_some(tables.broadcasts.visible),
        };
        if delivered.is_some_and(|visible| seq <= visible) {
            // This node's own message coming back, most often: dropped
            // before it is decoded.
            Metrics::add(&self.ctx.metrics().cluster_copies, 1);
            return;
        }
        let concerns = match key.split_at_checked(1) {
            Some(("#", name)) => tables.channels.contains_key(name),
            Some(("@", name)) => {
                let held = tables.inboxes.contains_key(name) || tables.users.contains_key(name);
                if !held && sender != name {
                    // The recipient is elsewhere; the sender may be here.
                    let shard = self.ctx.hub.shard_of(sender);
                    if shard == self.ctx.index {
                        self.published(seq, body, true);
                    } else {
                        let cmd = Command::Published {
                            seq,
                            body,
                            sender_copy: true,
                        };
                        self.ctx.hub.submit_now(shard, cmd);
                    }
                    return;
                }
                held
            }
            _ => true,
        };
        if !concerns {
            return;
        }
        match wire::record(seq, &body) {
            Some(record) => self.remote(Remote {
                record,
                origin: None,
            }),
            None => tracing::warn!("a published message does not read back; skipped"),
        }
    }

    /// The feed was down: asks for what each conversation with someone
    /// here (a channel's members, a connected user's inbox, the
    /// broadcasts) has past what was delivered.
    pub(super) fn catch_up(&mut self) {
        let hub = self.ctx.hub.clone();
        let Some(cluster) = &hub.cluster else {
            return;
        };
        let tables = &self.tables;
        for name in &tables.occupied {
            if let Some(ch) = tables.channels.get(name) {
                let c = ConversationId::Channel(ch.name.clone());
                cluster.catch_up(&hub, c, ch.log.visible + 1);
            }
        }
        for user in tables.users.names().iter() {
            if let Some(inbox) = tables.inboxes.get(user) {
                let c = ConversationId::User(user.clone());
                cluster.catch_up(&hub, c, inbox.visible + 1);
            }
        }
        if tables.broadcasts.seq > 0 {
            let from = tables.broadcasts.visible + 1;
            cluster.catch_up(&hub, ConversationId::Broadcast, from);
        }
    }

    /// The read of a gap up to `to` is done: what it did not bring is
    /// gone from the stream, so delivery goes on past it. `to` is 0 when
    /// the read failed: nothing is skipped, and the gap is asked for
    /// again.
    pub(super) fn gap_read(&mut self, conversation: ConversationId, to: u64) {
        let Some(visible) = self.cluster_log(&conversation).map(|log| log.visible) else {
            return;
        };
        if let Some(held) = self.tables.held.by.get_mut(&conversation) {
            held.filling = false;
        }
        if visible < to {
            let lost = to - visible;
            Metrics::add(&self.ctx.metrics().cluster_gaps_lost, lost);
            tracing::warn!(
                conversation = %conversation.key(),
                lost,
                "messages missing from the cluster's stream: skipped"
            );
            if let Some(log) = self.cluster_log(&conversation) {
                log.visible = to;
                log.seq = log.seq.max(to);
            }
            // Sequenced, then trimmed before this node read it: its
            // sender still gets the receipt.
            if let Some(held) = self.tables.held.by.get_mut(&conversation) {
                let rest = held.origins.split_off(&(to + 1));
                let skipped = std::mem::replace(&mut held.origins, rest);
                for (seq, (origin, ts_ms)) in skipped {
                    receipt(&origin, &conversation, seq, ts_ms);
                }
            }
        }
        self.release_held(&conversation);
    }

    /// Bytes this shard may hold behind gaps.
    fn held_limit(&self) -> usize {
        let config = self.ctx.config();
        (config.memory_budget / 8 / self.ctx.hub.shards.len().max(1)).max(64 * 1024)
    }

    /// Delivers what waited behind the last delivered seq, as far as it
    /// runs without a gap; asks for the next gap if one is left.
    fn release_held(&mut self, conversation: &ConversationId) {
        loop {
            let Some(visible) = self.cluster_log(conversation).map(|log| log.visible) else {
                return;
            };
            let all = &mut self.tables.held;
            let Some(held) = all.by.get_mut(conversation) else {
                return;
            };
            // Anything at or below what is delivered is a copy.
            if let Some(entry) = held.msgs.first_entry()
                && *entry.key() <= visible
            {
                let copy = entry.remove();
                all.bytes -= copy.record.frame.len();
                self.already_delivered(copy);
                continue;
            }
            let Some(first) = held.msgs.first_key_value().map(|(seq, _)| *seq) else {
                if held.beyond > visible {
                    // What was let go is next: read it from the stream.
                    if !held.filling {
                        held.filling = true;
                        let hub = self.ctx.hub.clone();
                        if let Some(cluster) = &hub.cluster {
                            cluster.fill(&hub, conversation.clone(), visible + 1, held.beyond);
                        }
                    }
                    return;
                }
                for (seq, (origin, ts_ms)) in std::mem::take(&mut held.origins) {
                    receipt(&origin, conversation, seq, ts_ms);
                }
                all.by.remove(conversation);
                return;
            };
            if first > visible + 1 {
                if !held.filling {
                    held.filling = true;
                    Metrics::add(&self.ctx.metrics().cluster_gaps, 1);
                    let hub = self.ctx.hub.clone();
                    if let Some(cluster) = &hub.cluster {
                        cluster.fill(&hub, conversation.clone(), visible + 1, first - 1);
                    }
                }
                return;
            }
            let next = held
                .msgs
                .pop_first()
                .map(|(_, r)| r)
                .expect("looked at above");
            all.bytes -= next.record.frame.len();
            self.settle_remote(next);
        }
    }

    /// A message this node delivered already: only its receipt is owed,
    /// when it came from here.
    fn already_delivered(&mut self, r: Remote) {
        Metrics::add(&self.ctx.metrics().cluster_copies, 1);
        if let Some(origin) = r.origin {
            receipt(
                &origin,
                &r.record.conversation,
                r.record.seq,
                r.record.ts_ms,
            );
        }
    }

    /// Delivers the next message of its conversation, as the owning loop
    /// of a single node would.
    fn settle_remote(&mut self, r: Remote) {
        let Remote { record, origin } = r;
        if let Some(log) = self.cluster_log(&record.conversation) {
            log.seq = log.seq.max(record.seq);
        }
        let sender_devices = match (&record.conversation, &origin) {
            // Sent from another node: the sender's devices here see it too.
            (ConversationId::User(user), None) => crate::ring::origin(&record.frame)
                .map(|(sender, _)| sender)
                .filter(|sender| **sender != **user),
            _ => None,
        };
        let frame = record.frame.clone();
        let (msg, waiting) = match origin {
            Some(Origin {
                conn,
                request_id,
                echo,
                receipt,
                waiting,
            }) => {
                self.ctx.messages_in += 1;
                let msg = Sequenced {
                    record,
                    from: conn,
                    request_id,
                    echo,
                    receipt,
                };
                (msg, Some(waiting))
            }
            None => {
                let msg = Sequenced {
                    record,
                    from: self.nobody.clone(),
                    request_id: 0,
                    echo: true,
                    receipt: false,
                };
                (msg, None)
            }
        };
        self.settle(msg);
        // The receipt is queued: the sender's connection may close.
        drop(waiting);
        if let Some(sender) = sender_devices {
            let shard = self.ctx.hub.shard_of(&sender);
            self.forward(shard, Audience::User(Arc::from(sender)), &frame, NOBODY);
        }
    }

    /// The last delivered seq of `conversation`, into which a message
    /// `seq` arrives. A conversation this node does not hold yet starts
    /// just before it: nobody here has seen any of it, and what came
    /// before is history, in Redis.
    fn arriving(&mut self, conversation: &ConversationId, seq: u64) -> u64 {
        let held = match conversation {
            ConversationId::Channel(name) => self.tables.channels.contains_key(&**name),
            ConversationId::User(user) => self.tables.inboxes.contains_key(&**user),
            ConversationId::Broadcast => self.tables.broadcasts.seq > 0,
        };
        let log = self.cluster_log(conversation).expect("made on first use");
        if !held {
            log.visible = seq - 1;
            log.seq = log.seq.max(seq - 1);
        }
        log.visible
    }

    /// The log of a conversation owned here, made on first use (with its
    /// last seq from Redis).
    fn cluster_log(&mut self, conversation: &ConversationId) -> Option<&mut Log> {
        let hub = self.ctx.hub.clone();
        Some(match conversation {
            ConversationId::Channel(name) => &mut self.tables.channel(&hub, name).log,
            ConversationId::User(user) => self.tables.inbox(&hub, user).1,
            ConversationId::Broadcast => &mut self.tables.broadcasts,
        })
    }
}

/// The receipt of a message this node took, when its sender asked for one.
fn receipt(origin: &Origin, conversation: &ConversationId, seq: u64, ts_ms: u64) {
    if origin.receipt
        && let Ok(frame) =
            super::delivery::receipt(origin.request_id, conversation.as_ref(), seq, ts_ms)
    {
        origin.conn.push_reply(frame);
    }
}
