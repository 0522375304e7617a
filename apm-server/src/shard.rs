//! A shard's forwarding loop: the only owner of its part of the session
//! dictionary (channel -> members, user -> connections), and the sequencer
//! of every conversation it owns.

use std::collections::{BTreeMap, BTreeSet};

/// Tables keyed by names clients choose: foldhash with a per-process random
/// seed (SipHash was 6% of the server's CPU in the pairs scenario).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use crate::clock::now_ms;
use std::ops::Bound;
use std::sync::Arc;

use apm_core::message::{
    Broadcast, Conversation, ConversationRef, DeliverRef, Direct, HistoryRequest, HistoryResponse,
    PresenceEvent, PresenceQuery, Publish, Receipt, SubOk, Unread, UnsubOk,
};
use apm_core::names::PRESENCE_CHANNEL;
use apm_core::{ErrorCode, Flags, Frame, Message};
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::dedup::{First, Recent, sender_hash};
use crate::fanout::{Members, deliver, fan_out};
use crate::hub::{Hub, Seed};
use crate::metrics::Metrics;
use crate::outbox::Conn;
use crate::retention::Retention;
use crate::ring::Ring;
use crate::store::commit::Durable;
use crate::store::{AckRecord, ConversationId, Record};

/// Work for a forwarding loop. Everything that touches a shard's tables
/// arrives this way, so commands from one connection take effect in the
/// order they were sent.
#[derive(Debug)]
pub(crate) enum Command {
    /// A handshake completed: add the connection to its user.
    /// `welcome` is queued to the connection first, then any private
    /// messages it has not acknowledged.
    Register {
        conn: Arc<Conn>,
        welcome: Bytes,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    /// The connection is gone.
    Unregister { conn: Arc<Conn> },
    Sub {
        conn: Arc<Conn>,
        channel: String,
        since: Option<u64>,
        request_id: u32,
    },
    History {
        conn: Arc<Conn>,
        request_id: u32,
        req: HistoryRequest,
    },
    /// `user` has `conversation` up to `seq`.
    Ack {
        user: Arc<str>,
        conversation: ConversationId,
        seq: u64,
    },
    /// Unread counts of `user` in some of the conversations owned here;
    /// each answer keeps the index it was asked with.
    Unread {
        user: Arc<str>,
        conversations: Vec<(usize, Conversation)>,
        reply: oneshot::Sender<Vec<(usize, Unread)>>,
    },
    /// Messages the store made durable, in the order they were sequenced:
    /// deliver them now, then send the replies that waited for them.
    Stored(Durable),
    /// `request_id` is `None` when a closing connection leaves: no reply.
    Unsub {
        conn: Arc<Conn>,
        channel: Arc<str>,
        request_id: Option<u32>,
    },
    Publish {
        conn: Arc<Conn>,
        request_id: u32,
        flags: Flags,
        msg: Publish,
    },
    Direct {
        conn: Arc<Conn>,
        request_id: u32,
        flags: Flags,
        msg: Direct,
    },
    Broadcast {
        conn: Arc<Conn>,
        request_id: u32,
        flags: Flags,
        msg: Broadcast,
    },
    /// A sequenced broadcast for every connection registered here.
    ToAll { frame: Bytes, except: u64 },
    /// A frame for every connection of one user registered here.
    ToUser {
        user: Arc<str>,
        except: u64,
        frame: Bytes,
    },
    /// A frame for every member of one channel owned here.
    ToChannel { channel: &'static str, frame: Bytes },
    Query {
        query: PresenceQuery,
        reply: oneshot::Sender<Answer>,
    },
}

impl Command {
    /// Whether this is a new message (what waits for a lagging disk).
    pub(crate) fn is_message(&self) -> bool {
        matches!(
            self,
            Command::Publish { .. } | Command::Direct { .. } | Command::Broadcast { .. }
        )
    }
}

/// A shard's part of the answer to a presence query.
#[derive(Debug)]
pub(crate) enum Answer {
    Connections(u32),
    /// Sorted names, at most the page size plus one.
    Names(Vec<String>),
    /// Sorted names with counts, at most the page size plus one.
    Counts(Vec<(String, u32)>),
}

/// A message sequenced and not yet delivered: with a durable store it
/// waits for its batch to be on disk, so nobody sees a message (or a
/// receipt) that a crash could take back.
#[derive(Debug)]
pub(crate) struct Sequenced {
    pub(crate) record: Record,
    /// The sending connection: told the receipt, and left out of the
    /// fan-out unless `echo`.
    from: Arc<Conn>,
    request_id: u32,
    echo: bool,
    receipt: bool,
}

/// One conversation's order, what is kept of it, and how far its readers
/// have read.
#[derive(Debug, Default)]
struct Log {
    /// The last seq assigned.
    seq: u64,
    /// The last seq delivered: with a durable store, the last one on disk.
    visible: u64,
    ring: Ring,
    /// User -> delivered up to this seq (the user's `Ack`s).
    acks: HashMap<Arc<str>, u64>,
    /// Recent client message ids, to drop retries.
    recent: Recent,
}

impl Log {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Starts from what the store read back; the retained messages'
    /// client ids count as recent, so a retry across a restart is still
    /// recognised.
    fn recovered(last: u64, messages: Vec<Record>, keep: Retention, window: usize) -> Log {
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

    fn settle(&mut self, record: &Record, keep: Retention) {
        self.visible = record.seq;
        self.ring
            .push(record.seq, record.ts_ms, record.frame.clone(), keep);
    }

    fn acked(&self, user: &str) -> u64 {
        self.acks.get(user).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct Channel {
    name: Arc<str>,
    log: Log,
    /// Connection id -> connection. An `IndexMap` keeps members in one
    /// contiguous array for the fan-out and removes in O(1).
    members: Members,
    /// Distinct users among the members, with their connection counts.
    users: BTreeMap<Arc<str>, u32>,
    join_leave: bool,
    /// What history it keeps (the rule for its name, or the default).
    keep: Retention,
}

struct ShardState {
    index: usize,
    hub: Arc<Hub>,
    channels: HashMap<Arc<str>, Channel>,
    users: BTreeMap<Arc<str>, Vec<Arc<Conn>>>,
    /// Each user's private conversation.
    inboxes: HashMap<Arc<str>, Log>,
    broadcasts: Log,
    /// Channels with at least one member, sorted, for paged listings.
    occupied: BTreeSet<Arc<str>>,
    /// Messages sequenced since the last flush to the shared counter: one
    /// atomic add per loop pass instead of one per message (a locked add
    /// right after encoding a frame stalled on the frame's stores).
    messages_in: u64,
}

fn after(cursor: &Option<String>) -> Bound<&str> {
    match cursor {
        Some(a) => Bound::Excluded(a.as_str()),
        None => Bound::Unbounded,
    }
}

/// The channel `name`, made on first use.
fn channel_entry<'a>(
    channels: &'a mut HashMap<Arc<str>, Channel>,
    hub: &Hub,
    name: &str,
) -> &'a mut Channel {
    if !channels.contains_key(name) {
        let name: Arc<str> = Arc::from(name);
        let channel = Channel {
            name: name.clone(),
            log: Log::default(),
            members: Members::default(),
            users: BTreeMap::new(),
            join_leave: hub.config.join_leave_for(&name),
            keep: hub.retention.for_channel(&name),
        };
        channels.insert(name, channel);
    }
    channels.get_mut(name).expect("inserted above")
}

/// What became of a message offered to a conversation.
enum Admitted {
    /// It is new: sequenced, stamped and encoded.
    New(Record),
    /// A retry (same sender, same client message id) of a message the
    /// conversation already has.
    Retry {
        conversation: ConversationId,
        first: First,
        visible: u64,
    },
}

/// Gives a message its seq, server time and `Deliver` frame, unless the
/// conversation saw it recently.
fn admit(
    log: &mut Log,
    conversation: ConversationId,
    sender: &Arc<str>,
    kind: u16,
    msg_id: u64,
    payload: &[u8],
    window: usize,
) -> Admitted {
    let hash = if msg_id == 0 { 0 } else { sender_hash(sender) };
    if let Some(first) = log.recent.get(sender, hash, msg_id) {
        return Admitted::Retry {
            conversation,
            first,
            visible: log.visible,
        };
    }
    let seq = log.next();
    let ts_ms = now_ms();
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
    log.recent
        .insert(sender, hash, msg_id, First { seq, ts_ms }, window);
    Admitted::New(Record {
        conversation,
        seq,
        ts_ms,
        frame,
    })
}

/// Runs shard `index`'s forwarding loop until `stop` fires and its queue
/// is empty.
pub(crate) async fn run(hub: Arc<Hub>, index: usize, stop: CancellationToken) {
    let mut state = ShardState {
        index,
        hub: hub.clone(),
        channels: HashMap::default(),
        users: BTreeMap::new(),
        inboxes: HashMap::default(),
        broadcasts: Log::default(),
        occupied: BTreeSet::new(),
        messages_in: 0,
    };
    state.seed(hub.take_seed(index));
    let ingress = &hub.shards[index];
    loop {
        let mut handled = 0usize;
        while let Some(cmd) = ingress.pop() {
            state.handle(cmd);
            handled += 1;
            if handled.is_multiple_of(512) {
                ingress.space.notify_waiters();
                state.flush_counters();
                // Let connection tasks on this worker write what was queued.
                tokio::task::yield_now().await;
            }
        }
        if handled > 0 {
            ingress.space.notify_waiters();
            state.flush_counters();
        }
        tokio::select! {
            _ = ingress.wake.notified() => {}
            _ = stop.cancelled() => {
                if ingress.is_empty() {
                    return;
                }
            }
        }
    }
}

/// Connection ids start at 1, so 0 excludes nobody.
const NOBODY: u64 = 0;

impl ShardState {
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Register {
                conn,
                welcome,
                reply,
            } => self.register(conn, welcome, reply),
            Command::Unregister { conn } => self.unregister(&conn),
            Command::Sub {
                conn,
                channel,
                since,
                request_id,
            } => self.sub(conn, channel, since, request_id),
            Command::History {
                conn,
                request_id,
                req,
            } => self.history(&conn, request_id, req),
            Command::Ack {
                user,
                conversation,
                seq,
            } => self.ack(user, conversation, seq),
            Command::Unread {
                user,
                conversations,
                reply,
            } => {
                let answers = conversations
                    .into_iter()
                    .map(|(i, c)| (i, self.unread(&user, c)))
                    .collect();
                let _ = reply.send(answers);
            }
            Command::Stored(durable) => {
                for msg in durable.msgs {
                    self.settle(msg);
                }
                for (conn, frame) in durable.replies {
                    conn.push_reply(frame);
                }
            }
            Command::Unsub {
                conn,
                channel,
                request_id,
            } => self.unsub(&conn, &channel, request_id),
            Command::Publish {
                conn,
                request_id,
                flags,
                msg,
            } => self.publish(conn, request_id, flags, msg),
            Command::Direct {
                conn,
                request_id,
                flags,
                msg,
            } => self.direct(conn, request_id, flags, msg),
            Command::Broadcast {
                conn,
                request_id,
                flags,
                msg,
            } => self.broadcast(conn, request_id, flags, msg),
            Command::ToAll { frame, except } => self.to_all(&frame, except),
            Command::ToUser {
                user,
                except,
                frame,
            } => self.to_user(&user, &frame, except),
            Command::ToChannel { channel, frame } => {
                if let Some(ch) = self.channels.get(channel) {
                    self.fan_out(&ch.members, &frame, NOBODY);
                }
            }
            Command::Query { query, reply } => {
                let _ = reply.send(self.query(query));
            }
        }
    }

    /// Adds what the loop counted locally to the shared counters.
    fn flush_counters(&mut self) {
        Metrics::add(
            &self.hub.metrics.messages_in,
            std::mem::take(&mut self.messages_in),
        );
    }

    fn metrics(&self) -> &Metrics {
        &self.hub.metrics
    }

    fn fan_out(&self, members: &Members, frame: &Bytes, except: u64) -> u64 {
        let parallel = members.len() >= self.hub.config.fanout_parallel_threshold;
        fan_out(self.metrics(), members, frame, except, parallel)
    }

    fn reply(&self, conn: &Conn, frame: Frame) {
        if let Ok(bytes) = frame.to_bytes_limited(u32::MAX) {
            conn.push_reply(bytes);
        }
    }

    /// Sends a presence event to `$presence`, wherever that channel lives.
    fn presence_event(&mut self, event: PresenceEvent) {
        let Ok(frame) = Frame::new(0, Message::PresenceEvent(event)).to_bytes_limited(u32::MAX)
        else {
            return;
        };
        let shard = self.hub.shard_of(PRESENCE_CHANNEL);
        if shard == self.index {
            self.handle(Command::ToChannel {
                channel: PRESENCE_CHANNEL,
                frame,
            });
        } else {
            self.hub.submit_now(
                shard,
                Command::ToChannel {
                    channel: PRESENCE_CHANNEL,
                    frame,
                },
            );
        }
    }

    fn register(
        &mut self,
        conn: Arc<Conn>,
        welcome: Bytes,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    ) {
        let conns = self.users.entry(conn.user.clone()).or_default();
        if conns.len() >= self.hub.config.max_connections_per_user {
            let _ = reply.send(Err(ErrorCode::TooManyUserConnections));
            return;
        }
        let user = conn.user.clone();
        conn.push_reply(welcome);
        if let Some(inbox) = self.inboxes.get_mut(&user) {
            inbox.ring.expire(now_ms(), self.hub.retention.default);
            // What arrived while the user was away (or not yet acknowledged),
            // the newest that fit the replay budget; older ones stay
            // readable as history.
            let budget = self.hub.config.outbound_bytes;
            for frame in inbox.ring.newest_within(inbox.acked(&user), budget) {
                conn.push_reply(frame.clone());
            }
        }
        let conns = self.users.get_mut(&user).expect("entry made above");
        conns.push(conn);
        let first = conns.len() == 1;
        for c in conns.iter() {
            c.set_user_connections(conns.len() as u32);
        }
        if reply.send(Ok(())).is_err() {
            // The handshake gave up; its connection will not unregister.
            if let Some(conns) = self.users.get_mut(&user) {
                conns.pop();
                if conns.is_empty() {
                    self.users.remove(&user);
                }
            }
            return;
        }
        if first {
            self.presence_event(PresenceEvent::Online {
                user: user.to_string(),
            });
        }
    }

    fn unregister(&mut self, conn: &Conn) {
        let Some(conns) = self.users.get_mut(&conn.user) else {
            return;
        };
        conns.retain(|c| c.id != conn.id);
        for c in conns.iter() {
            c.set_user_connections(conns.len() as u32);
        }
        if conns.is_empty() {
            self.users.remove(&conn.user);
            self.presence_event(PresenceEvent::Offline {
                user: conn.user.to_string(),
            });
        }
    }

    fn channel_mut(&mut self, name: &str) -> &mut Channel {
        channel_entry(&mut self.channels, &self.hub, name)
    }

    fn sub(&mut self, conn: Arc<Conn>, name: String, since: Option<u64>, request_id: u32) {
        let budget = self.hub.config.outbound_bytes;
        let ch = self.channel_mut(&name);
        ch.log.ring.expire(now_ms(), ch.keep);
        let mut joined = false;
        let mut first_member = false;
        if ch.members.insert(conn.id, conn.clone()).is_none() {
            first_member = ch.members.len() == 1;
            let count = ch.users.entry(conn.user.clone()).or_insert(0);
            *count += 1;
            joined = *count == 1 && ch.join_leave;
        }
        let seq = ch.log.visible;
        let mut oldest = ch.log.ring.oldest(seq);
        // A replay is capped at the outbound byte budget: its newest part is
        // sent, and `oldest` says where it starts (what is older is lost to
        // this resume, though still in history).
        let replay: Vec<Bytes> = match since {
            Some(since) => ch.log.ring.newest_within(since, budget).cloned().collect(),
            None => Vec::new(),
        };
        if let (Some(since), Some(first)) = (since, replay.first()) {
            let first = crate::ring::seq_of(first).unwrap_or(oldest);
            if first > since.saturating_add(1) {
                oldest = oldest.max(first);
            }
        }
        let ok = Frame::new(
            request_id,
            Message::SubOk(SubOk {
                channel: name.clone(),
                seq,
                oldest,
            }),
        );
        if let Ok(bytes) = ok.to_bytes_limited(u32::MAX) {
            conn.push_reply(bytes);
        }
        if first_member && let Some((key, _)) = self.channels.get_key_value(name.as_str()) {
            self.occupied.insert(key.clone());
        }
        // Replayed here, in the loop that sequences the channel: nothing can
        // fall between the replay and what is delivered live next.
        for frame in replay {
            conn.push_reply(frame);
        }
        if joined {
            // The joiner has its SubOk; the news is for the others.
            self.channel_event(
                &name,
                PresenceEvent::Join {
                    channel: name.clone(),
                    user: conn.user.to_string(),
                },
                conn.id,
            );
        }
    }

    fn unsub(&mut self, conn: &Conn, name: &str, request_id: Option<u32>) {
        let mut left = false;
        if let Some(ch) = self.channels.get_mut(name) {
            if ch.members.swap_remove(&conn.id).is_some()
                && let Some(count) = ch.users.get_mut(&conn.user)
            {
                *count -= 1;
                if *count == 0 {
                    ch.users.remove(&conn.user);
                    left = ch.join_leave;
                }
            }
            if ch.members.is_empty() {
                self.occupied.remove(name);
                if ch.log.seq == 0 {
                    self.channels.remove(name);
                }
            }
        }
        if let Some(request_id) = request_id {
            self.reply(
                conn,
                Frame::new(
                    request_id,
                    Message::UnsubOk(UnsubOk {
                        channel: name.to_owned(),
                    }),
                ),
            );
        }
        if left {
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

    fn channel_event(&self, name: &str, event: PresenceEvent, except: u64) {
        let Some(ch) = self.channels.get(name) else {
            return;
        };
        if ch.members.len() > self.hub.config.join_leave_max_members {
            return;
        }
        if let Ok(frame) = Frame::new(0, Message::PresenceEvent(event)).to_bytes_limited(u32::MAX) {
            self.fan_out(&ch.members, &frame, except);
        }
    }

    fn receipt(
        &self,
        conn: &Conn,
        request_id: u32,
        conversation: ConversationRef<'_>,
        seq: u64,
        ts_ms: u64,
    ) {
        self.reply(
            conn,
            Frame::new(
                request_id,
                Message::Receipt(Receipt {
                    conversation: conversation.to_owned(),
                    seq,
                    ts_ms,
                }),
            ),
        );
    }

    fn publish(&mut self, conn: Arc<Conn>, request_id: u32, flags: Flags, msg: Publish) {
        let echo = self.hub.config.echo || flags.contains(Flags::ECHO);
        let window = self.hub.config.dedup_window;
        let ch = channel_entry(&mut self.channels, &self.hub, &msg.channel);
        let conversation = ConversationId::Channel(ch.name.clone());
        let admitted = admit(
            &mut ch.log,
            conversation,
            &conn.user,
            msg.kind,
            msg.msg_id,
            &msg.payload,
            window,
        );
        self.admitted(admitted, conn, request_id, flags, echo);
    }

    fn direct(&mut self, conn: Arc<Conn>, request_id: u32, flags: Flags, msg: Direct) {
        let user = match self.inboxes.get_key_value(msg.user.as_str()) {
            Some((user, _)) => user.clone(),
            None => {
                let user: Arc<str> = Arc::from(msg.user.as_str());
                self.inboxes.insert(user.clone(), Log::default());
                user
            }
        };
        let inbox = self.inboxes.get_mut(&user).expect("made above");
        let admitted = admit(
            inbox,
            ConversationId::User(user),
            &conn.user,
            msg.kind,
            msg.msg_id,
            &msg.payload,
            self.hub.config.dedup_window,
        );
        self.admitted(admitted, conn, request_id, flags, false);
    }

    fn broadcast(&mut self, conn: Arc<Conn>, request_id: u32, flags: Flags, msg: Broadcast) {
        let admitted = admit(
            &mut self.broadcasts,
            ConversationId::Broadcast,
            &conn.user,
            msg.kind,
            msg.msg_id,
            &msg.payload,
            self.hub.config.dedup_window,
        );
        self.admitted(admitted, conn, request_id, flags, false);
    }

    fn admitted(
        &mut self,
        admitted: Admitted,
        conn: Arc<Conn>,
        request_id: u32,
        flags: Flags,
        echo: bool,
    ) {
        match admitted {
            Admitted::New(record) => self.sequenced(record, conn, request_id, flags, echo),
            Admitted::Retry {
                conversation,
                first,
                visible,
            } => {
                Metrics::add(&self.metrics().duplicates, 1);
                if !flags.contains(Flags::RECEIPT) {
                    return;
                }
                let receipt = Frame::new(
                    request_id,
                    Message::Receipt(Receipt {
                        conversation: conversation.as_ref().to_owned(),
                        seq: first.seq,
                        ts_ms: first.ts_ms,
                    }),
                );
                let Ok(frame) = receipt.to_bytes_limited(u32::MAX) else {
                    return;
                };
                match &self.hub.writer {
                    // The first copy is not on disk yet: its batch, or an
                    // earlier one, is ahead of this reply in the writer.
                    Some(writer) if first.seq > visible => {
                        writer.reply_after(self.index, conn, frame);
                    }
                    _ => {
                        conn.push_reply(frame);
                    }
                }
            }
        }
    }

    /// A message has its seq: deliver it now, or once the store has it on
    /// disk.
    fn sequenced(
        &mut self,
        record: Record,
        from: Arc<Conn>,
        request_id: u32,
        flags: Flags,
        echo: bool,
    ) {
        self.messages_in += 1;
        let msg = Sequenced {
            record,
            from,
            request_id,
            echo,
            receipt: flags.contains(Flags::RECEIPT),
        };
        match &self.hub.writer {
            Some(writer) => writer.push(self.index, msg),
            None => self.settle(msg),
        }
    }

    /// Keeps a sequenced message in its ring, delivers it, and sends the
    /// receipt.
    fn settle(&mut self, msg: Sequenced) {
        let Sequenced {
            record,
            from,
            request_id,
            echo,
            receipt,
        } = msg;
        let keep = self.hub.retention.default;
        match &record.conversation {
            ConversationId::Channel(name) => {
                let Some(ch) = self.channels.get_mut(name) else {
                    return;
                };
                ch.log.settle(&record, ch.keep);
                let except = if echo { NOBODY } else { from.id };
                let parallel = ch.members.len() >= self.hub.config.fanout_parallel_threshold;
                fan_out(
                    &self.hub.metrics,
                    &ch.members,
                    &record.frame,
                    except,
                    parallel,
                );
            }
            ConversationId::User(user) => {
                if let Some(inbox) = self.inboxes.get_mut(user) {
                    inbox.settle(&record, keep);
                }
                self.to_user(user, &record.frame, from.id);
                // The sender's other devices see what was sent.
                if *from.user != **user && from.user_connections() > 1 {
                    let shard = self.hub.shard_of(&from.user);
                    if shard == self.index {
                        self.to_user(&from.user, &record.frame, from.id);
                    } else {
                        self.hub.submit_now(
                            shard,
                            Command::ToUser {
                                user: from.user.clone(),
                                except: from.id,
                                frame: record.frame.clone(),
                            },
                        );
                    }
                }
            }
            ConversationId::Broadcast => {
                self.broadcasts.settle(&record, keep);
                for shard in 0..self.hub.shards.len() {
                    if shard == self.index {
                        self.to_all(&record.frame, from.id);
                    } else {
                        self.hub.submit_now(
                            shard,
                            Command::ToAll {
                                frame: record.frame.clone(),
                                except: from.id,
                            },
                        );
                    }
                }
            }
        }
        if receipt {
            self.receipt(
                &from,
                request_id,
                record.conversation.as_ref(),
                record.seq,
                record.ts_ms,
            );
        }
    }

    /// Starts from what the store read back.
    fn seed(&mut self, seed: Seed) {
        for c in seed.conversations {
            let keep = self.hub.retention.for_conversation(&c.conversation);
            let log = Log::recovered(c.last, c.messages, keep, self.hub.config.dedup_window);
            match c.conversation {
                ConversationId::Channel(name) => {
                    channel_entry(&mut self.channels, &self.hub, &name).log = log;
                }
                ConversationId::User(user) => {
                    self.inboxes.insert(user, log);
                }
                ConversationId::Broadcast => self.broadcasts = log,
            }
        }
        for a in seed.acks {
            if let Some(log) = self.log_mut(&a.conversation) {
                log.acks.insert(a.user, a.seq);
            }
        }
    }

    fn log_mut(&mut self, conversation: &ConversationId) -> Option<&mut Log> {
        match conversation {
            ConversationId::Channel(c) => self.channels.get_mut(c).map(|ch| &mut ch.log),
            ConversationId::User(u) => self.inboxes.get_mut(u),
            ConversationId::Broadcast => Some(&mut self.broadcasts),
        }
    }

    fn log(&self, conversation: &Conversation) -> Option<&Log> {
        match conversation {
            Conversation::Channel(c) => self.channels.get(c.as_str()).map(|ch| &ch.log),
            Conversation::User(u) => self.inboxes.get(u.as_str()),
            Conversation::Broadcast => Some(&self.broadcasts),
        }
    }

    /// Moves `user`'s read position in a conversation forward (never back,
    /// never past what was delivered).
    fn ack(&mut self, user: Arc<str>, conversation: ConversationId, seq: u64) {
        let Some(log) = self.log_mut(&conversation) else {
            return;
        };
        let seq = seq.min(log.visible);
        if seq <= log.acked(&user) {
            return;
        }
        log.acks.insert(user.clone(), seq);
        if let Some(writer) = &self.hub.writer {
            writer.push_ack(AckRecord {
                user,
                conversation,
                seq,
            });
        }
    }

    fn unread(&self, user: &str, conversation: Conversation) -> Unread {
        let (last, acked) = self
            .log(&conversation)
            .map_or((0, 0), |log| (log.visible, log.acked(user)));
        Unread {
            conversation,
            last,
            acked,
        }
    }

    fn history(&mut self, conn: &Conn, request_id: u32, req: HistoryRequest) {
        let default = self.hub.retention.default;
        let now = now_ms();
        let (ring, last, keep) = match &req.conversation {
            Conversation::Channel(c) => match self.channels.get_mut(c.as_str()) {
                Some(ch) => (Some(&mut ch.log.ring), ch.log.visible, ch.keep),
                None => (None, 0, default),
            },
            Conversation::User(u) => {
                if **u != *conn.user {
                    let refusal = Frame::new(
                        request_id,
                        Message::error(ErrorCode::Forbidden, "only your own inbox"),
                    );
                    return self.reply(conn, refusal);
                }
                match self.inboxes.get_mut(u.as_str()) {
                    Some(inbox) => (Some(&mut inbox.ring), inbox.visible, default),
                    None => (None, 0, default),
                }
            }
            Conversation::Broadcast => (
                Some(&mut self.broadcasts.ring),
                self.broadcasts.visible,
                default,
            ),
        };
        let limit = req.limit.min(self.hub.config.history_page_max) as usize;
        let (oldest, mut messages) = match ring {
            Some(ring) => {
                ring.expire(now, keep);
                (ring.oldest(last), ring.page(req.before, req.after, limit))
            }
            None => (last + 1, Vec::new()),
        };
        // A page must fit in a frame: drop from the far end until it does.
        let max = self.hub.config.max_frame_len as usize;
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
        self.reply(conn, Frame::new(request_id, response));
    }

    fn to_all(&self, frame: &Bytes, except: u64) {
        let metrics = self.metrics();
        let n: u64 = self
            .users
            .values()
            .flatten()
            .map(|c| deliver(metrics, c, frame, except))
            .sum();
        Metrics::add(&metrics.messages_out, n);
    }

    fn to_user(&self, user: &str, frame: &Bytes, except: u64) {
        if let Some(conns) = self.users.get(user) {
            let metrics = self.metrics();
            let n: u64 = conns
                .iter()
                .map(|c| deliver(metrics, c, frame, except))
                .sum();
            Metrics::add(&metrics.messages_out, n);
        }
    }

    fn query(&self, query: PresenceQuery) -> Answer {
        match query {
            PresenceQuery::IsOnline { user } => {
                Answer::Connections(self.users.get(user.as_str()).map_or(0, |c| c.len() as u32))
            }
            PresenceQuery::OnlineUsers { after: a, limit } => Answer::Names(
                self.users
                    .range::<str, _>((after(&a), Bound::Unbounded))
                    .take(limit as usize + 1)
                    .map(|(u, _)| u.to_string())
                    .collect(),
            ),
            PresenceQuery::ChannelMembers {
                channel,
                after: a,
                limit,
            } => Answer::Names(
                self.channels
                    .get(channel.as_str())
                    .map_or_else(Vec::new, |ch| {
                        ch.users
                            .range::<str, _>((after(&a), Bound::Unbounded))
                            .take(limit as usize + 1)
                            .map(|(u, _)| u.to_string())
                            .collect()
                    }),
            ),
            PresenceQuery::Channels { after: a, limit } => Answer::Counts(
                self.occupied
                    .range::<str, _>((after(&a), Bound::Unbounded))
                    .take(limit as usize + 1)
                    .map(|name| {
                        let users = self.channels.get(name).map_or(0, |ch| ch.users.len());
                        (name.to_string(), users as u32)
                    })
                    .collect(),
            ),
            PresenceQuery::MyChannels => Answer::Names(Vec::new()),
        }
    }
}
