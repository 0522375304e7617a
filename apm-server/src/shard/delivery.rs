//! A message's way through its shard: admitted to its conversation,
//! sequenced, handed to the store when the store is durable, then settled
//! (kept in the ring, fanned out to the channel's members, the user's
//! connections or everyone) and receipted.

use apm_core::message::{ConversationRef, Receipt};
use apm_core::{Flags, Frame, Message};
use bytes::Bytes;

use crate::conversation::ConversationId;
use crate::metrics::Metrics;

use super::cache::Cache;
use super::command::{Audience, Command, Durable, Outgoing, Sequenced, Target};
use super::log::{Admitted, Offer};
use super::{NOBODY, Shard};

impl Shard {
    /// Admits a new message to the conversation of its target.
    pub(super) fn send(&mut self, msg: Outgoing) {
        let Outgoing {
            conn,
            request_id,
            flags,
            to,
            kind,
            msg_id,
            payload,
        } = msg;
        let hub = &*self.ctx.hub;
        if hub.cluster.is_some() {
            let origin = crate::cluster::Origin::new(
                conn,
                request_id,
                hub.config.echo || flags.contains(Flags::ECHO),
                flags.contains(Flags::RECEIPT),
            );
            return self.send_to_cluster(to, kind, msg_id, &payload, origin);
        }
        let window = hub.config.dedup_window();
        let offer = Offer {
            sender: &conn.user,
            kind,
            msg_id,
            payload: &payload,
            ts_ms: self.ctx.now_ms,
        };
        // Only channel members can ask for their own messages back.
        let (admitted, echo) = match &to {
            Target::Channel(name) => {
                let ch = self.tables.channel(hub, name);
                let conversation = ConversationId::Channel(ch.name.clone());
                let echo = hub.config.echo || flags.contains(Flags::ECHO);
                let admitted = hub
                    .sequencer
                    .admit(&mut ch.log, conversation, offer, window);
                (admitted, echo)
            }
            Target::User(user) => {
                let (user, inbox) = self.tables.inbox(hub, user);
                let admitted =
                    hub.sequencer
                        .admit(inbox, ConversationId::User(user), offer, window);
                (admitted, false)
            }
            Target::Everyone => {
                let admitted = hub.sequencer.admit(
                    &mut self.tables.broadcasts,
                    ConversationId::Broadcast,
                    offer,
                    window,
                );
                (admitted, false)
            }
        };
        match admitted {
            Admitted::New(record) => {
                self.ctx.messages_in += 1;
                let msg = Sequenced {
                    record,
                    from: conn,
                    request_id,
                    echo,
                    receipt: flags.contains(Flags::RECEIPT),
                };
                match &self.ctx.hub.commit {
                    Some(commit) => commit.push(self.ctx.index, msg),
                    None => self.settle(msg),
                }
            }
            Admitted::Retry {
                conversation,
                first,
                visible,
            } => {
                Metrics::add(&self.ctx.metrics().duplicates, 1);
                if !flags.contains(Flags::RECEIPT) {
                    return;
                }
                let Ok(frame) = receipt(request_id, conversation.as_ref(), first.seq, first.ts_ms)
                else {
                    return;
                };
                match &self.ctx.hub.commit {
                    // The first copy is not on disk yet: its batch, or an
                    // earlier one, is ahead of this reply in the commit
                    // queue.
                    Some(commit) if first.seq > visible => {
                        commit.reply_after(self.ctx.index, conn, frame);
                    }
                    _ => {
                        conn.push_reply(frame);
                    }
                }
            }
        }
    }

    /// Cluster mode: the message goes to Redis for its seq, and comes back
    /// through `remote.rs`.
    fn send_to_cluster(
        &mut self,
        to: Target,
        kind: u16,
        msg_id: u64,
        payload: &[u8],
        origin: crate::cluster::Origin,
    ) {
        let hub = self.ctx.hub.clone();
        let (conversation, keep) = match &to {
            Target::Channel(name) => {
                let ch = self.tables.channel(&hub, name);
                (ConversationId::Channel(ch.name.clone()), ch.keep)
            }
            Target::User(user) => {
                let (user, _) = self.tables.inbox(&hub, user);
                (ConversationId::User(user), hub.retention.default)
            }
            Target::Everyone => (ConversationId::Broadcast, hub.retention.default),
        };
        let Some(cluster) = &hub.cluster else {
            return;
        };
        let sender = origin.conn.user.clone();
        let s = crate::cluster::Submission::new(
            conversation,
            &sender,
            kind,
            msg_id,
            payload,
            keep.max_messages,
            origin,
        );
        if let Err(s) = cluster.submit(s) {
            Metrics::add(&self.ctx.metrics().cluster_refused, 1);
            let why = "the cluster's Redis is behind: message not taken, try again later";
            let frame = Frame::new(
                s.origin.request_id,
                Message::error(apm_core::ErrorCode::Internal, why),
            );
            self.ctx.reply(&s.origin.conn, frame);
        }
    }

