//! The shard as a state machine: commands in, frames queued to connections
//! and batches handed to the store out. No sockets, no runtime.

use std::sync::Arc;

use apm_core::message::{Deliver, Role};
use apm_core::{ErrorCode, Flags, Frame, Limits, Message};
use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Conn;
use crate::store::commit::CommitThread;
use crate::store::recording::RecordingStore;
use crate::store::{MemoryStore, Recovered, Store};

use super::{Asker, Command, Outgoing, Shard, Target};

/// One shard (the only one) over a store, fed by hand.
struct Harness {
    hub: Arc<Hub>,
    shard: Shard,
    commit: Option<CommitThread>,
}

impl Harness {
    fn new(store: Arc<dyn Store>, tweak: impl FnOnce(&mut Config)) -> Harness {
        let mut config = Config {
            shards: 1,
            ..Config::default()
        };
        tweak(&mut config);
        let hub = Arc::new(Hub::new(
            config,
            Arc::new(Metrics::default()),
            store,
            Recovered::default(),
            None,
        ));
        let commit = hub.commit.as_ref().map(|queue| CommitThread {
            queue: queue.clone(),
            shards: hub.shards.clone(),
            metrics: hub.metrics.clone(),
            retention: hub.retention.clone(),
        });
        let shard = Shard::new(hub.clone(), 0);
        Harness { hub, shard, commit }
    }

    fn memory() -> Harness {
        Harness::new(Arc::new(MemoryStore::new()), |_| {})
    }

    /// A registered connection of `user`; its Welcome is taken.
    fn connect(&mut self, user: &str) -> Arc<Conn> {
        let config = &self.hub.config;
        let conn = Arc::new(Conn::new(
            self.hub.next_conn_id(),
            Arc::from(user),
            Role::User,
            config.outbound_queue,
            config.outbound_bytes,
            config.slow_consumer,
        ));
        let (reply, mut rx) = oneshot::channel();
        self.shard.handle(Command::Register {
            conn: conn.clone(),
            welcome: Bytes::from_static(b"welcome"),
            reply,
        });
        assert_eq!(rx.try_recv(), Ok(Ok(())));
        assert_eq!(conn.pop().as_deref(), Some(&b"welcome"[..]));
        conn
    }

    /// Hands `cmd` to the shard; checks that the shard gives what it cost
    /// back to the connection's ingress allowance.
    fn feed(&mut self, conn: &Conn, cmd: Command) {
        let cost = cmd.ingress_cost(&self.hub.config);
        let before = conn.released();
        self.shard.handle(cmd);
        assert_eq!(conn.released() - before, cost, "handled and given back");
    }

    fn sub(&mut self, conn: &Arc<Conn>, channel: &str, since: Option<u64>) {
        self.feed(
            conn,
            Command::Sub {
                conn: conn.clone(),
                channel: channel.into(),
                since,
                asker: Asker::Client(1),
            },
        );
    }

    fn send(&mut self, conn: &Arc<Conn>, to: Target, flags: Flags, msg_id: u64) {
        self.feed(
            conn,
            Command::Send(Outgoing {
                conn: conn.clone(),
                request_id: 7,
                flags,
                to,
                kind: 0,
                msg_id,
                payload: Bytes::from_static(b"hello"),
            }),
        );
    }

    fn publish(&mut self, conn: &Arc<Conn>, channel: &str) {
        self.send(conn, Target::Channel(channel.into()), Flags::empty(), 0);
    }

    /// Runs the group commit over what is queued for it, then hands what
    /// came back to the shard.
    fn commit(&mut self) {
        self.commit
            .as_ref()
            .expect("a durable store")
            .commit_queued();
        while let Some(cmd) = self.hub.shards[0].pop() {
            self.shard.handle(cmd);
        }
    }
}

