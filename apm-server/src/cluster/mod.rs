//! Cluster mode: several nodes over Redis (`--cluster redis://...`, or
//! several instances comma-separated, each holding its share of the
//! conversations: `spread.rs`; each instance has its own link and feed).
//!
//! Redis gives each conversation its one order: a script per batch of
//! messages checks each one for a retry and appends it to its
//! conversation's stream (whose next id is the next seq), then publishes
//! the batch to every node (`script.rs`, sent by `link.rs`). Every node, the sender's included, delivers what is
//! published in seq order, filling a gap from the stream before going on
//! (`feed.rs`, and the shards' `remote.rs`). Redis is the store
//! (`store.rs`): the shards' rings are caches of the streams, and a
//! conversation that comes into a node's memory starts from its last seq
//! there. Without `--cluster` none of this runs.
//!
//! Presence is counted in Redis per node under a lease (`presence/`).
//!
//! - `keys`: where a conversation lives in Redis.
//! - `wire`: a message as stored and published, before and after its seq.

mod acks;
mod feed;
mod keys;
mod link;
pub(crate) mod presence;
mod script;
mod spread;
mod store;
pub(crate) mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conversation::ConversationId;
use crate::hub::Hub;
use crate::outbox::Conn;
use crate::store::Record;

pub(crate) use store::RedisStore;

/// How long a starting node waits for its feed to subscribe.
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Messages waiting for Redis past which readers wait before handing the
/// shards new ones (the bound in bytes is `max_waiting_bytes`).
const WAITING: usize = 16_384;

/// Read positions waiting for Redis at most.
const ACKS_WAITING: usize = 16_384;

/// A message a client sent, on its way to Redis for its seq.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) conversation: ConversationId,
    /// See [`wire::encode`].
    pub(crate) body: Vec<u8>,
    /// Sender and client message id, when the message has one.
    pub(crate) retry: Option<(Arc<str>, u64)>,
    pub(crate) ts_ms: u64,
    /// How many messages the conversation's stream keeps.
    pub(crate) keep: usize,
    pub(crate) origin: Origin,
}

impl Submission {
    /// Encodes a message for Redis.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conversation: ConversationId,
        sender: &Arc<str>,
        kind: u16,
        msg_id: u64,
        payload: &[u8],
        keep: usize,
        origin: Origin,
    ) -> Submission {
        let ts_ms = crate::clock::now_ms();
        let body = wire::encode(&conversation, ts_ms, sender, kind, msg_id, payload);
        Submission {
            conversation,
            body,
            retry: (msg_id != 0).then(|| (sender.clone(), msg_id)),
            ts_ms,
            keep,
            origin,
        }
    }
}

/// The connection a message came from, and what it asked.
#[derive(Debug)]
pub(crate) struct Origin {
    pub(crate) conn: Arc<Conn>,
    pub(crate) request_id: u32,
    pub(crate) echo: bool,
    pub(crate) receipt: bool,
    /// Counts the message as the connection's until it is answered.
    pub(crate) waiting: Waiting,
}

impl Origin {
    /// A message from `conn`, counted as on its way until the origin is
    /// dropped (after its receipt is queued).
    pub(crate) fn new(conn: Arc<Conn>, request_id: u32, echo: bool, receipt: bool) -> Origin {
        Origin {
            waiting: Waiting::new(conn.clone()),
            conn,
            request_id,
            echo,
            receipt,
        }
    }
}

/// One message of a connection on its way through Redis (see
/// `Conn::in_cluster`): a closing connection waits for it.
#[derive(Debug)]
pub(crate) struct Waiting(Arc<Conn>);

impl Waiting {
    fn new(conn: Arc<Conn>) -> Waiting {
        conn.cluster_taken();
        Waiting(conn)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.cluster_answered();
    }
}

/// A sequenced message for the shard that owns its conversation: from
/// this node's link (with its origin) or from the feed.
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) record: Record,
    pub(crate) origin: Option<Origin>,
}

