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

use crate::ingress::Ingress;
use crate::metrics::Metrics;
use crate::outbox::Conn;
use crate::retention::RetentionPolicy;
use crate::shard::command::{Command, Durable, Sequenced};
use crate::store::{AckRecord, Batch, Store};

/// The most jobs written in one transaction; more wait for the next.
const MAX_BATCH: usize = 8192;
/// How often messages past the age limit are deleted from disk.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Work for the commit thread.
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

/// The queue the loops hand durable work to, and what the commit thread
/// tells them back (how far behind it is, whether the store fails).
#[derive(Debug)]
pub(crate) struct CommitQueue {
    tx: Sender<Job>,
    rx: Mutex<Option<Receiver<Job>>>,
    store: Arc<dyn Store>,
    /// Messages and replies handed over and not yet back in their loops.
    backlog: AtomicUsize,
    /// Set by [`CommitQueue::stop`]: a failing write stops retrying.
    stopping: AtomicBool,
    /// The last write failed (and is being retried).
    failing: AtomicBool,
}

/// What the commit thread needs besides its queue: the store, where to
/// hand messages back, and what to count and keep.
#[derive(Debug)]
pub(crate) struct CommitThread {
    pub(crate) queue: Arc<CommitQueue>,
    pub(crate) shards: Arc<[Ingress]>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) retention: RetentionPolicy,
}