/// Everything queued to `conn`, decoded, oldest first.
fn taken(conn: &Conn) -> Vec<Message> {
    let limits = Limits {
        max_frame_len: u32::MAX,
        max_name_len: usize::MAX,
    };
    let mut out = Vec::new();
    for bytes in conn.take_all() {
        let mut buf = BytesMut::from(&bytes[..]);
        let frame: Frame = apm_core::codec::decode_frame(&mut buf, &limits)
            .expect("valid frame")
            .expect("whole frame");
        assert!(buf.is_empty(), "one frame per queued item");
        out.push(frame.message);
    }
    out
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Deliver(Deliver { seq, .. }) => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn sub_then_publish_on_one_connection_in_that_order() {
    let mut h = Harness::memory();
    let alice = h.connect("alice");
    h.sub(&alice, "room", None);
    h.send(
        &alice,
        Target::Channel("room".into()),
        Flags::ECHO | Flags::RECEIPT,
        0,
    );
    let got = taken(&alice);
    assert!(
        matches!(&got[0], Message::SubOk(ok) if ok.seq == 0),
        "{got:?}"
    );
    assert!(matches!(&got[1], Message::Deliver(d) if d.seq == 1 && d.sender == "alice"));
    assert!(matches!(&got[2], Message::Receipt(r) if r.seq == 1));
    assert_eq!(got.len(), 3);
}

#[test]
fn members_but_the_sender_get_a_publish() {
    let mut h = Harness::memory();
    let (alice, bob, carol) = (h.connect("alice"), h.connect("bob"), h.connect("carol"));
    for c in [&alice, &bob] {
        h.sub(c, "room", None);
    }
    drop((taken(&alice), taken(&bob)));
    h.publish(&alice, "room");
    assert!(taken(&alice).is_empty(), "no echo unless asked");
    assert_eq!(seqs(&taken(&bob)), vec![1]);
    assert!(taken(&carol).is_empty(), "not a member");
}

#[test]
fn a_retry_gets_the_first_receipt_and_is_stored_once() {
    let store = Arc::new(RecordingStore::default());
    let mut h = Harness::new(store.clone(), |_| {});
    let alice = h.connect("alice");
    let to = || Target::User("bob".into());
    h.send(&alice, to(), Flags::RECEIPT, 42);
    h.commit();
    let first = taken(&alice);
    let Message::Receipt(first) = &first[0] else {
        panic!("a receipt: {first:?}");
    };
    h.send(&alice, to(), Flags::RECEIPT, 42);
    h.commit();
    let again = taken(&alice);
    assert!(
        matches!(&again[..], [Message::Receipt(r)] if r == first),
        "{again:?}"
    );
    assert_eq!(store.seqs().len(), 1, "the retry is not stored again");
    assert_eq!(Metrics::get(&h.hub.metrics.duplicates), 1);
}

#[test]
fn with_a_durable_store_nothing_goes_out_before_the_batch_is_written() {
    let store = Arc::new(RecordingStore::default());
    let mut h = Harness::new(store.clone(), |_| {});
    let (alice, bob) = (h.connect("alice"), h.connect("bob"));
    for c in [&alice, &bob] {
        h.sub(c, "room", None);
    }
    drop((taken(&alice), taken(&bob)));
    h.send(&alice, Target::Channel("room".into()), Flags::RECEIPT, 0);
    assert!(taken(&alice).is_empty(), "no receipt before the write");
    assert!(taken(&bob).is_empty(), "no delivery before the write");
    assert_eq!(store.seqs().len(), 0);
    h.commit();
    assert_eq!(store.seqs().len(), 1);
    assert!(matches!(&taken(&alice)[..], [Message::Receipt(r)] if r.seq == 1));
    assert_eq!(seqs(&taken(&bob)), vec![1]);
}

#[test]
fn a_full_outbound_queue_cuts_only_the_slow_consumer() {
    let mut h = Harness::new(Arc::new(MemoryStore::new()), |c| c.outbound_queue = 2);
    let (alice, fast, slow) = (h.connect("alice"), h.connect("fast"), h.connect("slow"));
    for c in [&fast, &slow] {
        h.sub(c, "room", None);
    }
    drop((taken(&fast), taken(&slow)));
    let mut delivered = Vec::new();
    for _ in 0..5 {
        h.publish(&alice, "room");
        delivered.extend(seqs(&taken(&fast)));
    }
    assert_eq!(
        delivered,
        vec![1, 2, 3, 4, 5],
        "the fast member lost nothing"
    );
    assert_eq!(slow.close_code(), Some(ErrorCode::SlowConsumer));
    assert_eq!(fast.close_code(), None);
    assert_eq!(Metrics::get(&h.hub.metrics.slow_consumers), 1);
}

#[test]
fn sub_since_replays_with_no_gap_and_no_duplicate() {
    let mut h = Harness::memory();
    let (alice, bob) = (h.connect("alice"), h.connect("bob"));
    for _ in 0..5 {
        h.publish(&alice, "room");
    }
    h.sub(&bob, "room", Some(2));
    h.publish(&alice, "room");
    let got = taken(&bob);
    assert!(
        matches!(&got[0], Message::SubOk(ok) if ok.seq == 5 && ok.oldest == 1),
        "{got:?}"
    );
    assert_eq!(seqs(&got), vec![3, 4, 5, 6]);
}

#[test]
fn a_private_message_reaches_every_device_and_waits_for_an_absent_user() {
    let mut h = Harness::memory();
    let alice = h.connect("alice");
    let alice_phone = h.connect("alice");
    h.send(&alice, Target::User("bob".into()), Flags::empty(), 0);
    assert_eq!(
        seqs(&taken(&alice_phone)),
        vec![1],
        "the sender's other device"
    );
    assert!(taken(&alice).is_empty());
    // Bob was away: the message waits in his inbox.
    let bob = h.connect("bob");
    assert_eq!(seqs(&taken(&bob)), vec![1]);
}

/// Online and offline go to `$presence`.
#[test]
fn presence_events_reach_presence_subscribers() {
    let mut h = Harness::memory();
    let watcher = h.connect("watcher");
    h.sub(&watcher, apm_core::names::PRESENCE_CHANNEL, None);
    drop(taken(&watcher));
    let alice = h.connect("alice");
    h.shard.handle(Command::Unregister { conn: alice });
    let events: Vec<_> = taken(&watcher)
        .into_iter()
        .map(|m| match m {
            Message::PresenceEvent(e) => format!("{e:?}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(events.len(), 2);
    assert!(
        events[0].contains("Online") && events[1].contains("Offline"),
        "{events:?}"
    );
}

mod cache;
mod fairness;
mod remote;
