//! The disk store, end to end: what a receipt promises survives a restart,
//! seqs go on where they were, offline messages and read positions are
//! kept, and unread counts follow acks.

use std::path::Path;

use apm_core::message::{Ack, Conversation, HistoryRequest, Receipt};
use apm_core::{ErrorCode, Flags, Message};
use apm_server::StoreKind;
use apm_tests::{Client, TestServer};
use bytes::Bytes;

async fn durable(dir: &Path) -> TestServer {
    let dir = dir.to_owned();
    TestServer::start(move |c| {
        c.store = StoreKind::Disk;
        c.data_dir = dir;
    })
    .await
}

/// The receipt for request `id`.
async fn receipt(c: &mut Client, id: u32) -> Receipt {
    match c.reply_to(id).await {
        Message::Receipt(r) => r,
        other => panic!("expected Receipt, got {other:?}"),
    }
}

fn channel(name: &str) -> Conversation {
    Conversation::Channel(name.into())
}

fn latest(conversation: Conversation) -> HistoryRequest {
    HistoryRequest {
        conversation,
        before: None,
        after: None,
        limit: 100,
    }
}

#[tokio::test]
async fn receipted_messages_survive_a_restart_and_seqs_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = durable(dir.path()).await;
    let mut reader = server.client("reader").await;
    reader.sub("room").await;
    let mut alice = Client::connect(server.addr).await;
    let epoch = alice.hello("alice", "").await.epoch;
    for i in 1..=20u64 {
        let id = alice
            .publish("room", &format!("m{i}"), Flags::RECEIPT)
            .await;
        assert_eq!(receipt(&mut alice, id).await.seq, i);
    }
    for i in 1..=20u64 {
        let d = reader.deliver().await;
        assert_eq!((d.seq, &d.payload[..]), (i, format!("m{i}").as_bytes()));
    }
    for i in 1..=3u64 {
        assert_eq!(alice.direct("bob", &format!("psst {i}")).await.seq, i);
    }
    drop((reader, alice));
    server.stop().await;

    let server = durable(dir.path()).await;
    let mut alice = Client::connect(server.addr).await;
    let welcome = alice.hello("alice", "").await;
    assert_eq!(welcome.epoch, epoch, "the epoch survives a restart");
    let h = alice.history(latest(channel("room"))).await;
    assert_eq!(h.last, 20);
    let got: Vec<(u64, Bytes)> = h.messages.into_iter().map(|m| (m.seq, m.payload)).collect();
    let want: Vec<(u64, Bytes)> = (1..=20u64)
        .map(|i| (i, Bytes::from(format!("m{i}"))))
        .collect();
    assert_eq!(got, want);
    // Bob was away the whole time: his inbox waited on disk.
    let mut bob = server.client("bob").await;
    for i in 1..=3u64 {
        let d = bob.deliver().await;
        assert_eq!((d.seq, &d.payload[..]), (i, format!("psst {i}").as_bytes()));
    }
    // Seqs go on where they were, and a resume across the restart works.
    let mut reader = server.client("reader").await;
    let ok = reader.sub_since("room", 18).await;
    assert_eq!((ok.seq, ok.oldest), (20, 1));
    assert_eq!(reader.deliver().await.seq, 19);
    assert_eq!(reader.deliver().await.seq, 20);
    let id = alice.publish("room", "after", Flags::RECEIPT).await;
    assert_eq!(receipt(&mut alice, id).await.seq, 21);
    assert_eq!(reader.deliver().await.seq, 21);
    assert_eq!(alice.direct("bob", "again").await.seq, 4);
}

