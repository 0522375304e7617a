//! kill -9 under publish load, with the disk store: after a restart every
//! receipted message is there, in order, with no holes; every message a
//! subscriber was sent is there too, unchanged; seqs go on from where they
//! were, in the same epoch.
//!
//! The server runs as its own process (the `apm-server` binary) so that it
//! can be killed outright.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apm_core::message::{Conversation, Direct, HistoryRequest, Publish};
use apm_core::{Flags, Message};
use apm_tests::Client;
use apm_tests::process::ServerProcess;
use bytes::Bytes;
use tokio::sync::watch;

/// Receipts to collect before the kill: enough that batches are being
/// written while it lands.
const RECEIPTS_BEFORE_KILL: u64 = 3000;
/// Requests each publisher keeps in flight.
const WINDOW: usize = 32;
const PUBLISHERS: usize = 3;
const CHANNELS: [&str; 2] = ["crash-a", "crash-b"];
/// A user who is never connected during the load: its inbox is on disk only.
const AWAY: &str = "away";
/// Guards against a hang; every wait ends on its event.
const WAIT: Duration = Duration::from_secs(60);

/// Starts `apm-server` with the disk store in `dir`.
async fn spawn_server(dir: &Path) -> ServerProcess {
    let mut args: Vec<std::ffi::OsString> = [
        "--store",
        "disk",
        "--shards",
        "2",
        "--history-max-messages",
        "1000000",
        "--data-dir",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(dir.into());
    ServerProcess::spawn(args).await
}

/// What one conversation is known to hold: seq -> payload.
type Seen = HashMap<(Conversation, u64), Bytes>;

/// Publishes with receipts, `WINDOW` in flight, until the connection dies.
/// Returns every receipted message.
async fn publisher(addr: SocketAddr, index: usize, receipts: watch::Sender<u64>) -> Seen {
    let mut c = Client::connect(addr).await;
    c.hello(&format!("pub{index}"), "").await;
    let mut in_flight: BTreeMap<u32, Bytes> = BTreeMap::new();
    let mut receipted = Seen::new();
    let mut n = 0u64;
    loop {
        while in_flight.len() < WINDOW {
            n += 1;
            let payload = Bytes::from(format!("p{index}-{n}"));
            let message = if index == 0 && n.is_multiple_of(4) {
                Message::Direct(Direct {
                    user: AWAY.into(),
                    kind: 1,
                    msg_id: n,
                    payload: payload.clone(),
                })
            } else {
                Message::Publish(Publish {
                    channel: CHANNELS[n as usize % CHANNELS.len()].into(),
                    kind: 1,
                    msg_id: n,
                    payload: payload.clone(),
                })
            };
            match c.try_send_flags(message, Flags::RECEIPT).await {
                Some(id) => in_flight.insert(id, payload),
                None => return receipted,
            };
        }
        let Some(frame) = c.next().await else {
            return receipted;
        };
        if let Message::Receipt(r) = frame.message {
            let payload = in_flight
                .remove(&frame.request_id)
                .expect("a receipt answers a request in flight");
            assert!(
                receipted.insert((r.conversation, r.seq), payload).is_none(),
                "a seq was receipted twice"
            );
            receipts.send_modify(|n| *n += 1);
        }
    }
}

/// Subscribes to every channel and records what it is sent until the
/// connection dies.
async fn subscriber(addr: SocketAddr, ready: tokio::sync::oneshot::Sender<()>) -> Seen {
    let mut c = Client::connect(addr).await;
    c.hello("watcher", "").await;
    for ch in CHANNELS {
        c.sub(ch).await;
    }
    let _ = ready.send(());
    let mut seen = Seen::new();
    while let Some(frame) = c.next().await {
        if let Message::Deliver(d) = frame.message {
            seen.insert((d.conversation.into(), d.seq), d.payload);
        }
    }
    seen
}

/// Every retained message of `conversation`, paging forward from the start.
async fn read_all(c: &mut Client, conversation: &Conversation) -> (u64, Vec<(u64, Bytes)>) {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .history(HistoryRequest {
                conversation: conversation.clone(),
                before: None,
                after: Some(after),
                limit: 100,
            })
            .await;
        if page.messages.is_empty() {
            return (page.last, all);
        }
        after = page.messages.last().expect("not empty").seq;
        all.extend(page.messages.into_iter().map(|m| (m.seq, m.payload)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_receipted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = spawn_server(dir.path()).await;
    let epoch = Client::connect(server.addr)
        .await
        .hello("probe", "")
        .await
        .epoch;

    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(subscriber(server.addr, ready_tx));
    ready.await.expect("subscriber ready");
    let (count_tx, mut count) = watch::channel(0u64);
    let count_tx = Arc::new(count_tx);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let tx = (*count_tx).clone();
            tokio::spawn(publisher(server.addr, i, tx))
        })
        .collect();
    tokio::time::timeout(WAIT, count.wait_for(|n| *n >= RECEIPTS_BEFORE_KILL))
        .await
        .expect("receipts under load")
        .expect("publishers alive");

    // SIGKILL while the publishers are still sending.
    server.child.start_kill().expect("kill -9");
    server.child.wait().await.expect("reap");

    let mut receipted = Seen::new();
    for p in publishers {
        receipted.extend(p.await.expect("publisher"));
    }
    let delivered = watcher.await.expect("subscriber");
    assert!(receipted.len() as u64 >= RECEIPTS_BEFORE_KILL);

    let server = spawn_server(dir.path()).await;
    let mut reader = Client::connect(server.addr).await;
    assert_eq!(reader.hello(AWAY, "").await.epoch, epoch, "same epoch");
    let mut conversations: Vec<Conversation> = CHANNELS
        .iter()
        .map(|c| Conversation::Channel((*c).into()))
        .collect();
    conversations.push(Conversation::User(AWAY.into()));
    for conversation in &conversations {
        let (last, stored) = read_all(&mut reader, conversation).await;
        let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "{conversation:?}: every seq from 1 to {last}, in order, no holes"
        );
        let stored: BTreeMap<u64, Bytes> = stored.into_iter().collect();
        let mut checked = 0;
        for ((c, seq), payload) in receipted.iter().chain(delivered.iter()) {
            if c == conversation {
                assert_eq!(
                    stored.get(seq),
                    Some(payload),
                    "{conversation:?} #{seq} was receipted or delivered before the crash"
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "{conversation:?}: nothing was receipted");
        // Seqs go on from where they were.
        if let Conversation::Channel(ch) = conversation {
            let id = reader.publish(ch, "after the crash", Flags::RECEIPT).await;
            match reader.reply_to(id).await {
                Message::Receipt(r) => assert_eq!(r.seq, last + 1),
                other => panic!("expected Receipt, got {other:?}"),
            }
        }
    }
}
