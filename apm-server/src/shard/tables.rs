//! A shard's tables: its channels (members and log), its users'
//! connections, its users' inboxes, the broadcasts (on the shard that
//! owns them) and the sorted index of occupied channels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use apm_core::message::Conversation;

use crate::conversation::ConversationId;
use crate::fanout::Members;
use crate::hub::Hub;
use crate::outbox::Conn;
use crate::retention::Retention;

use super::log::Log;
use crate::fast_map::HashMap;

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
    /// What history it keeps (the rule for its name, or the default).
    pub(super) keep: Retention,
}

/// Everything one shard owns. Only its loop touches it.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub(super) channels: HashMap<Arc<str>, Channel>,
    /// User -> its connections registered here.
    pub(super) users: BTreeMap<Arc<str>, Vec<Arc<Conn>>>,
    /// Each user's private conversation.
    pub(super) inboxes: HashMap<Arc<str>, Log>,
    pub(super) broadcasts: Log,
    /// Channels with at least one member, sorted, for paged listings.
    pub(super) occupied: BTreeSet<Arc<str>>,
}

impl Tables {
    /// The channel `name`, made on first use.
    pub(super) fn channel(&mut self, hub: &Hub, name: &str) -> &mut Channel {
        if !self.channels.contains_key(name) {
            let name: Arc<str> = Arc::from(name);
            let channel = Channel {
                name: name.clone(),
                log: Log::default(),
                members: Members::default(),
                users: BTreeMap::new(),
                join_leave: hub.config.join_leave_for(&name),
                keep: hub.retention.for_channel(&name),
            };
            self.channels.insert(name, channel);
        }
        self.channels.get_mut(name).expect("inserted above")
    }

    /// `user`'s inbox, made on first use, with the user's shared name.
    pub(super) fn inbox(&mut self, user: &str) -> (Arc<str>, &mut Log) {
        let user = match self.inboxes.get_key_value(user) {
            Some((user, _)) => user.clone(),
            None => {
                let user: Arc<str> = Arc::from(user);
                self.inboxes.insert(user.clone(), Log::default());
                user
            }
        };
        let log = self.inboxes.get_mut(&user).expect("made above");
        (user, log)
    }

    pub(super) fn log(&self, conversation: &Conversation) -> Option<&Log> {
        match conversation {
            Conversation::Channel(c) => self.channels.get(c.as_str()).map(|ch| &ch.log),
            Conversation::User(u) => self.inboxes.get(u.as_str()),
            Conversation::Broadcast => Some(&self.broadcasts),
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
