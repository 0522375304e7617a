//! Codec micro-benchmarks: encode and decode of one `Publish` and one
//! `Deliver` frame with a 128-byte payload.
//!
//! Each iteration handles exactly one frame, so criterion's time per
//! iteration is the cost per frame; the throughput line counts wire bytes.
//! `deliver/encode_ref` is the server's fan-out path
//! ([`DeliverRef::to_frame_bytes`]), `deliver/encode_owned` the same bytes
//! through an owned [`Frame`].
//!
//! Run: `cargo bench -p apm-benches --bench codec`.

use std::hint::black_box;

use apm_core::message::{Conversation, ConversationRef, Deliver, DeliverRef, Publish};
use apm_core::{Frame, Limits, Message, codec::decode_frame};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};

/// Payload size of every benchmarked frame.
const PAYLOAD_LEN: usize = 128;

fn payload() -> Bytes {
    Bytes::from((0..PAYLOAD_LEN).map(|i| i as u8).collect::<Vec<u8>>())
}

fn publish_frame() -> Frame {
    Frame::new(
        42,
        Message::Publish(Publish {
            channel: "room.lobby".into(),
            kind: 1,
            msg_id: 1_234_567,
            payload: payload(),
        }),
    )
}

fn deliver_frame() -> Frame {
    Frame::new(
        0,
        Message::Deliver(Deliver {
            conversation: Conversation::Channel("room.lobby".into()),
            seq: 987_654,
            ts_ms: 1_732_370_000_000,
            sender: "alice".into(),
            kind: 1,
            msg_id: 1_234_567,
            payload: payload(),
        }),
    )
}

/// Decodes `wire` from a fresh read buffer per iteration; filling the
/// buffer and dropping the frame are outside the timed part.
fn bench_decode(c: &mut Criterion, name: &str, wire: &Bytes, expected: &Frame) {
    let limits = Limits::default();
    let mut check = BytesMut::from(&wire[..]);
    let decoded = decode_frame(&mut check, &limits).expect("decodes");
    assert_eq!(decoded.as_ref(), Some(expected));

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| decode_frame(black_box(&mut buf), black_box(&limits)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn publish(c: &mut Criterion) {
    let frame = publish_frame();
    let wire = frame.to_bytes().expect("encodes");

    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(&frame).to_bytes()));
    group.finish();

    bench_decode(c, "publish", &wire, &frame);
}

fn deliver(c: &mut Criterion) {
    let frame = deliver_frame();
    let wire = frame.to_bytes().expect("encodes");
    let Message::Deliver(owned) = &frame.message else {
        unreachable!("deliver_frame builds a Deliver");
    };
    let borrowed = DeliverRef {
        conversation: ConversationRef::Channel("room.lobby"),
        seq: owned.seq,
        ts_ms: owned.ts_ms,
        sender: &owned.sender,
        kind: owned.kind,
        msg_id: owned.msg_id,
        payload: &owned.payload,
    };
    let max = Limits::default().max_frame_len;
    // Both paths must put the same bytes on the wire, or the comparison
    // below means nothing.
    assert_eq!(borrowed.to_frame_bytes(max).expect("encodes"), wire);

    let mut group = c.benchmark_group("deliver");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("encode_ref", |b| {
        b.iter(|| black_box(&borrowed).to_frame_bytes(black_box(max)))
    });
    group.bench_function("encode_owned", |b| b.iter(|| black_box(&frame).to_bytes()));
    group.finish();

    bench_decode(c, "deliver", &wire, &frame);
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the
// macro's generated `pub fn` cannot carry a doc and trips `missing_docs`.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    publish(&mut c);
    deliver(&mut c);
    c.final_summary();
}
