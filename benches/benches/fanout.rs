//! Fan-out micro-benchmarks: one encoded `Deliver` frame (128-byte payload)
//! queued to every member of a channel, sequentially and across rayon's
//! threads, for several member counts.
//!
//! This is [`fan_out`] as a forwarding loop calls it: one shared `Bytes`
//! cloned into each [`Conn`]'s queue, with the `Notify` wake-up each push
//! does (no task is waiting, as for a connection whose writer is busy).
//! Each iteration is one fan-out, so criterion's time per iteration is the
//! cost of one fan-out; the throughput line counts deliveries (members).
//!
//! Only the fan-outs are timed. The queues are drained between timed
//! batches, outside the timed region; a batch holds enough fan-outs to
//! queue about [`BATCH_DELIVERIES`] frames, so small channels are not
//! swamped by the cost of reading the clock.
//!
//! The server picks rayon for channels with at least
//! `fanout_parallel_threshold` members; the `sequential` and `rayon`
//! results for one member count show where that crossover lies on the
//! machine at hand (see `benches/FANOUT.md`).
//!
//! Run: `cargo bench -p apm-benches --bench fanout`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apm_core::message::{ConversationRef, DeliverRef, Role};
use apm_server::Metrics;
use apm_server::config::SlowConsumerPolicy;
use apm_server::fanout::{Members, fan_out};
use apm_server::outbox::Conn;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};

/// Payload size of the fanned-out frame.
const PAYLOAD_LEN: usize = 128;

/// Channel sizes benchmarked.
const MEMBER_COUNTS: [usize; 7] = [10, 100, 1_000, 3_000, 5_000, 7_000, 10_000];

/// Roughly how many frames one timed batch queues before the queues are
/// drained.
const BATCH_DELIVERIES: usize = 1_024;

/// No connection has id 0, so nobody is skipped.
const NOBODY: u64 = 0;

/// The frame a channel publish fans out, encoded once as the server does.
fn deliver_frame() -> Bytes {
    let payload: Vec<u8> = (0..PAYLOAD_LEN).map(|i| i as u8).collect();
    DeliverRef {
        conversation: ConversationRef::Channel("room.lobby"),
        seq: 987_654,
        ts_ms: 1_732_370_000_000,
        sender: "alice",
        kind: 1,
        msg_id: 1_234_567,
        payload: &payload,
    }
    .to_frame_bytes(u32::MAX)
    .expect("encodes")
}

/// `n` connections with ids 1..=n and bounds nothing reaches, so every
/// push is queued.
fn members(n: usize) -> Members {
    (1..=n as u64)
        .map(|id| {
            let conn = Conn::new(
                id,
                Arc::from(format!("user{id}")),
                Role::User,
                usize::MAX / 2,
                usize::MAX / 2,
                SlowConsumerPolicy::Disconnect,
            );
            (id, Arc::new(conn))
        })
        .collect()
}

fn drain(members: &Members) {
    for conn in members.values() {
        conn.clear();
    }
}

fn fanout(c: &mut Criterion) {
    let frame = deliver_frame();
    let metrics = Metrics::default();

    let mut group = c.benchmark_group("fanout");
    for n in MEMBER_COUNTS {
        let members = members(n);
        // Every member must get the frame, or the numbers mean nothing.
        for parallel in [false, true] {
            assert_eq!(
                fan_out(&metrics, &members, &frame, NOBODY, parallel),
                n as u64
            );
        }
        drain(&members);

        let batch = (BATCH_DELIVERIES / n).max(1) as u64;
        group.throughput(Throughput::Elements(n as u64));
        for (name, parallel) in [("sequential", false), ("rayon", true)] {
            group.bench_with_input(BenchmarkId::new(name, n), &members, |b, members| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let k = left.min(batch);
                        let start = Instant::now();
                        for _ in 0..k {
                            black_box(fan_out(
                                black_box(&metrics),
                                black_box(members),
                                black_box(&frame),
                                NOBODY,
                                parallel,
                            ));
                        }
                        timed += start.elapsed();
                        drain(members);
                        left -= k;
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the
// macro's generated `pub fn` cannot carry a doc and trips `missing_docs`.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    fanout(&mut c);
    c.final_summary();
}
