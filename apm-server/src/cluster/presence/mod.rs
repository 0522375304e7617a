//! Presence across the cluster. Each node counts its users' connections
//! and its channels' members in Redis, under a lease it renews every third
//! of `--presence-ttl-ms`; the cluster's counts are the sum. Only a count
//! that leaves or reaches zero cluster-wide is news: the script that
//! changes it publishes the online, offline, join or leave event, and
//! every node hands it to its own members (`feed.rs`). A node whose lease
//! lapsed (killed, or cut off from Redis) is taken off by the first node
//! to notice, its users and members announced gone where no other node
//! holds them.
//!
//! A node stopping gracefully leaves its counts to lapse with its lease:
//! users who moved to another node meanwhile are never announced gone, nor
//! back. A node that lost its lease, or does not know what Redis made of
//! its last changes, syncs: it sets its counts to what it holds.
//!
//! - `script`: the scripts, and where the counts live.
//! - `events`: the published events, read back.
//! - `query`: presence questions answered from Redis.

mod events;
pub(crate) mod query;
mod script;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::Hub;
use crate::metrics::Metrics;

pub(crate) use events::{Event, parse};

/// Where the scripts publish presence events.
pub(crate) const EVENTS: &str = "apm:p:events";

/// Counts sent to Redis in one script call at most.
const CHUNK: usize = 512;

/// Entries of a lapsed node taken off per script call.
const REAP_CHUNK: usize = 512;

/// A (channel, user) pair.
type Member = (Arc<str>, Arc<str>);

/// Connections per user and per member, with the latest joining
/// connection: as changes not yet sent to Redis (negative when more went
/// than came), or as what the node holds (what a sync sets).
#[derive(Debug, Default)]
struct Counts {
    users: HashMap<Arc<str>, i64>,
    members: HashMap<Member, (i64, u64)>,
}

/// A node's presence in the cluster: shards record changes here, and
/// [`run`] sends them.
#[derive(Debug)]
pub(crate) struct Presence {
    node: String,
    lease: Duration,
    pending: Mutex<Counts>,
    wake: Notify,
}

impl Presence {
    /// A node's presence under a lease of `lease`, with a name of its own.
    pub(crate) fn new(lease: Duration) -> Presence {
        use std::hash::BuildHasher;
        let random =
            std::collections::hash_map::RandomState::new().hash_one(crate::clock::now_ms());
        Presence {
            node: format!("{}-{random:016x}", std::process::id()),
            lease,
            pending: Mutex::new(Counts::default()),
            wake: Notify::new(),
        }
    }

    /// The node's name in the cluster.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// `delta` connections of `user` came (positive) or went.
    pub(crate) fn user(&self, user: &Arc<str>, delta: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending.users.entry(user.clone()).or_default() += delta;
        drop(pending);
        self.wake.notify_one();
    }