#[tokio::test]
async fn unread_counts_follow_acks_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = durable(dir.path()).await;
    let mut alice = server.client("alice").await;
    for i in 0..5 {
        let id = alice
            .publish("room", &format!("m{i}"), Flags::RECEIPT)
            .await;
        receipt(&mut alice, id).await;
    }
    alice.direct("bob", "hi").await;
    let mut bob = server.client("bob").await;
    bob.deliver().await;
    let asked = vec![
        channel("room"),
        Conversation::User("bob".into()),
        channel("nothing-here"),
        Conversation::Broadcast,
    ];
    let counts = bob.unread(asked.clone()).await;
    let view = |counts: &[apm_core::message::Unread]| -> Vec<(u64, u64, u64)> {
        counts
            .iter()
            .map(|u| (u.last, u.acked, u.count()))
            .collect()
    };
    assert_eq!(
        counts.iter().map(|u| &u.conversation).collect::<Vec<_>>(),
        asked.iter().collect::<Vec<_>>(),
        "answered in the order asked"
    );
    assert_eq!(view(&counts), [(5, 0, 5), (1, 0, 1), (0, 0, 0), (0, 0, 0)]);

    let ack = |conversation, seq| Message::Ack(Ack { conversation, seq });
    bob.send(ack(channel("room"), 3)).await;
    bob.send(ack(Conversation::User("bob".into()), 1)).await;
    bob.send(ack(channel("nothing-here"), 7)).await;
    assert_eq!(
        view(&bob.unread(asked.clone()).await),
        [(5, 3, 2), (1, 1, 0), (0, 0, 0), (0, 0, 0)]
    );
    // Positions never move back, nor past the last message.
    bob.send(ack(channel("room"), 2)).await;
    assert_eq!(view(&bob.unread(vec![channel("room")]).await), [(5, 3, 2)]);
    // Another user's inbox is not yours to acknowledge or count.
    let id = bob.send(ack(Conversation::User("alice".into()), 1)).await;
    assert!(matches!(
        bob.reply_to(id).await,
        Message::Error(e) if e.code == ErrorCode::Forbidden
    ));
    drop((alice, bob));
    server.stop().await;

    let server = durable(dir.path()).await;
    let mut bob = server.client("bob").await;
    // Bob acknowledged his inbox: nothing is replayed after Welcome.
    assert_eq!(
        view(&bob.unread(asked.clone()).await),
        [(5, 3, 2), (1, 1, 0), (0, 0, 0), (0, 0, 0)]
    );
    // Every device of a user shares its read position.
    let mut phone = server.client("bob").await;
    phone.send(ack(channel("room"), 99)).await;
    assert_eq!(
        view(&phone.unread(vec![channel("room")]).await),
        [(5, 5, 0)]
    );
    assert_eq!(view(&bob.unread(vec![channel("room")]).await), [(5, 5, 0)]);
}

