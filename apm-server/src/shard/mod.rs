//! A shard: one forwarding loop, the only owner of its part of the
//! session dictionary (channel -> members, user -> connections) and the
//! sequencer of every conversation it owns.
//!
//! - [`command`]: what the loop is asked to do, and the records of a
//!   message on its way.
//! - [`log`]: one conversation's order, retained messages and retries.
//! - [`delivery`]: a message from admission to the members' outboxes.
//! - [`reads`]: history pages, read positions, unread counts, recovery.
//! - [`presence`]: connections and subscriptions coming and going, and
//!   the queries about them.
//! - [`ask`]: questions for several shards, asked from outside the loops.

pub(crate) mod ask;
mod cache;
pub(crate) mod command;
mod delivery;
mod grace;
mod inbox;
pub(crate) mod log;
mod presence;
mod reads;
mod remote;
mod resume;
pub(crate) mod sequencer;
mod tables;
#[cfg(test)]
mod tests;
mod users;

use std::sync::Arc;

use apm_core::Frame;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub(crate) use command::{Asker, Audience, Command, Outgoing, Target};

use crate::config::Config;
use crate::fanout::{Members, deliver, fan_out};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Conn;
use tables::Tables;

/// Connection ids start at 1, so 0 excludes nobody.
pub(crate) const NOBODY: u64 = 0;

/// What a shard's methods need besides its tables: the shared hub and the
/// counters the loop keeps locally.
#[derive(Debug)]
struct Ctx {
    index: usize,
    hub: Arc<Hub>,
    /// Messages sequenced since the last flush to the shared counter: one
    /// atomic add per loop pass instead of one per message (a locked add
    /// right after encoding a frame stalled on the frame's stores).
    messages_in: u64,
    /// The time messages are stamped with: read once per pass of the loop
    /// (a few hundred messages at most) rather than once per message.
    now_ms: u64,
}

impl Ctx {
    fn config(&self) -> &Config {
        &self.hub.config
    }

    fn metrics(&self) -> &Metrics {
        &self.hub.metrics
    }

    /// Queues `frame` to every member but `except`, across threads for a
    /// large channel.
    fn fan_out(&self, members: &Members, frame: &Bytes, except: u64) -> u64 {
        let parallel = members.len() >= self.config().fanout_parallel_threshold;
        fan_out(self.metrics(), members, frame, except, parallel)
    }

    /// Queues `frame` to each of `conns` but `except`.
    fn deliver_all<'a>(
        &self,
        conns: impl Iterator<Item = &'a Arc<Conn>>,
        frame: &Bytes,
        except: u64,
    ) {
        let metrics = self.metrics();
        let n: u64 = conns.map(|c| deliver(metrics, c, frame, except)).sum();
        Metrics::add(&metrics.messages_out, n);
    }

    /// Queues an answer to a request (outside the slow-consumer bound).
    fn reply(&self, conn: &Conn, frame: Frame) {
        if let Ok(bytes) = frame.to_bytes_limited(u32::MAX) {
            conn.push_reply(bytes);
        }
    }

    /// Adds what the loop counted locally to the shared counters.
    fn flush_counters(&mut self) {
        Metrics::add(
            &self.hub.metrics.messages_in,
            std::mem::take(&mut self.messages_in),
        );
    }
}

/// One shard's state: its tables and its context, split so a method can
/// borrow a table mutably while it fans out through the context.
#[derive(Debug)]
pub(crate) struct Shard {
    ctx: Ctx,
    tables: Tables,
    /// The sender of messages another cluster node took: no connection
    /// here, so it is left out of nothing and told no receipt.
    nobody: Arc<Conn>,
}

impl Shard {
    /// Shard `index` of `hub`, starting from what the store read back.
    pub(crate) fn new(hub: Arc<Hub>, index: usize) -> Shard {
        let seed = hub.take_seed(index);
        let tables = Tables::new(&hub);
        let mut shard = Shard {
            ctx: Ctx {
                index,
                hub,
                messages_in: 0,
                now_ms: crate::clock::now_ms(),
            },
            tables,
            nobody: Arc::new(Conn::new(
                NOBODY,
                Arc::from(""),
                apm_core::message::Role::User,
                0,
                0,
                crate::config::SlowConsumerPolicy::Drop,
            )),
        };
        shard.seed(seed);
        shard
    }

