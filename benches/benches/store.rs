//! Message-store benchmarks: redb 4 against fjall 3 on the access pattern
//! the server's crash-safe message store will have, to choose between them
//! (results and the choice: `benches/STORE.md`).
//!
//! Every store lives in its own fresh [`TempDir`] on the machine's temp
//! file system. Messages are keyed by (conversation, seq) with a
//! [`VALUE_LEN`]-byte value standing for an encoded frame; a second table
//! (redb) or keyspace (fjall) holds one "head" record per conversation, its
//! last seq. Writes are spread round-robin over [`CONVERSATIONS`].
//!
//! * `store_insert`: group commit. One iteration is one write batch of N
//!   messages plus the head of each conversation it touched, committed so
//!   that it is durable when the call returns: redb's `commit()` with the
//!   default `Durability::Immediate`, fjall's batch committed with
//!   `PersistMode::SyncAll` (`fsync` of the journal). Throughput counts
//!   messages.
//! * `store_retention`: the same with N = 256 on a store already holding
//!   [`WINDOW`] messages per conversation; each batch also deletes what fell
//!   out of the window, so it is the steady state of insert + delete. redb
//!   deletes a key range (`retain_in`), fjall writes one tombstone per key
//!   (it has no range delete).
//! * `store_read`: on a store of 8 × [`READ_FILL`] messages (written in
//!   durable batches of 256, then fjall's memtable flushed to disk tables),
//!   `newest_100` reads the newest [`NEWEST`] messages of one conversation
//!   by a reverse range scan, and `recovery` reads the 8 head records and
//!   then the last [`WINDOW`] messages of every conversation.
//!
//! The on-disk size of each store after the insert and fill phases, and the
//! time to reopen the filled store, are printed to stderr.
//!
//! Run: `cargo bench -p apm-benches --bench store`.

use std::hint::black_box;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use fjall::{KeyspaceCreateOptions, PersistMode, Readable};
use redb::{ReadableDatabase, TableDefinition};
use tempfile::TempDir;

/// Conversations the writes are spread over.
const CONVERSATIONS: [&str; 8] = [
    "room-10", "room-11", "room-12", "room-13", "room-14", "room-15", "room-16", "room-17",
];

/// Size of one stored message (an encoded frame).
const VALUE_LEN: usize = 200;

/// Messages per group commit benchmarked.
const BATCH_SIZES: [usize; 3] = [1, 16, 256];

/// Batch size of the retention benchmark and of the fills.
const BIG_BATCH: usize = 256;

/// Messages kept per conversation by retention; also what recovery reads.
const WINDOW: u64 = 1_000;

/// Messages per conversation in the store the read benchmarks use.
const READ_FILL: u64 = 10_000;

/// Messages read by the "newest" read.
const NEWEST: usize = 100;

/// The bytes of a stored message: a fixed pseudo-random (incompressible)
/// body with the seq in front, so no two values are alike.
fn frame(seq: u64) -> [u8; VALUE_LEN] {
    let mut value = [0u8; VALUE_LEN];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in value.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    value[..8].copy_from_slice(&seq.to_be_bytes());
    value
}

/// One group commit: messages to write, heads to set and per conversation
/// the seqs retention drops. Conversations are indexes into
/// [`CONVERSATIONS`].
#[derive(Default)]
struct Batch {
    messages: Vec<(usize, u64)>,
    heads: Vec<(usize, u64)>,
    expired: Vec<(usize, Range<u64>)>,
}

/// Hands out the seqs of successive batches, round-robin over the
/// conversations, and what a retention window expires.
struct Writer {
    /// Last seq written per conversation (seqs start at 1).
    head: [u64; CONVERSATIONS.len()],
    /// Oldest seq still stored per conversation.
    oldest: [u64; CONVERSATIONS.len()],
    next_conv: usize,
    window: Option<u64>,
}

impl Writer {
    fn new(window: Option<u64>) -> Self {
        Self {
            head: [0; CONVERSATIONS.len()],
            oldest: [1; CONVERSATIONS.len()],
            next_conv: 0,
            window,
        }
    }