    /// Connection `conn` of `user` joined (`delta` 1) or left (-1)
    /// `channel`.
    pub(crate) fn member(&self, channel: &Arc<str>, user: &Arc<str>, delta: i64, conn: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending
            .members
            .entry((channel.clone(), user.clone()))
            .or_default();
        entry.0 += delta;
        if delta > 0 {
            entry.1 = conn;
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> Counts {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Counts {
    /// Adds `changes`; what falls to zero goes.
    fn add(&mut self, changes: &Counts) {
        for (user, d) in &changes.users {
            let n = self.users.entry(user.clone()).or_default();
            *n += d;
            if *n <= 0 {
                self.users.remove(user);
            }
        }
        for (member, (d, conn)) in &changes.members {
            let n = self.members.entry(member.clone()).or_default();
            n.0 += d;
            if *conn != 0 {
                n.1 = *conn;
            }
            if n.0 <= 0 {
                self.members.remove(member);
            }
        }
    }
}

/// The scripts, loaded once.
struct Scripts {
    apply: redis::Script,
    reap: redis::Script,
    sync_begin: redis::Script,
    sync_set: redis::Script,
    sync_end: redis::Script,
}

/// Sends the node's changes and renews its lease until `finish` fires
/// (the node has no clients left); then the lease lapses by itself. From
/// `stopping` on (the node drains), changes are no longer sent, only the
/// lease renewed: a client leaving a draining node may be on another node
/// already, and its leaving here must not reach Redis before its coming
/// there.
pub(super) async fn run(
    hub: Arc<Hub>,
    mut conn: ConnectionManager,
    stopping: CancellationToken,
    finish: CancellationToken,
) {
    let Some(presence) = hub.cluster.as_ref().map(|c| c.presence.clone()) else {
        return;
    };
    let scripts = Scripts {
        apply: redis::Script::new(&script::apply()),
        reap: redis::Script::new(&script::reap()),
        sync_begin: redis::Script::new(&script::sync_begin()),
        sync_set: redis::Script::new(&script::sync_set()),
        sync_end: redis::Script::new(&script::sync_end()),
    };
    let mut held = Counts::default();
    let mut synced = false;
    let mut ticks = tokio::time::interval(presence.lease / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = finish.cancelled() => return,
            _ = presence.wake.notified(), if !stopping.is_cancelled() => {}
            _ = ticks.tick() => {}
        }
        let mut changes = presence.take();
        if stopping.is_cancelled() {
            changes = Counts::default();
        }
        held.add(&changes);
        if !synced {
            match sync(&mut conn, &scripts, &presence, &held).await {
                Ok(()) => synced = true,
                Err(e) => warn!(error = %e, "presence not synced with the cluster; trying again"),
            }
            continue;
        }
        let open = hub
            .metrics
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed);
        match apply(&mut conn, &scripts, &presence, &changes, open).await {
            Ok(Applied::Lapsed(nodes)) => {
                for node in nodes {
                    reap(&hub, &mut conn, &scripts, &node).await;
                }
            }
            Ok(Applied::Lost) => {
                warn!("this node's presence lease lapsed: syncing");
                synced = false;
                presence.wake.notify_one();
            }
            Err(e) => {
                // Whether Redis applied the changes is not known: the
                // next round sets the counts whole.
                warn!(error = %e, "presence changes not sent to the cluster; syncing");
                synced = false;
            }
        }
    }
}

/// What an apply call answered.
enum Applied {
    /// Nodes whose lease lapsed.
    Lapsed(Vec<String>),
    /// This node's lease is gone: it must sync.
    Lost,
}

/// Sends `changes` (in chunks), renewing the lease.
async fn apply(
    conn: &mut ConnectionManager,
    scripts: &Scripts,
    presence: &Presence,
    changes: &Counts,
    open: u64,
) -> redis::RedisResult<Applied> {
    let users: Vec<(&Arc<str>, i64)> = changes
        .users
        .iter()
        .filter(|(_, d)| **d != 0)
        .map(|(u, d)| (u, *d))
        .collect();
    let members: Vec<(&Member, (i64, u64))> = changes
        .members
        .iter()
        .filter(|(_, (d, _))| *d != 0)
        .map(|(m, v)| (m, *v))
        .collect();
    let mut lapsed = Vec::new();
    let mut calls: Vec<_> = chunks(&users, &members).collect();
    if calls.is_empty() {
        // With nothing to send, one call renews the lease.
        calls.push((&users[..], &members[..]));
    }
    for (users, members) in calls {
        let mut call = scripts.apply.prepare_invoke();
        args(&mut call, presence, open, users, members);
        let answer: redis::Value = call.invoke_async(conn).await?;
        match answer {
            redis::Value::Int(-1) => return Ok(Applied::Lost),
            redis::Value::Array(nodes) => {
                for node in nodes {
                    if let Ok(node) = redis::from_redis_value::<String>(node)
                        && !lapsed.contains(&node)
                    {
                        lapsed.push(node);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Applied::Lapsed(lapsed))
}

/// Sets the node's counts in Redis to what it holds.
async fn sync(
    conn: &mut ConnectionManager,
    scripts: &Scripts,
    presence: &Presence,
    held: &Counts,
) -> redis::RedisResult<()> {
    let lease = presence.lease.as_millis() as u64;
    scripts
        .sync_begin
        .arg(&presence.node)
        .arg(lease)
        .invoke_async::<i64>(conn)
        .await?;
    let users: Vec<(&Arc<str>, i64)> = held.users.iter().map(|(u, n)| (u, *n)).collect();
    let members: Vec<(&Member, (i64, u64))> = held.members.iter().map(|(m, v)| (m, *v)).collect();
    for (users, members) in chunks(&users, &members) {
        let mut call = scripts.sync_set.prepare_invoke();
        args(&mut call, presence, 0, users, members);
        call.invoke_async::<i64>(conn).await?;
    }
    scripts
        .sync_end
        .arg(&presence.node)
        .invoke_async::<i64>(conn)
        .await?;
    info!(
        node = presence.node,
        users = held.users.len(),
        members = held.members.len(),
        "presence synced with the cluster"
    );
    Ok(())
}

/// Takes a lapsed node's users and members off, a chunk per call.
async fn reap(hub: &Hub, conn: &mut ConnectionManager, scripts: &Scripts, node: &str) {
    let mut calls = 0;
    loop {
        let left: redis::RedisResult<i64> = scripts
            .reap
            .arg(node)
            .arg(REAP_CHUNK)
            .invoke_async(conn)
            .await;
        calls += 1;
        match left {
            Ok(0) => break,
            Ok(_) if calls < 10_000 => {}
            Ok(left) => {
                warn!(
                    node,
                    left, "a lapsed node is not taken off yet; going on later"
                );
                return;
            }
            Err(e) => {
                warn!(error = %e, node, "a lapsed node could not be taken off; trying later");
                return;
            }
        }
    }
    Metrics::add(&hub.metrics.cluster_nodes_lapsed, 1);
    info!(
        node,
        "a node's presence lease lapsed: its users and members are taken off"
    );
}

/// Pairs of user and member slices of at most [`CHUNK`] entries together.
fn chunks<'a, U, M>(users: &'a [U], members: &'a [M]) -> impl Iterator<Item = (&'a [U], &'a [M])> {
    let user_chunks = users.chunks(CHUNK).map(move |u| (u, &members[..0]));
    let member_chunks = members.chunks(CHUNK).map(move |m| (&users[..0], m));
    user_chunks.chain(member_chunks)
}

/// A call's arguments: node, lease, user count, the node's open
/// connections, users, members.
fn args(
    call: &mut redis::ScriptInvocation<'_>,
    presence: &Presence,
    open: u64,
    users: &[(&Arc<str>, i64)],
    members: &[(&Member, (i64, u64))],
) {
    call.arg(&presence.node)
        .arg(presence.lease.as_millis() as u64)
        .arg(users.len())
        .arg(open);
    for (user, n) in users {
        call.arg(&***user).arg(*n);
    }
    for ((channel, user), (n, conn)) in members {
        call.arg(&**channel).arg(&**user).arg(*n).arg(*conn);
    }
}