#[tokio::test]
async fn unread_counts_work_in_memory_too() {
    let server = TestServer::start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let id = alice.publish("room", "one", Flags::RECEIPT).await;
    receipt(&mut alice, id).await;
    alice
        .send(Message::Ack(Ack {
            conversation: channel("room"),
            seq: 1,
        }))
        .await;
    let id = alice.publish("room", "two", Flags::RECEIPT).await;
    receipt(&mut alice, id).await;
    let counts = alice.unread(vec![channel("room")]).await;
    assert_eq!(
        (counts[0].last, counts[0].acked, counts[0].count()),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn a_retry_across_a_restart_is_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let publish = |msg_id| {
        Message::Publish(apm_core::message::Publish {
            channel: "room".into(),
            kind: 1,
            msg_id,
            payload: Bytes::from_static(b"once"),
        })
    };
    let server = durable(dir.path()).await;
    let mut alice = server.client("alice").await;
    let id = alice.send_flags(publish(9), Flags::RECEIPT).await;
    let first = receipt(&mut alice, id).await;
    // A retry while the first copy may still be on its way to disk.
    let id = alice.send_flags(publish(9), Flags::RECEIPT).await;
    assert_eq!(receipt(&mut alice, id).await, first);
    drop(alice);
    server.stop().await;

    let server = durable(dir.path()).await;
    let mut alice = server.client("alice").await;
    let id = alice.send_flags(publish(9), Flags::RECEIPT).await;
    assert_eq!(receipt(&mut alice, id).await, first);
    let h = alice.history(latest(channel("room"))).await;
    assert_eq!((h.last, h.messages.len()), (1, 1));
}

#[tokio::test]
async fn retention_rules_apply_per_channel_on_disk_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |dir: std::path::PathBuf| {
        TestServer::start(move |c| {
            c.store = StoreKind::Disk;
            c.data_dir = dir;
            c.history_rules = vec!["short.*=2:0".into()];
        })
    };
    let server = start(dir.path().to_owned()).await;
    let mut alice = server.client("alice").await;
    for ch in ["short.a", "long"] {
        for i in 0..5 {
            let id = alice.publish(ch, &format!("m{i}"), Flags::RECEIPT).await;
            receipt(&mut alice, id).await;
        }
    }
    let kept = |h: &apm_core::message::HistoryResponse| {
        (
            h.oldest,
            h.last,
            h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        )
    };
    let short = alice.history(latest(channel("short.a"))).await;
    assert_eq!(kept(&short), (4, 5, vec![4, 5]));
    let long = alice.history(latest(channel("long"))).await;
    assert_eq!(kept(&long), (1, 5, vec![1, 2, 3, 4, 5]));
    drop(alice);
    server.stop().await;

    let server = start(dir.path().to_owned()).await;
    let mut alice = server.client("alice").await;
    let short = alice.history(latest(channel("short.a"))).await;
    assert_eq!(kept(&short), (4, 5, vec![4, 5]));
    let long = alice.history(latest(channel("long"))).await;
    assert_eq!(kept(&long), (1, 5, vec![1, 2, 3, 4, 5]));
}

/// While the store fails, what was taken waits (and is not lost), and new
/// messages are refused with an error instead of hanging; once it works
/// again, the waiting message gets its receipt and seqs go on.
#[tokio::test]
async fn a_failing_store_holds_what_it_took_and_refuses_new_messages() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = std::sync::Arc::new(apm_tests::Flaky::default());
    let server = TestServer::start_with_store(store.clone(), |_| {}).await;
    let mut reader = server.client("reader").await;
    reader.sub("room").await;
    let mut alice = server.client("alice").await;
    let id = alice.publish("room", "one", Flags::RECEIPT).await;
    assert_eq!(receipt(&mut alice, id).await.seq, 1);
    assert_eq!(reader.deliver().await.seq, 1);

    store.failing.store(true, SeqCst);
    let waiting = alice.publish("room", "two", Flags::RECEIPT).await;
    // The second failed attempt (the first retry) comes after the server
    // has marked the store failing.
    store.failed.notified().await;
    store.failed.notified().await;
    let refused = alice.publish("room", "three", Flags::RECEIPT).await;
    match alice.reply_to(refused).await {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::Internal),
        other => panic!("expected a refusal, got {other:?}"),
    }

    store.failing.store(false, SeqCst);
    let r = receipt(&mut alice, waiting).await;
    assert_eq!(r.seq, 2);
    let d = reader.deliver().await;
    assert_eq!((d.seq, &d.payload[..]), (2, &b"two"[..]));
    let id = alice.publish("room", "four", Flags::RECEIPT).await;
    assert_eq!(receipt(&mut alice, id).await.seq, 3);
}