    /// Fills `batch` with the next `n` messages.
    fn next_batch(&mut self, n: usize, batch: &mut Batch) {
        batch.messages.clear();
        batch.heads.clear();
        batch.expired.clear();
        let mut touched = [false; CONVERSATIONS.len()];
        for _ in 0..n {
            let conv = self.next_conv;
            self.next_conv = (conv + 1) % CONVERSATIONS.len();
            self.head[conv] += 1;
            touched[conv] = true;
            batch.messages.push((conv, self.head[conv]));
        }
        for (conv, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            batch.heads.push((conv, self.head[conv]));
            if let Some(window) = self.window {
                let keep_from = self.head[conv].saturating_sub(window) + 1;
                if keep_from > self.oldest[conv] {
                    batch.expired.push((conv, self.oldest[conv]..keep_from));
                    self.oldest[conv] = keep_from;
                }
            }
        }
    }
}

/// What the benchmarks need of an engine.
trait Store: Sized {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// Writes `batch` atomically; durable (fsync'd) when this returns.
    fn commit(&self, batch: &Batch);
    /// Bytes of the newest `n` messages of `conv`, read newest first.
    fn newest(&self, conv: usize, n: usize) -> usize;
    /// Bytes of the last `window` messages of every conversation, found
    /// from the head records.
    fn recover(&self, window: u64) -> usize;
    /// Messages stored for `conv`.
    fn count(&self, conv: usize) -> usize;
    /// Moves data still only in memory and the journal to its final place.
    fn settle(&self) {}
}

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");

/// redb: one file, a copy-on-write B-tree per table.
struct Redb(redb::Database);

impl Store for Redb {
    const NAME: &'static str = "redb";

    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("store.redb")).expect("redb create");
        let txn = db.begin_write().expect("begin_write");
        txn.open_table(MESSAGES).expect("open messages");
        txn.open_table(HEADS).expect("open heads");
        txn.commit().expect("commit");
        Self(db)
    }

    fn commit(&self, batch: &Batch) {
        // Default durability is `Durability::Immediate`: commit() fsyncs.
        let txn = self.0.begin_write().expect("begin_write");
        {
            let mut messages = txn.open_table(MESSAGES).expect("open messages");
            for &(conv, seq) in &batch.messages {
                messages
                    .insert((CONVERSATIONS[conv], seq), &frame(seq)[..])
                    .expect("insert");
            }
            for (conv, seqs) in &batch.expired {
                let name = CONVERSATIONS[*conv];
                messages
                    .retain_in((name, seqs.start)..(name, seqs.end), |_, _| false)
                    .expect("retain_in");
            }
            let mut heads = txn.open_table(HEADS).expect("open heads");
            for &(conv, seq) in &batch.heads {
                heads.insert(CONVERSATIONS[conv], seq).expect("insert head");
            }
        }
        txn.commit().expect("commit");
    }

    fn newest(&self, conv: usize, n: usize) -> usize {
        let txn = self.0.begin_read().expect("begin_read");
        let messages = txn.open_table(MESSAGES).expect("open messages");
        let name = CONVERSATIONS[conv];
        let mut bytes = 0;
        for entry in messages
            .range((name, 0)..=(name, u64::MAX))
            .expect("range")
            .rev()
            .take(n)
        {
            let (_, value) = entry.expect("entry");
            bytes += black_box(value.value()).len();
        }
        bytes
    }

    fn recover(&self, window: u64) -> usize {
        let txn = self.0.begin_read().expect("begin_read");
        let heads = txn.open_table(HEADS).expect("open heads");
        let messages = txn.open_table(MESSAGES).expect("open messages");
        let mut bytes = 0;
        for name in CONVERSATIONS {
            let head = heads.get(name).expect("get head").expect("head").value();
            let from = head.saturating_sub(window) + 1;
            for entry in messages.range((name, from)..=(name, head)).expect("range") {
                let (_, value) = entry.expect("entry");
                bytes += black_box(value.value()).len();
            }
        }
        bytes
    }

    fn count(&self, conv: usize) -> usize {
        let txn = self.0.begin_read().expect("begin_read");
        let messages = txn.open_table(MESSAGES).expect("open messages");
        let name = CONVERSATIONS[conv];
        messages
            .range((name, 0)..=(name, u64::MAX))
            .expect("range")
            .count()
    }
}

