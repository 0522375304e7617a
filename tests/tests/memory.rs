//! Memory is bounded in bytes: hostile clients run for 10 s each against an
//! `apm-server` process with default budgets, while a well-behaved pair on
//! the same shard loses nothing and sees its messages within 250 ms (p99).
//! The server's peak resident memory (`VmHWM`) stays under 1 GiB, and once
//! the attackers leave its resident memory falls under 256 MiB.
//!
//! These tests run alone (see `.config/nextest.toml`): they load the
//! machine, and they read the memory of a process of their own.

use std::time::{Duration, Instant};

use apm_core::message::{Conversation, HistoryRequest, Publish};
use apm_core::{Flags, Message};
use apm_tests::Client;
use apm_tests::process::ServerProcess;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(10);
/// Peak resident memory allowed during an attack.
const PEAK: u64 = 1 << 30;
/// Resident memory allowed once the attackers are gone.
const AFTER: u64 = 256 << 20;
/// The well-behaved pair's delivery time, 99th percentile.
const P99: Duration = Duration::from_millis(250);
const BIG: usize = 256 * 1024;

/// One shard, so the pair and the attack share a forwarding loop.
async fn server() -> ServerProcess {
    ServerProcess::spawn(["--store", "memory", "--shards", "1"]).await
}

async fn client(server: &ServerProcess, user: &str) -> Client {
    let mut c = Client::connect(server.addr).await;
    c.hello(user, "").await;
    c
}

/// A publisher and a subscriber on `calm`, one message every 5 ms, each
/// carrying the microseconds since `base` when it was sent.
struct Pair {
    stop: watch::Sender<bool>,
    publisher: JoinHandle<u64>,
    subscriber: JoinHandle<Vec<Duration>>,
}

impl Pair {
    async fn start(server: &ServerProcess) -> Pair {
        let base = Instant::now();
        let mut sub = client(server, "calm-sub").await;
        sub.sub("calm").await;
        let mut publisher = client(server, "calm-pub").await;
        let (stop, mut stopped) = watch::channel(false);
        let publisher = tokio::spawn(async move {
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let micros = base.elapsed().as_micros() as u64;
                publisher
                    .send(publish(
                        "calm",
                        Bytes::copy_from_slice(&micros.to_be_bytes()),
                    ))
                    .await;
                sent += 1;
            }
            // The last one says how many came before it.
            publisher
                .send(publish("calm", Bytes::from(format!("end {sent}"))))
                .await;
            sent
        });
        let subscriber = tokio::spawn(async move {
            let mut delays = Vec::new();
            loop {
                let d = sub.deliver().await;
                if d.payload.starts_with(b"end ") {
                    return delays;
                }
                let sent = u64::from_be_bytes(d.payload[..8].try_into().expect("8 bytes"));
                let now = base.elapsed().as_micros() as u64;
                delays.push(Duration::from_micros(now.saturating_sub(sent)));
            }
        });
        Pair {
            stop,
            publisher,
            subscriber,
        }
    }

    /// Stops the pair; asserts nothing was lost and the p99 delay.
    async fn finish(self) {
        let _ = self.stop.send(true);
        let sent = self.publisher.await.expect("publisher");
        let mut delays = self.subscriber.await.expect("subscriber");
        assert_eq!(delays.len() as u64, sent, "the pair lost messages");
        assert!(sent > 100, "the pair sent only {sent} messages");
        delays.sort_unstable();
        let p99 = delays[delays.len() * 99 / 100];
        eprintln!("the pair: {sent} messages, p99 {p99:?}");
        assert!(p99 < P99, "the pair's p99 was {p99:?}");
    }
}

fn publish(channel: &str, payload: Bytes) -> Message {
    Message::Publish(Publish {
        channel: channel.into(),
        kind: 0,
        msg_id: 0,
        payload,
    })
}

/// Sends `message` with `flags` over and over until `ATTACK` has passed;
/// never reads. Returns the client so the connection stays open until the
/// caller drops it, and how many were sent.
fn attacker(c: Client, message: Message, flags: Flags) -> JoinHandle<(Client, u64)> {
    attacker_with(c, flags, move |_| message.clone())
}