    /// Carries out one command, then gives what it cost back to its
    /// connection's ingress allowance: answers it made are queued by then,
    /// so they count against the reply budget before the allowance frees.
    pub(crate) fn handle(&mut self, cmd: Command) {
        let cost = cmd.ingress_cost(self.ctx.config());
        match cmd {
            Command::Register {
                conn,
                welcome,
                reply,
            } => self.register(conn, welcome, reply),
            Command::Unregister { conn } => self.unregister(&conn),
            Command::Kick { user, code, reply } => {
                let conns = self.tables.users.get(&user).map_or(&[][..], Vec::as_slice);
                for conn in conns {
                    conn.close(code);
                }
                let _ = reply.send(conns.len() as u32);
            }
            Command::Sub {
                conn,
                channel,
                since,
                asker,
            } => {
                // A resume that reads the store gives its cost back once
                // its replay is queued.
                if self.sub(&conn, channel, since, asker, cost) {
                    conn.release_ingress(cost);
                }
            }
            Command::Resumed(resumed) => self.resumed(*resumed),
            Command::InboxRead(read) => self.inbox_read(*read),
            Command::Unsub {
                conn,
                channel,
                asker,
            } => {
                self.unsub(&conn, &channel, asker);
                conn.release_ingress(cost);
            }
            Command::SubscriptionsChanged { user, reply } => {
                let conns = self.tables.users.get(&user).map_or(&[][..], Vec::as_slice);
                for conn in conns {
                    conn.subscriptions_changed();
                }
                let _ = reply.send(conns.len() as u32);
            }
            Command::Send(msg) => {
                // Nothing big is answered: the message is off the queue.
                msg.conn.release_ingress(cost);
                self.send(msg);
            }
            Command::History {
                conn,
                request_id,
                req,
            } => self.history(&conn, request_id, req, cost),
            Command::Ack {
                conn,
                conversation,
                seq,
            } => {
                self.ack(conn.user.clone(), conversation, seq);
                conn.release_ingress(cost);
            }
            Command::Published {
                seq,
                body,
                sender_copy,
            } => self.published(seq, body, sender_copy),
            Command::RemoteAck {
                user,
                conversation,
                seq,
            } => self.remote_ack(user, conversation, seq),
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
            Command::Query { query, reply } => {
                let _ = reply.send(self.query(query));
            }
            Command::Stored(durable) => self.stored(durable),
            Command::Forward { to, frame, except } => self.deliver_here(&to, &frame, except),
            Command::ChannelEvent {
                channel,
                event,
                except,
            } => {
                if self
                    .tables
                    .channels
                    .get(channel.as_str())
                    .is_some_and(|ch| ch.join_leave)
                {
                    self.channel_event(&channel, event, except);
                }
            }
            Command::Remote(remote) => self.remote(*remote),
            Command::GapRead { conversation, to } => self.gap_read(conversation, to),
            Command::CatchUp => self.catch_up(),
        }
    }

    /// Adds what the loop counted locally to the shared counters.
    pub(crate) fn flush_counters(&mut self) {
        self.ctx.flush_counters();
    }

    /// Reads the clock new messages are stamped with.
    pub(crate) fn tick(&mut self) {
        self.ctx.now_ms = crate::clock::now_ms();
    }
}

/// Runs shard `index`'s forwarding loop until `stop` fires and its queue
/// is empty.
/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn run(hub: Arc<Hub>, index: usize, stop: CancellationToken) {
    let mut shard = Shard::new(hub.clone(), index);
    let ingress = &hub.shards[index];
    loop {
        let mut handled = 0usize;
        let busy = std::time::Instant::now();
        shard.tick();
        while let Some(cmd) = ingress.pop() {
            shard.handle(cmd);
            handled += 1;
            if handled.is_multiple_of(512) {
                ingress.space.notify_waiters();
                shard.flush_counters();
                // Let connection tasks on this worker write what was queued.
                tokio::task::yield_now().await;
                shard.tick();
            }
        }
        if handled > 0 {
            ingress.space.notify_waiters();
            shard.flush_counters();
            ingress.busy_ns.fetch_add(
                busy.elapsed().as_nanos() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let grace = shard.grace_deadline();
        tokio::select! {
            _ = ingress.wake.notified() => {}
            _ = stop.cancelled() => {
                if ingress.is_empty() {
                    shard.save_presence();
                    return;
                }
            }
            _ = sleep_until_some(grace) => shard.end_grace(),
        }
    }
}