/// fjall: a directory holding a journal and an LSM-tree per keyspace.
struct Fjall {
    db: fjall::Database,
    messages: fjall::Keyspace,
    heads: fjall::Keyspace,
}

/// fjall key of a message: conversation, a 0 byte, then the seq big-endian,
/// so a conversation's messages sort by seq and no name prefixes another.
fn fjall_key(conv: usize, seq: u64) -> Vec<u8> {
    let name = CONVERSATIONS[conv].as_bytes();
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Store for Fjall {
    const NAME: &'static str = "fjall";

    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir).open().expect("fjall open");
        let messages = db
            .keyspace("messages", KeyspaceCreateOptions::default)
            .expect("messages keyspace");
        let heads = db
            .keyspace("heads", KeyspaceCreateOptions::default)
            .expect("heads keyspace");
        Self {
            db,
            messages,
            heads,
        }
    }

    fn commit(&self, batch: &Batch) {
        // `Database::batch()` only flushes to OS buffers by default; SyncAll
        // makes commit() fsync the journal before returning, the same as
        // commit() followed by `db.persist(PersistMode::SyncAll)`.
        let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
        for &(conv, seq) in &batch.messages {
            b.insert(&self.messages, fjall_key(conv, seq), &frame(seq)[..]);
        }
        for (conv, seqs) in &batch.expired {
            for seq in seqs.clone() {
                b.remove(&self.messages, fjall_key(*conv, seq));
            }
        }
        for &(conv, seq) in &batch.heads {
            b.insert(&self.heads, CONVERSATIONS[conv], &seq.to_be_bytes()[..]);
        }
        b.commit().expect("commit");
    }

    fn newest(&self, conv: usize, n: usize) -> usize {
        let mut bytes = 0;
        for guard in self
            .messages
            .range(fjall_key(conv, 0)..=fjall_key(conv, u64::MAX))
            .rev()
            .take(n)
        {
            bytes += black_box(guard.value().expect("value")).len();
        }
        bytes
    }

    fn recover(&self, window: u64) -> usize {
        let snapshot = self.db.snapshot();
        let mut bytes = 0;
        for (conv, name) in CONVERSATIONS.iter().enumerate() {
            let head = snapshot
                .get(&self.heads, name)
                .expect("get head")
                .expect("head");
            let head = u64::from_be_bytes(head[..].try_into().expect("8-byte head"));
            let from = head.saturating_sub(window) + 1;
            for guard in snapshot.range(
                &self.messages,
                fjall_key(conv, from)..=fjall_key(conv, head),
            ) {
                bytes += black_box(guard.value().expect("value")).len();
            }
        }
        bytes
    }

    fn count(&self, conv: usize) -> usize {
        self.messages
            .range(fjall_key(conv, 0)..=fjall_key(conv, u64::MAX))
            .count()
    }

    fn settle(&self) {
        self.messages.rotate_memtable_and_wait().expect("flush");
        self.heads.rotate_memtable_and_wait().expect("flush");
    }
}

/// Disk space of the files under `path`, as `du` counts it: allocated
/// blocks, not apparent length (fjall preallocates its journal).
fn disk_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .expect("read_dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                disk_size(&entry.path())
            } else {
                meta.blocks() * 512
            }
        })
        .sum()
}

fn report_size(engine: &str, phase: &str, dir: &Path, messages: u64) {
    let bytes = disk_size(dir);
    eprintln!(
        "store size: {engine} after {phase}: {} KiB on disk for {messages} messages \
         ({:.0} B/message)",
        bytes / 1024,
        bytes as f64 / messages.max(1) as f64
    );
}

