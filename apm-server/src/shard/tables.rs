//! A shard's tables: its channels (members and log), its users'
//! connections, its users' inboxes, the broadcasts (on the shard that
//! owns them) and the sorted index of occupied channels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use apm_core::message::Conversation;
use bytes::Bytes;

use crate::conversation::ConversationId;
use crate::fanout::Members;
use crate::hub::Hub;
use crate::retention::Retention;

use super::cache::Cache;
use super::grace::{Departed, Presumed};
use super::log::Log;
use crate::fast_map::IndexMap;

/// A channel: its members and its log.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) name: Arc<str>,
    pub(super) log: Log,
    /// Connection id -> connection. An `IndexMap` keeps members in one
    /// contiguous array for the fan-out and removes in O(1).
    pub(super) members: Members,
    /// Distinct users among the members, with their connection counts.
    pub(super) users: BTreeMap<Arc<str>, u32>,
    pub(super) join_leave: bool,
    /// Connections whose `Sub since` waits for a read from the store:
    /// members once their replay is queued, with what was delivered to the
    /// channel meanwhile.
    pub(super) resuming: Vec<Resuming>,
    /// What history it keeps (the rule for its name, or the default).
    pub(super) keep: Retention,
}

/// A connection waiting to join a channel until its resume's read from
/// the store is back.
#[derive(Debug)]
pub(super) struct Resuming {
    pub(super) conn: u64,
    /// Messages delivered to the channel since the read began, held back
    /// for the replay.
    pub(super) held: Vec<Bytes>,
    pub(super) held_bytes: usize,
}

impl Resuming {
    /// Holds `frame` back for the replay; past `limit` bytes only counts
    /// it, since the connection is closed as a slow consumer when the
    /// read is back.
    pub(super) fn hold(&mut self, frame: &Bytes, limit: usize) {
        self.held_bytes += frame.len();
        if self.held_bytes <= limit {
            self.held.push(frame.clone());
        }
    }
}

/// Everything one shard owns. Only its loop touches it.
#[derive(Debug)]
pub(super) struct Tables {
    pub(super) channels: IndexMap<Arc<str>, Channel>,
    /// User -> its connections registered here.
    pub(super) users: super::users::Users,
    /// Each user's private conversation.
    pub(super) inboxes: IndexMap<Arc<str>, Log>,
    pub(super) broadcasts: Log,
    /// Channels with at least one member, sorted, for paged listings.
    pub(super) occupied: BTreeSet<Arc<str>>,
    /// Connections waiting for their inbox to be read from the store, by
    /// user, with the private messages that arrived meanwhile.
    pub(super) inbox_waiting: Vec<(Arc<str>, Resuming)>,
    /// What of it stays in memory.
    pub(super) cache: Cache,
    /// Who was online before a restart, until they return or the grace
    /// period ends.
    pub(super) presumed: Presumed,
    /// Who left because of a shutdown, for the store.
    pub(super) departed: Departed,
    /// Cluster mode: messages waiting for a gap before them to fill.
    pub(super) held: super::remote::HeldRemote,
}

impl Tables {
    /// Empty tables for one shard of `hub`.
    pub(super) fn new(hub: &Hub) -> Tables {
        Tables {
            channels: IndexMap::default(),
            users: super::users::Users::default(),
            inboxes: IndexMap::default(),
            broadcasts: Log::default(),
            occupied: BTreeSet::new(),
            inbox_waiting: Vec::new(),
            cache: Cache::new(hub, hub.shards.len()),
            presumed: Presumed::default(),
            departed: Departed::default(),
            held: Default::default(),
        }
    }

    /// The channel `name`, made (or brought back into memory) on first
    /// use.
    pub(super) fn channel(&mut self, hub: &Hub, name: &str) -> &mut Channel {
        if !self.channels.contains_key(name) {
            let name: Arc<str> = Arc::from(name);
            let mut log = self.revived(hub, &ConversationId::Channel(name.clone()));
            log.used = true;
            let channel = Channel {
                name: name.clone(),
                log,
                members: Members::default(),
                resuming: Vec::new(),
                users: BTreeMap::new(),
                join_leave: hub.config.join_leave_for(&name),
                keep: hub.retention.for_channel(&name),
            };
            // Room is made before it joins, so the clock never takes it.
            self.make_room(hub.keeps_history(), 1);
            self.channels.insert(name, channel);
        }
        let ch = self.channels.get_mut(name).expect("inserted above");
        ch.log.used = true;
        ch
    }

    /// `user`'s inbox, made (or brought back into memory) on first use,
    /// with the user's shared name.
    pub(super) fn inbox(&mut self, hub: &Hub, user: &str) -> (Arc<str>, &mut Log) {
        let user = match self.inboxes.get_key_value(user) {
            Some((user, _)) => user.clone(),
            None => {
                let user: Arc<str> = Arc::from(user);
                let mut log = self.revived(hub, &ConversationId::User(user.clone()));
                log.used = true;
                self.make_room(hub.keeps_history(), 1);
                self.inboxes.insert(user.clone(), log);
                user
            }
        };
        let log = self.inboxes.get_mut(&user).expect("made above");
        log.used = true;
        (user, log)
    }

    /// Brings `conversation` back into memory if it left earlier, so a
    /// read answers from what the store holds.
    pub(super) fn resident(&mut self, hub: &Hub, conversation: &Conversation) {
        // In cluster mode a conversation may have lived on other nodes
        // only: Redis knows it.
        if !self.cache.evicted && hub.cluster.is_none() {
            return;
        }
        match conversation {
            Conversation::Channel(c) => {
                self.channel(hub, c);
            }
            Conversation::User(u) => {
                self.inbox(hub, u);
            }
            Conversation::Broadcast => {}
        }
    }

    pub(super) fn log_mut(&mut self, conversation: &ConversationId) -> Option<&mut Log> {
        match conversation {
            ConversationId::Channel(c) => self.channels.get_mut(c).map(|ch| &mut ch.log),
            ConversationId::User(u) => self.inboxes.get_mut(u),
            ConversationId::Broadcast => Some(&mut self.broadcasts),
        }
    }
}