/// A node's handle on the cluster, in its hub.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Per instance, the way to its link.
    tx: Vec<mpsc::UnboundedSender<Submission>>,
    rx: Mutex<Option<Vec<mpsc::UnboundedReceiver<Submission>>>>,
    /// Messages waiting for Redis.
    waiting: AtomicUsize,
    acks_tx: mpsc::Sender<acks::Ack>,
    acks_rx: Mutex<Option<mpsc::Receiver<acks::Ack>>>,
    clients: Vec<redis::Client>,
    /// Each instance's epoch, as this node started.
    epochs: Vec<u64>,
    /// Per instance, the node's connection for commands.
    conns: OnceLock<Vec<ConnectionManager>>,
    /// Per instance, whether its feed is subscribed (readiness).
    up: Vec<AtomicBool>,
    /// Told each time a feed subscribes.
    subscribed: tokio::sync::Notify,
    /// Redis no longer holds this node's epoch: the node stopped.
    epoch_lost: AtomicBool,
    /// Bytes of the messages waiting for Redis, and the most allowed.
    waiting_bytes: AtomicUsize,
    max_waiting_bytes: usize,
    /// The node's presence in the cluster's counts.
    pub(crate) presence: Arc<presence::Presence>,
}

impl Cluster {
    /// A handle over the Redis of `store`, letting at most
    /// `max_waiting_bytes` of messages wait for it, its presence held
    /// under a lease of `presence_lease`; nothing runs until [`start`].
    pub(crate) fn new(
        store: &RedisStore,
        max_waiting_bytes: usize,
        presence_lease: std::time::Duration,
    ) -> Cluster {
        let clients = store.clients();
        let (tx, rx) = clients.iter().map(|_| mpsc::unbounded_channel()).unzip();
        let (acks_tx, acks_rx) = mpsc::channel(ACKS_WAITING);
        Cluster {
            tx,
            rx: Mutex::new(Some(rx)),
            waiting: AtomicUsize::new(0),
            acks_tx,
            acks_rx: Mutex::new(Some(acks_rx)),
            up: clients.iter().map(|_| AtomicBool::new(false)).collect(),
            clients,
            epochs: store.epochs(),
            conns: OnceLock::new(),
            subscribed: tokio::sync::Notify::new(),
            epoch_lost: AtomicBool::new(false),
            waiting_bytes: AtomicUsize::new(0),
            max_waiting_bytes,
            presence: Arc::new(presence::Presence::new(presence_lease)),
        }
    }

    /// Queues a message for sequencing; gives it back when too many bytes
    /// wait. Readers stop handing the shards new messages well before
    /// that ([`Cluster::has_room`]): only what the shards' queues held
    /// already can get this far.
    pub(crate) fn submit(&self, s: Submission) -> Result<(), Submission> {
        let bytes = s.body.len();
        let before = self.waiting_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.max_waiting_bytes {
            self.waiting_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(s);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let instance = self.instance_of(&s.conversation);
        self.tx[instance].send(s).map_err(|e| {
            self.taken(1, bytes);
            e.0
        })
    }

    /// Writes `user`'s read position in `conversation` to Redis, for
    /// every node.
    pub(crate) fn ack(
        &self,
        metrics: &crate::metrics::Metrics,
        user: Arc<str>,
        conversation: ConversationId,
        seq: u64,
    ) {
        let ack = acks::Ack {
            user,
            conversation,
            seq,
        };
        if self.acks_tx.try_send(ack).is_err() {
            crate::metrics::Metrics::add(&metrics.cluster_acks_failed, 1);
        }
    }

    /// `n` messages of `bytes` in all no longer wait.
    pub(super) fn taken(&self, n: usize, bytes: usize) {
        self.waiting.fetch_sub(n, Ordering::Relaxed);
        self.waiting_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether readers may hand the shards more new messages: fewer than
    /// [`WAITING`] messages and half the bytes allowed wait for Redis.
    /// Past it a publisher waits, as for a full shard.
    pub(crate) fn has_room(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) < WAITING
            && self.waiting_bytes.load(Ordering::Relaxed) < self.max_waiting_bytes / 2
    }

    /// Whether the node stopped because Redis lost its epoch.
    pub(crate) fn epoch_lost(&self) -> bool {
        self.epoch_lost.load(Ordering::Relaxed)
    }

    /// Whether the node hears what other nodes sequence, on every
    /// instance.
    pub(crate) fn is_up(&self) -> bool {
        self.up.iter().all(|up| up.load(Ordering::Relaxed))
    }

    /// How many Redis instances the cluster spreads over.
    pub(crate) fn instances(&self) -> usize {
        self.clients.len()
    }

    /// The instance that holds `conversation`.
    pub(crate) fn instance_of(&self, conversation: &ConversationId) -> usize {
        spread::instance_of(&conversation.key(), self.clients.len())
    }

    /// The node's connection for commands to the first instance (which
    /// holds presence), once started.
    pub(crate) fn conn(&self) -> Option<ConnectionManager> {
        self.instance_conn(0)
    }

    /// The node's connection for commands to `instance`, once started.
    pub(super) fn instance_conn(&self, instance: usize) -> Option<ConnectionManager> {
        self.conns.get().and_then(|c| c.get(instance)).cloned()
    }

    /// Reads what `conversation` has from `from` on (see
    /// `feed::catch_up`).
    pub(crate) fn catch_up(&self, hub: &Arc<Hub>, conversation: ConversationId, from: u64) {
        if let Some(conn) = self.instance_conn(self.instance_of(&conversation)) {
            feed::catch_up(hub, &conn, conversation, from);
        }
    }

    /// Reads a gap of `conversation` from its stream (see `feed::fill`).
    pub(crate) fn fill(&self, hub: &Arc<Hub>, conversation: ConversationId, from: u64, to: u64) {
        match self.instance_conn(self.instance_of(&conversation)) {
            Some(conn) => feed::fill(hub, &conn, conversation, from, to),
            None => tracing::warn!("a gap before the cluster link started; left"),
        }
    }
}

impl Hub {
    /// The node's presence in the cluster, in cluster mode.
    pub(crate) fn cluster_presence(&self) -> Option<&presence::Presence> {
        self.cluster.as_ref().map(|c| &*c.presence)
    }

