//! Who is here: connections registering with their user, joining and
//! leaving channels, the events that announce it, and the presence
//! queries a shard answers for its part of the names.

use std::ops::Bound;
use std::sync::Arc;

use apm_core::message::{PresenceEvent, PresenceQuery, SubOk, UnsubOk};
use apm_core::names::PRESENCE_CHANNEL;
use apm_core::{ErrorCode, Frame, Message};
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::outbox::Conn;

use super::cache::Cache;
use super::command::{Answer, Asker, Audience};
use super::grace;
use super::inbox::Stored;
use super::{NOBODY, Shard};

/// The range of names after a paging cursor.
fn after(cursor: &Option<String>) -> (Bound<&str>, Bound<&str>) {
    let start = match cursor {
        Some(a) => Bound::Excluded(a.as_str()),
        None => Bound::Unbounded,
    };
    (start, Bound::Unbounded)
}

impl Shard {
    /// Adds a connection to its user, queues its Welcome and what waits in
    /// its inbox, and announces the user if it was offline.
    pub(super) fn register(
        &mut self,
        conn: Arc<Conn>,
        welcome: Bytes,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    ) {
        let config = self.ctx.config();
        let held = self.tables.users.get(&conn.user).map_or(0, Vec::len);
        if held >= config.max_connections_per_user {
            let _ = reply.send(Err(ErrorCode::TooManyUserConnections));
            return;
        }
        match self.inbox_below_ring(&conn) {
            Some(read) => self.read_inbox(conn, welcome, reply, read),
            None => self.admit(conn, welcome, reply, None),
        }
    }

    /// Queues the Welcome and the inbox replay (`stored`: what was read
    /// from the store for it), then adds the connection to its user and
    /// answers the handshake.
    pub(super) fn admit(
        &mut self,
        conn: Arc<Conn>,
        welcome: Bytes,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
        stored: Option<Stored>,
    ) {
        if self.ctx.hub.revoked_until(&conn.user).is_some() {
            // Revoked while the handshake was on its way here (or while
            // its inbox was read): the revocation's kick has passed.
            let _ = reply.send(Err(ErrorCode::Revoked));
            return;
        }
        let user = conn.user.clone();
        conn.push_reply(welcome);
        self.offline_inbox(&conn, &user, stored);
        let conns = self.tables.users.add(&user, conn);
        let first = conns.len() == 1;
        for c in conns.iter() {
            c.set_user_connections(conns.len() as u32);
        }
        if reply.send(Ok(())).is_err() {
            // The handshake gave up; its connection will not unregister.
            if let Some(conns) = self.tables.users.get_mut(&user) {
                conns.pop();
                if conns.is_empty() {
                    self.tables.users.remove(&user);
                }
            }
            return;
        }
        if let Some(cluster) = self.ctx.hub.cluster_presence() {
            cluster.user(&user, 1);
        } else if first && !self.returning_user(&user) {
            self.presence_event(PresenceEvent::Online {
                user: user.to_string(),
            });
        }
    }

    /// Takes a closed connection off its user; announces the user offline
    /// with its last connection.
    pub(super) fn unregister(&mut self, conn: &Conn) {
        let Some(conns) = self.tables.users.get_mut(&conn.user) else {
            return;
        };
        let before = conns.len();
        conns.retain(|c| c.id != conn.id);
        if conns.len() == before {
            return;
        }
        for c in conns.iter() {
            c.set_user_connections(conns.len() as u32);
        }
        if let Some(cluster) = self.ctx.hub.cluster_presence() {
            // A node stopping leaves its counts to lapse with its lease.
            if !grace::in_shutdown(conn) {
                cluster.user(&conn.user, -1);
            }
            if conns.is_empty() {
                self.tables.users.remove(&conn.user);
            }
            return;
        }
        if conns.is_empty() {
            self.tables.users.remove(&conn.user);
            if grace::in_shutdown(conn) {
                // Not news: the user is presumed back after the restart.
                self.tables.departed.users.insert(conn.user.clone());
            } else {
                self.presence_event(PresenceEvent::Offline {
                    user: conn.user.to_string(),
                });
            }
        }
    }