/// The ring is a byte-capped cache over the disk: history pages below what
/// memory holds are read from the store, in order, with nothing missing.
#[tokio::test]
async fn history_pages_below_the_ring_come_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let server = TestServer::start(move |c| {
        c.store = StoreKind::Disk;
        c.data_dir = path;
        // Room in memory for about ten of the messages below.
        c.history_max_bytes = 10 * 1100;
        c.history_page_max = 25;
    })
    .await;
    let mut alice = server.client("alice").await;
    let body = "x".repeat(1000);
    let mut last = 0;
    for i in 1..=100u64 {
        let id = alice
            .publish("deep", &format!("{i:04}{body}"), Flags::RECEIPT)
            .await;
        last = receipt(&mut alice, id).await.seq;
    }
    assert_eq!(last, 100);
    let mut reader = server.client("reader").await;
    // Page back from the newest, 25 at a time, down to the first.
    let mut before = None;
    let mut seen = Vec::new();
    loop {
        let page = reader
            .history(HistoryRequest {
                conversation: channel("deep"),
                before,
                after: None,
                limit: 25,
            })
            .await;
        assert_eq!(page.last, 100);
        if page.messages.is_empty() {
            break;
        }
        for m in page.messages.iter().rev() {
            assert_eq!(&m.payload[..4], format!("{:04}", m.seq).as_bytes());
            seen.push(m.seq);
        }
        before = page.messages.first().map(|m| m.seq);
    }
    assert_eq!(
        seen,
        (1..=100).rev().collect::<Vec<_>>(),
        "every page, no gap"
    );
    // Paging forward from the start reads the disk too.
    let first = reader
        .history(HistoryRequest {
            conversation: channel("deep"),
            before: None,
            after: Some(0),
            limit: 25,
        })
        .await;
    assert_eq!(first.messages.first().map(|m| m.seq), Some(1));
    assert_eq!(first.messages.len(), 25);
    assert_eq!(first.oldest, 1);
}

#[tokio::test]
async fn a_resume_below_the_ring_reads_the_disk_while_publishing_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let server = TestServer::start(move |c| {
        c.store = StoreKind::Disk;
        c.data_dir = path;
        // Room in memory for about ten of the messages below.
        c.history_max_bytes = 10 * 1100;
    })
    .await;
    let mut alice = server.client("alice").await;
    let body = "x".repeat(1000);
    for i in 1..=200u64 {
        let id = alice
            .publish("live", &format!("{i:04}{body}"), Flags::RECEIPT)
            .await;
        assert_eq!(receipt(&mut alice, id).await.seq, i);
    }
    let publisher = tokio::spawn(async move {
        for i in 201..=600u64 {
            alice
                .publish("live", &format!("{i:04}{body}"), Flags::empty())
                .await;
        }
        alice.round_trip().await;
        alice
    });
    let mut reader = server.client("reader").await;
    let ok = reader.sub_since("live", 0).await;
    assert_eq!(ok.oldest, 1, "the disk holds them all");
    let mut seqs = Vec::new();
    while seqs.last() != Some(&600) {
        let d = reader.deliver().await;
        assert_eq!(&d.payload[..4], format!("{:04}", d.seq).as_bytes());
        seqs.push(d.seq);
    }
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>(), "in order, once each");
    drop(publisher.await.expect("publisher"));
}

#[tokio::test]
async fn an_inbox_below_the_ring_is_read_from_disk_on_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let server = TestServer::start(move |c| {
        c.store = StoreKind::Disk;
        c.data_dir = path;
        // Room in memory for about ten of the messages below.
        c.history_max_bytes = 10 * 1100;
    })
    .await;
    let mut alice = server.client("alice").await;
    let body = "x".repeat(1000);
    for i in 1..=100u64 {
        let r = alice.direct("bob", &format!("{i:04}{body}")).await;
        assert_eq!(r.seq, i);
    }
    let sender = tokio::spawn(async move {
        for i in 101..=200u64 {
            alice.direct("bob", &format!("{i:04}{body}")).await;
        }
        alice
    });
    let mut bob = server.client("bob").await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&200) {
        let d = bob.deliver().await;
        assert_eq!(&d.payload[..4], format!("{:04}", d.seq).as_bytes());
        seqs.push(d.seq);
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "in order, once each");
    drop(sender.await.expect("sender"));
}
