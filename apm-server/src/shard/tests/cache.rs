//! The shard's memory bounds: every ring together under one byte cap, and
//! idle conversations leaving memory past the conversation cap without
//! reusing a seq or silently losing a private message.

use std::sync::Arc;

use apm_core::message::{Conversation, SubOk};
use apm_core::{ErrorCode, Flags, Message};
use tokio::sync::oneshot;

use crate::conversation::ConversationId;
use crate::store::MemoryStore;
use crate::store::recording::RecordingStore;

use super::super::{Command, Target};
use super::{Harness, seqs, taken};

/// The bytes of one stored `Deliver` of the harness's publishes.
fn frame_len(h: &mut Harness) -> usize {
    // Same sender and channel name lengths as the tests' messages.
    let probe = h.connect("probe");
    h.sub(&probe, "abc", None);
    let writer = h.connect("alice");
    h.publish(&writer, "abc");
    probe.take_all().back().expect("a Deliver").len()
}

fn sub_ok(messages: &[Message]) -> SubOk {
    messages
        .iter()
        .find_map(|m| match m {
            Message::SubOk(ok) => Some(ok.clone()),
            _ => None,
        })
        .expect("a SubOk")
}

#[test]
fn all_rings_share_one_byte_cap_and_idle_conversations_shrink_first() {
    let mut h = Harness::memory();
    let one = frame_len(&mut h);
    let mut h = Harness::new(Arc::new(MemoryStore::new()), |c| {
        c.history_total_bytes = 10 * one;
    });
    let alice = h.connect("alice");
    for _ in 0..6 {
        h.publish(&alice, "old");
    }
    for _ in 0..8 {
        h.publish(&alice, "new");
    }
    assert!(h.shard.tables.cache.retained() <= 10);
    let bob = h.connect("bob");
    h.sub(&bob, "old", Some(0));
    let got = taken(&bob);
    // "old" was not used since the hand passed: its older half went, then
    // its older half again.
    assert!(sub_ok(&got).oldest > 4, "{:?}", sub_ok(&got));
    assert_eq!(
        seqs(&got),
        (sub_ok(&got).oldest..=6).collect::<Vec<_>>(),
        "the newest of it stay"
    );
    h.sub(&bob, "new", Some(0));
    assert_eq!(
        seqs(&taken(&bob)),
        (1..=8).collect::<Vec<_>>(),
        "in use, kept"
    );
}

#[test]
fn idle_channels_leave_memory_and_their_seqs_go_on() {
    let mut h = Harness::new(Arc::new(MemoryStore::new()), |c| c.max_conversations = 16);
    let alice = h.connect("alice");
    let bob = h.connect("bob");
    h.sub(&bob, "busy", None);
    for i in 0..200 {
        h.publish(&alice, &format!("c{i}"));
    }
    let tables = &h.shard.tables;
    assert!(tables.channels.len() + tables.inboxes.len() <= 16 + 1);
    assert!(
        tables.channels.contains_key("busy"),
        "a channel with a member stays"
    );
    drop(taken(&bob));
    h.publish(&alice, "c0");
    h.sub(&bob, "c0", Some(0));
    let ok = sub_ok(&taken(&bob));
    // The memory store forgot c0's message; its seqs go on above every
    // seq the shard forgot, so a resume from 0 is told of the gap.
    assert!(ok.seq > 1 && ok.oldest == ok.seq, "{ok:?}");
}

#[test]
fn with_a_durable_store_a_channel_comes_back_with_its_seq_and_read_positions() {
    let store = Arc::new(RecordingStore::default());
    let mut h = Harness::new(store, |c| c.max_conversations = 16);
    let alice = h.connect("alice");
    for _ in 0..5 {
        h.publish(&alice, "keep");
    }
    h.commit();
    let bob = h.connect("bob");
    let keep = ConversationId::Channel(Arc::from("keep"));
    h.feed(
        &bob,
        Command::Ack {
            conn: bob.clone(),
            conversation: keep.clone(),
            seq: 3,
        },
    );
    for i in 0..200 {
        h.publish(&alice, &format!("c{i}"));
        h.commit();
    }
    assert!(
        !h.shard.tables.channels.contains_key("keep"),
        "it left memory"
    );
    h.send(&alice, Target::Channel("keep".into()), Flags::RECEIPT, 0);
    h.commit();
    let receipt = taken(&alice)
        .into_iter()
        .find_map(|m| match m {
            Message::Receipt(r) => Some(r.seq),
            _ => None,
        })
        .expect("a receipt");
    assert_eq!(receipt, 6, "the seq goes on from the store's");
    let (reply, mut rx) = oneshot::channel();
    h.shard.handle(Command::Unread {
        user: Arc::from("bob"),
        conversations: vec![(0, Conversation::Channel("keep".into()))],
        reply,
    });
    let unread = rx.try_recv().expect("answered");
    assert_eq!((unread[0].1.last, unread[0].1.acked), (6, 3));
}

#[test]
fn an_absent_users_private_messages_that_left_memory_are_announced() {
    let mut h = Harness::new(Arc::new(MemoryStore::new()), |c| c.max_conversations = 16);
    let alice = h.connect("alice");
    for _ in 0..2 {
        h.send(&alice, Target::User("bob".into()), Flags::empty(), 0);
    }
    for i in 0..60 {
        h.send(&alice, Target::User(format!("u{i}")), Flags::empty(), 0);
    }
    assert!(
        !h.shard.tables.inboxes.contains_key("bob"),
        "it left memory"
    );
    let bob = h.connect("bob");
    let got = taken(&bob);
    assert!(
        matches!(&got[..], [Message::Error(e)] if e.code == ErrorCode::MessagesLost
            && e.message.starts_with("2 ")),
        "{got:?}"
    );
    // Told once.
    drop(bob);
    let again = h.connect("bob");
    assert!(taken(&again).is_empty());
}

#[test]
fn an_absent_users_private_messages_pushed_out_of_its_ring_are_announced() {
    let mut h = Harness::memory();
    let one = frame_len(&mut h);
    let mut h = Harness::new(Arc::new(MemoryStore::new()), |c| {
        c.history_total_bytes = 4 * one;
    });
    let alice = h.connect("alice");
    for _ in 0..6 {
        h.send(&alice, Target::User("bob".into()), Flags::empty(), 0);
    }
    let bob = h.connect("bob");
    let got = taken(&bob);
    let kept = seqs(&got);
    let lost = kept[0] - 1;
    assert!(lost > 0 && kept.len() <= 4, "{kept:?}");
    assert!(
        matches!(&got[0], Message::Error(e) if e.code == ErrorCode::MessagesLost
            && e.message.starts_with(&format!("{lost} "))),
        "{got:?}"
    );
    assert_eq!(kept, (kept[0]..=6).collect::<Vec<_>>());
}