    /// Adds a member, answers `SubOk` and replays what it missed since
    /// `since`. Returns false when the replay waits for the store (the
    /// connection joins when it is back, see `resume.rs`).
    pub(super) fn sub(
        &mut self,
        conn: &Arc<Conn>,
        name: String,
        since: Option<u64>,
        asker: Asker,
        cost: usize,
    ) -> bool {
        let budget = self.ctx.config().outbound_bytes;
        let tables = &mut self.tables;
        tables.channel(&self.ctx.hub, &name);
        let ch = tables.channels.get_mut(name.as_str()).expect("made above");
        let before = Cache::usage(&ch.log.ring);
        ch.log.ring.expire(now_ms(), ch.keep);
        tables.cache.changed(before, &ch.log.ring);
        if let (Some(since), Asker::Client(request_id)) = (since, asker)
            && self.resume_from_store(conn, &name, since, request_id, cost)
        {
            return false;
        }
        let ch = self
            .tables
            .channels
            .get_mut(name.as_str())
            .expect("made above");
        let seq = ch.log.visible;
        let oldest = ch.log.ring.oldest(seq);
        // A replay is capped at the outbound byte budget: its newest part is
        // sent, and `oldest` says where it starts (what is older is lost to
        // this resume, though still in history).
        let replay: Vec<Bytes> = match since {
            Some(since) => ch.log.ring.newest_within(since, budget).cloned().collect(),
            None => Vec::new(),
        };
        self.join(conn, &name, asker, since, oldest, replay);
        true
    }

    /// Makes `conn` a member of `name`, answers `SubOk` (`ServerSub` when
    /// the server asked) and queues the replay: `oldest` is the oldest seq
    /// that could be replayed, raised to the replay's first when the
    /// budget cut it.
    pub(super) fn join(
        &mut self,
        conn: &Arc<Conn>,
        name: &str,
        asker: Asker,
        since: Option<u64>,
        mut oldest: u64,
        replay: Vec<Bytes>,
    ) {
        let (_, key, ch) = self
            .tables
            .channels
            .get_full_mut(name)
            .expect("made by sub");
        let mut joined = false;
        let mut first_member = false;
        if ch.members.insert(conn.id, conn.clone()).is_none() {
            first_member = ch.members.len() == 1;
            let count = ch.users.entry(conn.user.clone()).or_insert(0);
            *count += 1;
            match self.ctx.hub.cluster_presence() {
                // The cluster's count decides, and its event comes back.
                Some(cluster) => cluster.member(key, &conn.user, 1, conn.id),
                None => joined = *count == 1 && ch.join_leave,
            }
        }
        let seq = ch.log.visible;
        if let (Some(since), Some(first)) = (since, replay.first()) {
            let first = crate::ring::seq_of(first).unwrap_or(oldest);
            if first > since.saturating_add(1) {
                oldest = oldest.max(first);
            }
        }
        let ok = SubOk {
            channel: name.to_owned(),
            seq,
            oldest,
        };
        match asker {
            Asker::Client(request_id) => self
                .ctx
                .reply(conn, Frame::new(request_id, Message::SubOk(ok))),
            Asker::Server => self.ctx.reply(conn, Frame::new(0, Message::ServerSub(ok))),
            Asker::Nobody => {}
        }
        if first_member && let Some((key, _)) = self.tables.channels.get_key_value(name) {
            self.tables.occupied.insert(key.clone());
        }
        // Replayed here, in the loop that sequences the channel: nothing can
        // fall between the replay and what is delivered live next.
        for frame in replay {
            conn.push_reply(frame);
        }
        if joined && !self.returning_member(name, &conn.user) {
            // The joiner has its SubOk; the news is for the others.
            self.channel_event(
                name,
                PresenceEvent::Join {
                    channel: name.to_owned(),
                    user: conn.user.to_string(),
                },
                conn.id,
            );
        }
    }