    /// Messages the store made durable: deliver them, then the replies
    /// that waited for them.
    pub(super) fn stored(&mut self, durable: Durable) {
        for msg in durable.msgs {
            self.settle(msg);
        }
        for (conn, frame) in durable.replies {
            conn.push_reply(frame);
        }
    }

    /// Keeps a sequenced message in its ring, delivers it, and sends the
    /// receipt.
    pub(super) fn settle(&mut self, msg: Sequenced) {
        let Sequenced {
            record,
            from,
            request_id,
            echo,
            receipt: wants_receipt,
        } = msg;
        let keep = self.ctx.hub.retention.default;
        let limit = self.ctx.hub.config.outbound_bytes;
        let tables = &mut self.tables;
        match &record.conversation {
            ConversationId::Channel(name) => {
                let Some(ch) = tables.channels.get_mut(name) else {
                    return;
                };
                let before = Cache::usage(&ch.log.ring);
                ch.log.settle(&record, ch.keep);
                tables.cache.changed(before, &ch.log.ring);
                let except = if echo { NOBODY } else { from.id };
                self.ctx.fan_out(&ch.members, &record.frame, except);
                for r in &mut ch.resuming {
                    if r.conn != except {
                        r.hold(&record.frame, limit);
                    }
                }
            }
            ConversationId::User(user) => {
                if let Some(inbox) = tables.inboxes.get_mut(user) {
                    let before = Cache::usage(&inbox.ring);
                    inbox.settle(&record, keep);
                    tables.cache.changed(before, &inbox.ring);
                }
                for (waiting, r) in &mut tables.inbox_waiting {
                    if waiting == user {
                        r.hold(&record.frame, limit);
                    }
                }
                self.deliver_to_user(user, &record.frame, from.id);
                // The sender's other devices see what was sent.
                if *from.user != **user && from.user_connections() > 1 {
                    let shard = self.ctx.hub.shard_of(&from.user);
                    let to = Audience::User(from.user.clone());
                    self.forward(shard, to, &record.frame, from.id);
                }
            }
            ConversationId::Broadcast => {
                let before = Cache::usage(&tables.broadcasts.ring);
                tables.broadcasts.settle(&record, keep);
                tables.cache.changed(before, &tables.broadcasts.ring);
                for shard in 0..self.ctx.hub.shards.len() {
                    self.forward(shard, Audience::All, &record.frame, from.id);
                }
            }
        }
        if self.tables.cache.over() {
            self.tables.tidy();
        }
        if wants_receipt
            && let Ok(frame) = receipt(
                request_id,
                record.conversation.as_ref(),
                record.seq,
                record.ts_ms,
            )
        {
            from.push_reply(frame);
        }
    }

    /// Delivers `frame` to `to` on shard `shard`: here at once, or through
    /// that shard's ingress. Never waits, so loops cannot deadlock on each
    /// other.
    pub(super) fn forward(&mut self, shard: usize, to: Audience, frame: &Bytes, except: u64) {
        if shard == self.ctx.index {
            self.deliver_here(&to, frame, except);
        } else {
            self.ctx.hub.submit_now(
                shard,
                Command::Forward {
                    to,
                    frame: frame.clone(),
                    except,
                },
            );
        }
    }

    /// Queues `frame` to the connections registered here that `to` names.
    pub(super) fn deliver_here(&self, to: &Audience, frame: &Bytes, except: u64) {
        let tables = &self.tables;
        match to {
            Audience::All => self
                .ctx
                .deliver_all(tables.users.values().flatten(), frame, except),
            Audience::User(user) => self.deliver_to_user(user, frame, except),
            Audience::PresenceChannel => {
                if let Some(ch) = tables.channels.get(apm_core::names::PRESENCE_CHANNEL) {
                    self.ctx.fan_out(&ch.members, frame, except);
                }
            }
        }
    }
}

impl Shard {
    /// Queues `frame` to every connection of `user` registered here but
    /// `except`.
    fn deliver_to_user(&self, user: &str, frame: &Bytes, except: u64) {
        if let Some(conns) = self.tables.users.get(user) {
            self.ctx.deliver_all(conns.iter(), frame, except);
        }
    }
}

/// A `Receipt` frame for a message at `seq`.
pub(super) fn receipt(
    request_id: u32,
    conversation: ConversationRef<'_>,
    seq: u64,
    ts_ms: u64,
) -> Result<Bytes, apm_core::EncodeError> {
    Frame::new(
        request_id,
        Message::Receipt(Receipt {
            conversation: conversation.to_owned(),
            seq,
            ts_ms,
        }),
    )
    .to_bytes_limited(u32::MAX)
}