impl CommitQueue {
    /// A queue over `store`; nothing is written before
    /// [`CommitThread::start`].
    pub(crate) fn new(store: Arc<dyn Store>) -> CommitQueue {
        let (tx, rx) = std::sync::mpsc::channel();
        CommitQueue {
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

    /// Queues a read position. Not counted in the backlog: a position only
    /// moves up to what was delivered, so there is at most one per user,
    /// conversation and delivered message.
    pub(crate) fn push_ack(&self, ack: AckRecord) {
        let _ = self.tx.send(Job::Ack(ack));
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

    /// The receiving end, once.
    fn take_receiver(&self) -> std::io::Result<Receiver<Job>> {
        self.rx
            .lock()
            .ok()
            .and_then(|mut rx| rx.take())
            .ok_or_else(|| std::io::Error::other("the commit thread was started before"))
    }
}

/// Where the commit thread is.
#[derive(Debug, Default)]
struct RunState {
    /// A stop came: this batch is the last.
    stopping: bool,
    /// A batch was given up (at shutdown): later ones are not written, as
    /// the disk must not hold a message without the ones before it.
    gave_up: bool,
}

impl CommitThread {
    /// Starts the thread.
    pub(crate) fn start(self) -> std::io::Result<JoinHandle<()>> {
        let rx = self.queue.take_receiver()?;
        std::thread::Builder::new()
            .name("apm-store".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| self.run(rx));
                if std::panic::catch_unwind(run).is_err() {
                    // Nothing could be made durable any more, and every
                    // publisher would wait for receipts that never come:
                    // stop rather than serve without a store.
                    error!("the store writer failed; stopping the process");
                    std::process::abort();
                }
            })
    }

    fn run(&self, rx: Receiver<Job>) {
        let mut next_expiry = Instant::now() + EXPIRY_INTERVAL;
        let mut state = RunState::default();
        while !state.stopping {
            if Instant::now() >= next_expiry {
                self.expire();
                next_expiry = Instant::now() + EXPIRY_INTERVAL;
            }
            let wait = next_expiry.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(first) => self.commit(first, &rx, &mut state),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Writes `first` and whatever else is queued as one batch, then hands
    /// the messages back to their shards.
    fn commit(&self, first: Job, rx: &Receiver<Job>, state: &mut RunState) {
        let (batch, back, counted, stop) = self.gather(first, rx);
        state.stopping |= stop;
        if !state.gave_up && self.write(&batch) {
            for (shard, durable) in back.into_iter().enumerate() {
                if !durable.is_empty() {
                    self.shards[shard].push(Command::Stored(durable));
                }
            }
        } else {
            state.gave_up = true;
        }
        self.drained(counted);
    }

    /// Takes `first` and whatever else is queued, up to [`MAX_BATCH`]
    /// jobs: the batch to write, what goes back to each shard, how many
    /// backlog jobs that is, and whether a stop came.
    fn gather(&self, first: Job, rx: &Receiver<Job>) -> (Batch, Vec<Durable>, usize, bool) {
        let mut batch = Batch::default();
        let mut back: Vec<Durable> = (0..self.shards.len()).map(|_| Durable::default()).collect();
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
                Job::Stop => return (batch, back, counted, true),
            }
            jobs += 1;
            next = if jobs < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        (batch, back, counted, false)
    }

    /// `n` jobs went back to their loops: wake readers waiting for the
    /// disk to catch up.
    fn drained(&self, n: usize) {
        self.queue.backlog.fetch_sub(n, Ordering::AcqRel);
        for ingress in self.shards.iter() {
            ingress.space.notify_waiters();
        }
    }

    fn expire(&self) {
        let store = &self.queue.store;
        if let Err(e) = store.expire(crate::clock::now_ms(), &self.retention) {
            warn!(error = %e, "expiring old messages failed");
        }
    }

    /// Writes `batch`, retrying while the store fails: a message that is
    /// not on disk is never delivered nor receipted, and later ones must
    /// not overtake it. Gives up (false) only when the server is stopping.
    fn write(&self, batch: &Batch) -> bool {
        let queue = &self.queue;
        let mut pause = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match queue.store.write(batch, &self.retention) {
                Ok(()) => {
                    queue.set_failing(false);
                    let metrics = &self.metrics;
                    Metrics::add(&metrics.store_batches, 1);
                    Metrics::add(&metrics.store_messages, batch.messages.len() as u64);
                    metrics
                        .store_commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics
                        .store_batch_messages
                        .observe(batch.messages.len() as f64);
                    return true;
                }
                Err(e) => {
                    Metrics::add(&self.metrics.store_errors, 1);
                    queue.set_failing(true);
                    if queue.is_stopping() {
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
}

#[cfg(test)]
impl CommitThread {
    /// Writes everything queued so far, as the thread would, on the
    /// caller's thread.
    pub(crate) fn commit_queued(&self) {
        let rx = self.queue.rx.lock().unwrap_or_else(|e| e.into_inner());
        let rx = rx.as_ref().expect("the thread was not started");
        let mut state = RunState::default();
        while let Ok(first) = rx.try_recv() {
            self.commit(first, rx, &mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use apm_core::message::Role;

    use super::*;
    use crate::config::SlowConsumerPolicy;
    use crate::conversation::ConversationId;
    use crate::store::Record;
    use crate::store::recording::RecordingStore;

    fn conn() -> Arc<Conn> {
        let policy = SlowConsumerPolicy::Disconnect;
        Arc::new(Conn::new(1, "u".into(), Role::User, 8, 1024, policy))
    }

    fn thread(store: Arc<dyn Store>, shards: usize) -> CommitThread {
        CommitThread {
            queue: Arc::new(CommitQueue::new(store)),
            shards: (0..shards).map(|_| Ingress::default()).collect(),
            metrics: Arc::new(Metrics::default()),
            retention: RetentionPolicy::uniform(crate::retention::Retention {
                max_messages: 10,
                max_age_ms: 0,
                max_bytes: 0,
            }),
        }
    }

    fn message(conn: &Arc<Conn>, channel: &str, seq: u64) -> Sequenced {
        Sequenced {
            record: Record {
                conversation: ConversationId::Channel(Arc::from(channel)),
                seq,
                ts_ms: seq,
                frame: Bytes::from(vec![seq as u8]),
            },
            from: conn.clone(),
            request_id: 0,
            echo: false,
            receipt: false,
        }
    }

    fn stored(ingress: &Ingress) -> Durable {
        match ingress.pop() {
            Some(Command::Stored(durable)) => durable,
            other => panic!("expected Stored, got {other:?}"),
        }
    }

    #[test]
    fn one_write_then_each_shard_gets_its_own_back_in_order() {
        let store = Arc::new(RecordingStore::default());
        let t = thread(store.clone(), 2);
        let conn = conn();
        t.queue.push(0, message(&conn, "a", 1));
        t.queue.push(1, message(&conn, "b", 1));
        t.queue
            .reply_after(0, conn.clone(), Bytes::from_static(b"receipt"));
        t.queue.push(0, message(&conn, "a", 2));
        assert_eq!(t.queue.backlog(), 4);
        t.commit_queued();
        assert_eq!(store.seqs(), vec![1, 1, 2]);
        assert_eq!(Metrics::get(&t.metrics.store_batches), 1, "one write");
        let zero = stored(&t.shards[0]);
        let seqs: Vec<u64> = zero.msgs.iter().map(|m| m.record.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(zero.replies.len(), 1);
        assert_eq!(stored(&t.shards[1]).msgs.len(), 1);
        assert!(t.shards[0].is_empty() && t.shards[1].is_empty());
        assert_eq!(t.queue.backlog(), 0);
    }

    #[test]
    fn a_failing_write_is_retried_and_nothing_goes_back_before_it_succeeds() {
        let store = Arc::new(RecordingStore::failing(1));
        let t = thread(store.clone(), 1);
        let conn = conn();
        t.queue.push(0, message(&conn, "a", 1));
        t.commit_queued();
        assert_eq!(Metrics::get(&t.metrics.store_errors), 1);
        assert!(!t.queue.is_failing(), "the retry succeeded");
        assert_eq!(store.seqs(), vec![1]);
        assert_eq!(stored(&t.shards[0]).msgs.len(), 1);
    }
}