    /// Redis holds another epoch than this node's, or none: its data was
    /// lost. The node stops rather than deliver seqs that mean something
    /// else now; `Server::run` then fails, so a supervisor restarts it
    /// into the cluster's new epoch.
    pub(crate) fn cluster_epoch_lost(
        &self,
        instance: usize,
        found: Option<u64>,
        stop: &CancellationToken,
    ) {
        tracing::error!(
            instance,
            node_epoch = self.cluster.as_ref().map(|c| c.epochs[instance]),
            redis_epoch = ?found,
            "the cluster's Redis lost its data (its epoch is not this node's): stopping, \
             so that a restart joins the cluster's new epoch and no seq is reused"
        );
        if let Some(c) = &self.cluster {
            c.epoch_lost.store(true, Ordering::Relaxed);
        }
        stop.cancel();
    }

    /// Records whether the feed of the cluster's `instance` is subscribed.
    pub(crate) fn cluster_link_up(&self, instance: usize, up: bool) {
        if let Some(c) = &self.cluster {
            c.up[instance].store(up, Ordering::Relaxed);
            if up {
                c.subscribed.notify_one();
            }
        }
    }
}

/// Starts the node's link and feed. `stop` is the node's: cancelled by
/// them when Redis lost its epoch. They end when `finish` fires, after
/// the node stopped taking messages: the link once what it took is in
/// Redis. The tracker tells when they did.
pub(crate) async fn start(
    hub: &Arc<Hub>,
    stop: &CancellationToken,
    finish: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> std::io::Result<()> {
    let Some(cluster) = &hub.cluster else {
        return Ok(());
    };
    let mut conns = Vec::with_capacity(cluster.clients.len());
    for client in &cluster.clients {
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| std::io::Error::other(format!("cluster: cannot reach Redis: {e}")))?;
        conns.push(conn);
    }
    let _ = cluster.conns.set(conns.clone());
    let rxs = take_once(&cluster.rx)?;
    let acks_rx = take_once(&cluster.acks_rx)?;
    tasks.spawn(presence::run(
        hub.clone(),
        conns[0].clone(),
        stop.clone(),
        finish.clone(),
    ));
    tasks.spawn(acks::run(
        hub.clone(),
        conns.clone(),
        acks_rx,
        finish.clone(),
    ));
    for (instance, (rx, conn)) in rxs.into_iter().zip(conns).enumerate() {
        let epoch = cluster.epochs[instance];
        tasks.spawn(link::run(
            hub.clone(),
            instance,
            conn,
            epoch,
            rx,
            stop.clone(),
            finish.clone(),
        ));
        tasks.spawn(feed::run(
            hub.clone(),
            instance,
            cluster.clients[instance].clone(),
            stop.clone(),
            finish.clone(),
        ));
    }
    let deadline = tokio::time::Instant::now() + SUBSCRIBE_WAIT;
    while !cluster.is_up() {
        tokio::time::timeout_at(deadline, cluster.subscribed.notified())
            .await
            .map_err(|_| std::io::Error::other("cluster: cannot subscribe to Redis's messages"))?;
    }
    Ok(())
}

/// A task's receiver, which only the first start takes.
fn take_once<T>(slot: &Mutex<Option<T>>) -> std::io::Result<T> {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| std::io::Error::other("the cluster link runs once"))
}