/// Like [`attacker`], sending `next(n)` as the `n`th message.
fn attacker_with(
    mut c: Client,
    flags: Flags,
    mut next: impl FnMut(u64) -> Message + Send + 'static,
) -> JoinHandle<(Client, u64)> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + ATTACK;
        let mut sent = 0;
        loop {
            let send = c.try_send_flags(next(sent), flags);
            match tokio::time::timeout_at(deadline, send).await {
                Ok(Some(_)) => sent += 1,
                Ok(None) | Err(_) => return (c, sent),
            }
        }
    })
}

/// Runs `attackers` alongside a well-behaved pair, then checks memory
/// during and after.
async fn under_attack(server: &ServerProcess, attackers: Vec<JoinHandle<(Client, u64)>>) -> u64 {
    let started = Instant::now();
    let pair = Pair::start(server).await;
    let mut clients = Vec::new();
    let mut sent = 0;
    for a in attackers {
        let (c, n) = a.await.expect("attacker");
        clients.push(c);
        sent += n;
    }
    eprintln!("attack over after {:?}", started.elapsed());
    pair.finish().await;
    let peak = server.peak_rss();
    eprintln!("attackers sent {sent} frames; peak RSS {} MiB", peak >> 20);
    assert!(peak < PEAK, "peak RSS {} MiB", peak >> 20);
    drop(clients);
    let left = Instant::now();
    // Memory goes back within seconds of the attackers leaving.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rss = server.rss();
        if rss < AFTER {
            eprintln!("RSS {} MiB {:?} after they left", rss >> 20, left.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS still {} MiB after the attackers left",
            rss >> 20
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_messages_nobody_reads() {
    let server = server().await;
    let payload = Bytes::from(vec![7u8; BIG]);
    let mut attackers = Vec::new();
    for i in 0..3 {
        let c = client(&server, &format!("flood{i}")).await;
        let message = publish(&format!("void{i}"), payload.clone());
        attackers.push(attacker(c, message, Flags::empty()));
    }
    let sent = under_attack(&server, attackers).await;
    assert!(sent > 100, "the flood sent only {sent} messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_of_large_messages() {
    let server = server().await;
    let mut slow = Vec::new();
    for i in 0..5 {
        let mut c = Client::connect_small_buffer(server.addr, 4096).await;
        c.hello(&format!("slow{i}"), "").await;
        c.sub("big").await;
        slow.push(c);
    }
    let publisher = client(&server, "big-pub").await;
    let message = publish("big", Bytes::from(vec![1u8; BIG]));
    under_attack(&server, vec![attacker(publisher, message, Flags::empty())]).await;
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_nobody_reads() {
    let server = server().await;
    let mut writer = client(&server, "writer").await;
    for _ in 0..100 {
        writer
            .send(publish("hist", Bytes::from(vec![2u8; 8 * 1024])))
            .await;
    }
    writer.round_trip().await;
    let request = Message::HistoryRequest(HistoryRequest {
        conversation: Conversation::Channel("hist".into()),
        before: None,
        after: None,
        limit: 100,
    });
    let mut attackers = Vec::new();
    for i in 0..3 {
        let c = client(&server, &format!("reader{i}")).await;
        attackers.push(attacker(c, request.clone(), Flags::empty()));
    }
    under_attack(&server, attackers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_nobody_reads() {
    let server = server().await;
    let mut attackers = Vec::new();
    for i in 0..3 {
        let c = client(&server, &format!("greedy{i}")).await;
        let message = publish(&format!("r{i}"), Bytes::from_static(b"tiny"));
        attackers.push(attacker(c, message, Flags::RECEIPT));
    }
    under_attack(&server, attackers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_for_every_message() {
    let server = server().await;
    let mut attackers = Vec::new();
    for i in 0..3 {
        let c = client(&server, &format!("sprawl{i}")).await;
        let payload = Bytes::from_static(b"one message each");
        let next = move |n: u64| publish(&format!("sprawl{i}.{n}"), payload.clone());
        attackers.push(attacker_with(c, Flags::empty(), next));
    }
    let channels = under_attack(&server, attackers).await;
    eprintln!("{channels} channels made");
    assert!(channels > 100_000, "only {channels} channels");
}
