//! Cluster mode's way in, as a state machine: sequenced messages arrive
//! out of order and past the shard's byte budget for what waits behind a
//! gap; each is delivered once, in seq order, and a message of this node
//! that was let go still gets its receipt.

use apm_core::ByteString;
use apm_core::Message;
use apm_core::message::{Conversation, Deliver};
use bytes::Bytes;

use crate::cluster::{Origin, Remote};
use crate::conversation::ConversationId;
use crate::metrics::Metrics;
use crate::store::{MemoryStore, Record};

use super::super::Command;
use super::{Harness, seqs, taken};

const PAYLOAD: usize = 16 * 1024;

fn remote(seq: u64, origin: Option<Origin>) -> Command {
    let deliver = Deliver {
        conversation: Conversation::Channel(ByteString::from("room")),
        seq,
        ts_ms: 1000 + seq,
        sender: ByteString::from("elsewhere"),
        kind: 0,
        msg_id: 0,
        payload: Bytes::from(vec![b'x'; PAYLOAD]),
    };
    let frame = apm_core::Frame::new(0, Message::Deliver(deliver))
        .to_bytes_limited(u32::MAX)
        .expect("encodes");
    Command::Remote(Box::new(Remote {
        record: Record {
            conversation: ConversationId::Channel("room".into()),
            seq,
            ts_ms: 1000 + seq,
            frame,
        },
        origin,
    }))
}

#[test]
fn messages_past_the_held_budget_are_let_go_and_read_again_in_order() {
    // An eighth of this is the one shard's room behind gaps: 64 KiB, four
    // of these messages.
    let mut h = Harness::new(std::sync::Arc::new(MemoryStore::new()), |c| {
        c.memory_budget = 512 * 1024
    });
    let member = h.connect("member");
    h.sub(&member, "room", None);
    let sender = h.connect("sender");
    taken(&member);
    h.shard.handle(remote(1, None));
    // 2 is missing: 3..=12 wait for it, as far as the budget lets them.
    for seq in 3..=12 {
        let origin = (seq == 10).then(|| Origin::new(sender.clone(), 9, false, true));
        h.shard.handle(remote(seq, origin));
    }
    assert_eq!(seqs(&taken(&member)), vec![1]);
    let let_go = Metrics::get(&h.hub.metrics.cluster_held_let_go);
    assert!(let_go > 0, "some were let go");
    // The gap's read brings 2; what was let go is read next, and comes.
    h.shard.handle(remote(2, None));
    let held = 12 - let_go;
    assert_eq!(seqs(&taken(&member)), (2..=held).collect::<Vec<_>>());
    for seq in held + 1..=12 {
        h.shard.handle(remote(seq, None));
    }
    h.shard.handle(Command::GapRead {
        conversation: ConversationId::Channel("room".into()),
        to: 12,
    });
    assert_eq!(seqs(&taken(&member)), (held + 1..=12).collect::<Vec<_>>());
    assert_eq!(Metrics::get(&h.hub.metrics.cluster_gaps_lost), 0);
    let receipts: Vec<u64> = taken(&sender)
        .into_iter()
        .filter_map(|m| match m {
            Message::Receipt(r) => Some(r.seq),
            _ => None,
        })
        .collect();
    assert_eq!(receipts, vec![10], "the let-go message's receipt came");
}