/// Writes `per_conv` messages to every conversation in durable batches of
/// [`BIG_BATCH`].
fn fill<S: Store>(store: &S, writer: &mut Writer, per_conv: u64) {
    let mut batch = Batch::default();
    let mut left = per_conv as usize * CONVERSATIONS.len();
    while left > 0 {
        let n = left.min(BIG_BATCH);
        writer.next_batch(n, &mut batch);
        store.commit(&batch);
        left -= n;
    }
}

fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
}

fn insert_one<S: Store>(group: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let dir = TempDir::new().expect("tempdir");
    let store = S::open(dir.path());
    let mut writer = Writer::new(None);
    let mut batch = Batch::default();
    let mut written = 0u64;
    group.bench_function(BenchmarkId::new(S::NAME, n), |b| {
        b.iter(|| {
            writer.next_batch(n, &mut batch);
            store.commit(&batch);
            written += n as u64;
        })
    });
    if n == BIG_BATCH {
        report_size(S::NAME, "store_insert/256", dir.path(), written);
    }
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_insert");
    short(&mut group);
    for n in BATCH_SIZES {
        group.throughput(Throughput::Elements(n as u64));
        insert_one::<Redb>(&mut group, n);
        insert_one::<Fjall>(&mut group, n);
    }
    group.finish();
}

fn retention_one<S: Store>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let dir = TempDir::new().expect("tempdir");
    let store = S::open(dir.path());
    let mut writer = Writer::new(Some(WINDOW));
    fill(&store, &mut writer, WINDOW);
    let mut batch = Batch::default();
    group.bench_function(BenchmarkId::new(S::NAME, BIG_BATCH), |b| {
        b.iter(|| {
            writer.next_batch(BIG_BATCH, &mut batch);
            store.commit(&batch);
        })
    });
    // Retention must really have deleted, or the numbers mean nothing.
    for conv in 0..CONVERSATIONS.len() {
        assert_eq!(store.count(conv) as u64, WINDOW, "{} retention", S::NAME);
    }
    report_size(
        S::NAME,
        "store_retention",
        dir.path(),
        WINDOW * CONVERSATIONS.len() as u64,
    );
}

fn retention(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_retention");
    short(&mut group);
    group.throughput(Throughput::Elements(BIG_BATCH as u64));
    retention_one::<Redb>(&mut group);
    retention_one::<Fjall>(&mut group);
    group.finish();
}

fn read_one<S: Store>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let dir = TempDir::new().expect("tempdir");
    let mut writer = Writer::new(None);
    {
        let store = S::open(dir.path());
        fill(&store, &mut writer, READ_FILL);
        store.settle();
    }
    let start = Instant::now();
    let store = S::open(dir.path());
    eprintln!(
        "store open: {} reopened with {} messages in {:?}",
        S::NAME,
        READ_FILL * CONVERSATIONS.len() as u64,
        start.elapsed()
    );
    report_size(
        S::NAME,
        "fill",
        dir.path(),
        READ_FILL * CONVERSATIONS.len() as u64,
    );
    // Both reads must return what they claim, or the numbers mean nothing.
    assert_eq!(store.newest(3, NEWEST), NEWEST * VALUE_LEN);
    let recovered = CONVERSATIONS.len() * WINDOW as usize;
    assert_eq!(store.recover(WINDOW), recovered * VALUE_LEN);

    group.throughput(Throughput::Elements(NEWEST as u64));
    group.bench_function(BenchmarkId::new("newest_100", S::NAME), |b| {
        b.iter(|| black_box(store.newest(black_box(3), NEWEST)))
    });
    group.throughput(Throughput::Elements(recovered as u64));
    group.bench_function(BenchmarkId::new("recovery", S::NAME), |b| {
        b.iter(|| black_box(store.recover(black_box(WINDOW))))
    });
}

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_read");
    short(&mut group);
    read_one::<Redb>(&mut group);
    read_one::<Fjall>(&mut group);
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the
// macro's generated `pub fn` cannot carry a doc and trips `missing_docs`.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    insert(&mut c);
    retention(&mut c);
    read(&mut c);
    c.final_summary();
}
