//! Group commit: one thread takes every message and read position the
//! forwarding loops hand it, writes them to the store in one batch with one
//! fsync, then hands the messages back to their loops for delivery.
//!
//! The loops never wait for the disk: they sequence and move on. Clients
//! sending messages do wait, through the ingress bound, when more than
//! `store_backlog` jobs are waiting for the disk.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{error, warn};

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Conn;
use crate::shard::{Command, Sequenced};
use crate::store::{AckRecord, Batch, Store};

/// The most jobs written in one transaction; more wait for the next.
const MAX_BATCH: usize = 8192;
/// How often messages past the age limit are deleted from disk.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Work for the writer thread.
#[derive(Debug)]
enum Job {
    /// A message from shard `shard`, to be handed back once durable.
    Message { shard: usize, msg: Sequenced },
    /// A read position that moved.
    Ack(AckRecord),
    /// A frame for a connection, handed to `shard` to send once everything
    /// queued before it is on disk and delivered.
    Reply {
        shard: usize,
        conn: Arc<Conn>,
        frame: Bytes,
    },
    /// Write what came before, then end the thread.
    Stop,
}

/// What the writer hands back to one shard after a write.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// Messages now on disk, in the order they were sequenced.
    pub(crate) msgs: Vec<Sequenced>,
    /// Frames to send once those are delivered.
    pub(crate) replies: Vec<(Arc<Conn>, Bytes)>,
}

/// The handle the loops hold to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Sender<Job>,
    rx: Mutex<Option<Receiver<Job>>>,
    store: Arc<dyn Store>,
    /// Messages and replies handed over and not yet back in their loops.
    backlog: AtomicUsize,
    /// Set by [`Writer::stop`]: a failing write stops retrying.
    stopping: AtomicBool,
    /// The last write failed (and is being retried).
    failing: AtomicBool,
}

impl Writer {
    pub(crate) fn new(store: Arc<dyn Store>) -> Writer {
        let (tx, rx) = std::sync::mpsc::channel();
        Writer {
            tx,
            rx: Mutex::new(Some(rx)),
            store,
            backlog: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// Jobs waiting for the disk.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Acquire)
    }

    fn send(&self, job: Job) {
        self.backlog.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).is_err() {
            // The thread has ended (shutdown): what was not written is not
            // durable, so it is neither delivered nor receipted.
            self.backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Queues a sequenced message; it comes back to `shard` as
    /// `Command::Stored` once on disk.
    pub(crate) fn push(&self, shard: usize, msg: Sequenced) {
        self.send(Job::Message { shard, msg });
    }

    /// Has `shard` send `frame` to `conn` once everything queued so far is
    /// on disk and delivered.
    pub(crate) fn reply_after(&self, shard: usize, conn: Arc<Conn>, frame: Bytes) {
        self.send(Job::Reply { shard, conn, frame });
    }

    /// `n` jobs went back to their loops.
    pub(crate) fn drained(&self, n: usize) {
        self.backlog.fetch_sub(n, Ordering::AcqRel);
    }

    /// Queues a read position. Not counted in the backlog: a position only
    /// moves up to what was delivered, so there is at most one per user,
    /// conversation and delivered message.
    pub(crate) fn push_ack(&self, ack: AckRecord) {
        let _ = self.tx.send(Job::Ack(ack));
    }

    /// Starts the thread.
    pub(crate) fn start(&self, hub: Arc<Hub>) -> std::io::Result<JoinHandle<()>> {
        let rx = self
            .rx
            .lock()
            .ok()
            .and_then(|mut rx| rx.take())
            .ok_or_else(|| std::io::Error::other("the store writer was started before"))?;
        let store = self.store.clone();
        std::thread::Builder::new()
            .name("apm-store".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| run(&hub, &*store, rx));
                if std::panic::catch_unwind(run).is_err() {
                    // Nothing could be made durable any more, and every
                    // publisher would wait for receipts that never come:
                    // stop rather than serve without a store.
                    error!("the store writer failed; stopping the process");
                    std::process::abort();
                }
            })
    }

    /// Asks the thread to write what it has and end; a write that keeps
    /// failing is given up.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.tx.send(Job::Stop);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether the store is failing: new messages are refused until a
    /// write succeeds again.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Release);
    }
}

fn expire(hub: &Hub, store: &dyn Store) {
    if let Err(e) = store.expire(crate::clock::now_ms(), &hub.retention) {
        warn!(error = %e, "expiring old messages failed");
    }
}

fn run(hub: &Hub, store: &dyn Store, rx: Receiver<Job>) {
    let mut next_expiry = Instant::now() + EXPIRY_INTERVAL;
    let mut stopping = false;
    // Once a batch is given up (at shutdown), later ones are not written:
    // the disk must not hold a message without the ones before it.
    let mut gave_up = false;
    while !stopping {
        if Instant::now() >= next_expiry {
            expire(hub, store);
            next_expiry = Instant::now() + EXPIRY_INTERVAL;
        }
        let first = match rx.recv_timeout(next_expiry.saturating_duration_since(Instant::now())) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = Batch::default();
        let mut back: Vec<Durable> = (0..hub.shards.len()).map(|_| Durable::default()).collect();
        let mut counted = 0usize;
        let mut jobs = 0usize;
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Message { shard, msg } => {
                    batch.messages.push(msg.record.clone());
                    back[shard].msgs.push(msg);
                    counted += 1;
                }
                Job::Ack(ack) => batch.acks.push(ack),
                Job::Reply { shard, conn, frame } => {
                    back[shard].replies.push((conn, frame));
                    counted += 1;
                }
                Job::Stop => {
                    stopping = true;
                    break;
                }
            }
            jobs += 1;
            next = if jobs < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !gave_up && write(hub, store, &batch) {
            for (shard, durable) in back.into_iter().enumerate() {
                if !durable.msgs.is_empty() || !durable.replies.is_empty() {
                    hub.submit_now(shard, Command::Stored(durable));
                }
            }
        } else {
            gave_up = true;
        }
        hub.writer_drained(counted);
    }
}

/// Writes `batch`, retrying while the store fails: a message that is not
/// on disk is never delivered nor receipted, and later ones must not
/// overtake it. Gives up (false) only when the server is stopping.
fn write(hub: &Hub, store: &dyn Store, batch: &Batch) -> bool {
    let mut pause = Duration::from_millis(50);
    loop {
        match store.write(batch, &hub.retention) {
            Ok(()) => {
                if let Some(w) = &hub.writer {
                    w.set_failing(false);
                }
                Metrics::add(&hub.metrics.store_batches, 1);
                Metrics::add(&hub.metrics.store_messages, batch.messages.len() as u64);
                return true;
            }
            Err(e) => {
                Metrics::add(&hub.metrics.store_errors, 1);
                if let Some(w) = &hub.writer {
                    w.set_failing(true);
                }
                if hub.writer.as_ref().is_none_or(Writer::is_stopping) {
                    error!(error = %e, lost = batch.messages.len(), "store write failed at shutdown");
                    return false;
                }
                error!(error = %e, retry_in = ?pause, "store write failed; publishing waits");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
