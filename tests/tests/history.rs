//! Kept history: resume with `since`, history pages, retention, and private
//! messages for users who were away.

use apm_core::message::{Ack, Conversation, HistoryRequest, HistoryResponse};
use apm_core::{Flags, Message};
use apm_tests::{Client, TestServer};

fn seqs(h: &HistoryResponse) -> Vec<u64> {
    h.messages.iter().map(|m| m.seq).collect()
}

async fn publish_n(p: &mut Client, channel: &str, n: usize) {
    for i in 0..n {
        p.publish(channel, &format!("m{i}"), Flags::empty()).await;
    }
    // A receipt for one more proves the ones before it are sequenced.
    p.publish(channel, "marker", Flags::RECEIPT).await;
    loop {
        if matches!(p.recv().await.message, Message::Receipt(_)) {
            return;
        }
    }
}

#[tokio::test]
async fn resume_replays_what_was_missed_then_goes_live() {
    let server = TestServer::start(|_| {}).await;
    let mut p = server.client("pub").await;
    publish_n(&mut p, "news", 5).await; // seqs 1..=6
    let mut late = server.client("late").await;
    let ok = late.sub_since("news", 3).await;
    assert_eq!((ok.seq, ok.oldest), (6, 1));
    for seq in 4..=6 {
        assert_eq!(late.deliver().await.seq, seq);
    }
    p.publish("news", "live", Flags::empty()).await;
    let d = late.deliver().await;
    assert_eq!((d.seq, &d.payload[..]), (7, &b"live"[..]));
}

/// Resuming while a publisher keeps going: every seq exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_at_the_seam() {
    let server = TestServer::start(|_| {}).await;
    let mut p = server.client("pub").await;
    publish_n(&mut p, "busy", 50).await; // seqs 1..=51
    let writer = tokio::spawn(async move {
        for i in 0..500 {
            p.publish("busy", &format!("x{i}"), Flags::empty()).await;
        }
        publish_n(&mut p, "busy", 0).await;
        p
    });
    let mut r = server.client("reader").await;
    r.sub_since("busy", 20).await;
    let mut expected = 21;
    while expected <= 552 {
        let d = r.deliver().await;
        assert_eq!(d.seq, expected, "a gap or a duplicate at the seam");
        expected += 1;
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn retention_says_what_is_lost() {
    let server = TestServer::start(|c| c.history_max_messages = 5).await;
    let mut p = server.client("pub").await;
    publish_n(&mut p, "short", 9).await; // seqs 1..=10, keeps 6..=10
    let mut r = server.client("r").await;
    let ok = r.sub_since("short", 2).await;
    assert_eq!((ok.seq, ok.oldest), (10, 6));
    for seq in 6..=10 {
        assert_eq!(r.deliver().await.seq, seq);
    }
}

#[tokio::test]
async fn history_pages() {
    let server = TestServer::start(|c| c.history_page_max = 4).await;
    let mut p = server.client("pub").await;
    publish_n(&mut p, "log", 9).await; // seqs 1..=10
    let mut r = server.client("reader").await;
    let page = |before, after, limit| HistoryRequest {
        conversation: Conversation::Channel("log".into()),
        before,
        after,
        limit,
    };
    let latest = r.history(page(None, None, 100)).await;
    assert_eq!(seqs(&latest), vec![7, 8, 9, 10], "capped at 4, newest");
    assert_eq!((latest.oldest, latest.last), (1, 10));
    assert_eq!(&latest.messages[3].payload[..], b"marker");
    assert_eq!(latest.messages[0].sender, "pub");
    let back = r.history(page(Some(7), None, 3)).await;
    assert_eq!(seqs(&back), vec![4, 5, 6]);
    let forward = r.history(page(None, Some(2), 2)).await;
    assert_eq!(seqs(&forward), vec![3, 4]);
    let between = r.history(page(Some(6), Some(3), 10)).await;
    assert_eq!(seqs(&between), vec![4, 5]);
    let empty = r
        .history(HistoryRequest {
            conversation: Conversation::Channel("nothing-here".into()),
            before: None,
            after: None,
            limit: 10,
        })
        .await;
    assert!(empty.messages.is_empty());
    assert_eq!((empty.oldest, empty.last), (1, 0));
}

#[tokio::test]
async fn private_messages_wait_for_an_offline_user() {
    let server = TestServer::start(|_| {}).await;
    let mut alice = server.client("alice").await;
    for text in ["one", "two", "three"] {
        alice.direct("bob", text).await;
    }
    // Bob was offline; on connect he gets all three, in order, after Welcome.
    let mut bob = server.client("bob").await;
    for (seq, text) in [(1, "one"), (2, "two"), (3, "three")] {
        let d = bob.deliver().await;
        assert_eq!(
            (d.seq, &d.payload[..], &*d.sender),
            (seq, text.as_bytes(), "alice")
        );
        assert_eq!(d.conversation, Conversation::User("bob".into()));
    }
    // His own inbox's history is his to read.
    let h = bob
        .history(HistoryRequest {
            conversation: Conversation::User("bob".into()),
            before: None,
            after: None,
            limit: 10,
        })
        .await;
    assert_eq!(seqs(&h), vec![1, 2, 3]);
    // Acknowledged messages are not delivered again.
    bob.send(Message::Ack(Ack {
        conversation: Conversation::User("bob".into()),
        seq: 2,
    }))
    .await;
    assert!(bob.round_trip().await.is_empty());
    drop(bob);
    let mut again = server.client("bob").await;
    let d = again.deliver().await;
    assert_eq!(d.seq, 3);
    assert!(again.round_trip().await.is_empty());
}

#[tokio::test]
async fn acks_for_other_inboxes_are_refused() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.client("c").await;
    let id = c
        .send(Message::Ack(Ack {
            conversation: Conversation::User("d".into()),
            seq: 1,
        }))
        .await;
    let f = c.recv().await;
    assert_eq!(f.request_id, id);
    assert!(matches!(f.message, Message::Error(ref e) if e.code == apm_core::ErrorCode::Forbidden));
}

/// A backlog bigger than the outbound budget: the newest part is replayed
/// after Welcome, and the connection is not cut as a slow consumer.
#[tokio::test]
async fn a_large_backlog_is_replayed_within_the_budget() {
    let server = TestServer::start(|c| c.outbound_bytes = 64 * 1024).await;
    let mut alice = server.client("alice").await;
    let big = "x".repeat(16 * 1024);
    for _ in 0..10 {
        alice.direct("bob", &big).await;
    }
    let mut bob = server.client("bob").await;
    let first = bob.deliver().await.seq;
    assert!(first > 1, "the oldest did not fit the budget");
    for seq in first + 1..=10 {
        assert_eq!(bob.deliver().await.seq, seq);
    }
    assert!(bob.round_trip().await.is_empty());
    assert_eq!(
        server
            .metrics
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