    /// Removes a member (answering `UnsubOk`, or `ServerUnsub` when the
    /// server asked); a channel with no members and no messages goes.
    pub(super) fn unsub(&mut self, conn: &Conn, name: &str, asker: Asker) {
        let mut left = false;
        let tables = &mut self.tables;
        let cluster = self.ctx.hub.cluster_presence();
        if let Some((_, key, ch)) = tables.channels.get_full_mut(name) {
            ch.resuming.retain(|r| r.conn != conn.id);
            if ch.members.swap_remove(&conn.id).is_some()
                && let Some(count) = ch.users.get_mut(&conn.user)
            {
                *count -= 1;
                if let Some(cluster) = cluster {
                    if !grace::in_shutdown(conn) {
                        cluster.member(key, &conn.user, -1, conn.id);
                    }
                    if *count == 0 {
                        ch.users.remove(&conn.user);
                    }
                } else if *count == 0 {
                    ch.users.remove(&conn.user);
                    left = ch.join_leave;
                }
            }
            if ch.members.is_empty() {
                tables.occupied.remove(name);
                if ch.log.seq == 0 && ch.resuming.is_empty() {
                    tables.channels.swap_remove(name);
                }
            }
        }
        let ok = UnsubOk {
            channel: name.to_owned(),
        };
        match asker {
            Asker::Client(request_id) => {
                self.ctx
                    .reply(conn, Frame::new(request_id, Message::UnsubOk(ok)));
            }
            Asker::Server => self
                .ctx
                .reply(conn, Frame::new(0, Message::ServerUnsub(ok))),
            Asker::Nobody => {}
        }
        if left && grace::in_shutdown(conn) {
            let member = (Arc::from(name), conn.user.clone());
            self.tables.departed.members.insert(member);
        } else if left {
            self.channel_event(
                name,
                PresenceEvent::Leave {
                    channel: name.to_owned(),
                    user: conn.user.to_string(),
                },
                NOBODY,
            );
        }
    }

    /// Sends a presence event to `$presence`, wherever that channel lives.
    pub(super) fn presence_event(&mut self, event: PresenceEvent) {
        let Ok(frame) = Frame::new(0, Message::PresenceEvent(event)).to_bytes_limited(u32::MAX)
        else {
            return;
        };
        let shard = self.ctx.hub.shard_of(PRESENCE_CHANNEL);
        self.forward(shard, Audience::PresenceChannel, &frame, NOBODY);
    }

    /// A join or leave for a channel's members, unless the channel is past
    /// the join/leave member cap.
    pub(super) fn channel_event(&self, name: &str, event: PresenceEvent, except: u64) {
        let Some(ch) = self.tables.channels.get(name) else {
            return;
        };
        if ch.members.len() > self.ctx.config().join_leave_max_members {
            return;
        }
        if let Ok(frame) = Frame::new(0, Message::PresenceEvent(event)).to_bytes_limited(u32::MAX) {
            self.ctx.fan_out(&ch.members, &frame, except);
        }
    }

    /// This shard's part of the answer to a presence query.
    pub(super) fn query(&self, query: PresenceQuery) -> Answer {
        let tables = &self.tables;
        match query {
            PresenceQuery::IsOnline { user } => Answer::Connections(
                tables
                    .users
                    .get(user.as_str())
                    .map_or(0, |c| c.len() as u32),
            ),
            PresenceQuery::OnlineUsers { after: a, limit } => Answer::Names(
                tables
                    .users
                    .names()
                    .range::<str, _>(after(&a))
                    .take(limit as usize + 1)
                    .map(|u| u.to_string())
                    .collect(),
            ),
            PresenceQuery::ChannelMembers {
                channel,
                after: a,
                limit,
            } => Answer::Names(
                tables
                    .channels
                    .get(channel.as_str())
                    .map_or_else(Vec::new, |ch| {
                        ch.users
                            .range::<str, _>(after(&a))
                            .take(limit as usize + 1)
                            .map(|(u, _)| u.to_string())
                            .collect()
                    }),
            ),
            PresenceQuery::Channels { after: a, limit } => Answer::Counts(
                tables
                    .occupied
                    .range::<str, _>(after(&a))
                    .take(limit as usize + 1)
                    .map(|name| {
                        let users = tables.channels.get(name).map_or(0, |ch| ch.users.len());
                        (name.to_string(), users as u32)
                    })
                    .collect(),
            ),
            PresenceQuery::MyChannels => Answer::Names(Vec::new()),
        }
    }
}
