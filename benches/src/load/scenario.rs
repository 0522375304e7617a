//! The load scenarios and the measuring loop they share.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::load::procfs::CpuMeter;
use crate::load::tally::{self, REPORT_EVERY, Tally};
use crate::load::target::{Endpoint, Payloads, Publisher, subscribe};

/// Knobs every scenario shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Payload bytes per message (at least 8: the send time).
    pub payload: usize,
    /// Messages a publisher may have outstanding per receiver.
    pub window: u64,
    /// Messages a publisher hands its client at once.
    pub batch: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// The server's processes (a cluster's nodes, and its Redis when
    /// asked), for their CPU use.
    pub server_pids: Vec<u32>,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// Whether more is better (throughput) or worse (latency, CPU, memory).
    pub higher_is_better: bool,
}

impl Figure {
    fn more(name: &str, value: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            higher_is_better: true,
        }
    }
    fn less(name: &str, value: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            higher_is_better: false,
        }
    }
}

/// A failed run.
pub type RunError = String;

/// A group for a throughput run: who publishes where, who receives.
struct Group {
    tally: Arc<Tally>,
    /// (publisher name, topic) pairs.
    publishers: Vec<(String, String)>,
    /// (subscriber name, topics).
    subscribers: Vec<(String, Vec<String>)>,
}

async fn spawn_subscribers(
    ep: &Endpoint,
    groups: &[Group],
    stop: &CancellationToken,
    latency: bool,
) -> Result<JoinSet<Histogram<u64>>, RunError> {
    let mut set = JoinSet::new();
    // Connect in parallel, a bounded number at a time.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut connecting = JoinSet::new();
    for g in groups {
        for (name, topics) in &g.subscribers {
            let (ep, name, topics, gate) = (ep.clone(), name.clone(), topics.clone(), gate.clone());
            let tally = g.tally.clone();
            connecting.spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate open");
                subscribe(&ep, &name, &topics).await.map(|s| (s, tally))
            });
        }
    }
    while let Some(r) = connecting.join_next().await {
        let (payloads, tally) = r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        set.spawn(drain(payloads, tally, stop.clone(), latency));
    }
    Ok(set)
}

/// Counts what a subscriber receives (and, if asked, how late).
async fn drain(
    mut payloads: Payloads,
    tally: Arc<Tally>,
    stop: CancellationToken,
    latency: bool,
) -> Histogram<u64> {
    let mut hist = tally::histogram();
    let mut unreported = 0;
    loop {
        // Waiting on `stop` too only when nothing is ready: a wait on a
        // cancellation token takes a lock to register and another to
        // deregister, which every target would pay per message.
        let next = match payloads.next().now_or_never() {
            Some(p) if !stop.is_cancelled() => p,
            _ => tokio::select! {
                _ = stop.cancelled() => break,
                p = payloads.next() => p,
            },
        };
        let Some(p) = next else { break };
        if latency
            && tally.measuring.load(Ordering::Relaxed)
            && let Some(us) = tally::latency_us(&p)
        {
            let _ = hist.record(us.max(1));
        }
        unreported += 1;
        if unreported == REPORT_EVERY {
            tally.delivered(unreported);
            unreported = 0;
        }
    }
    tally.delivered(unreported);
    hist
}

/// Publishes as fast as the window lets, until `stop`.
async fn flood(
    mut publisher: Publisher,
    topic: String,
    tally: Arc<Tally>,
    stop: CancellationToken,
    size: usize,
    batch: usize,
) -> Result<(), RunError> {
    let mut msgs = Vec::with_capacity(batch);
    while !stop.is_cancelled() {
        let far = Instant::now() + Duration::from_secs(3600);
        let ok = tokio::select! {
            _ = stop.cancelled() => false,
            ok = tally.room_for(batch as u64, far) => ok,
        };
        if !ok {
            break;
        }
        msgs.clear();
        msgs.extend((0..batch).map(|_| tally::payload(size)));
        publisher.publish(&topic, &msgs).await?;
        tally.published.fetch_add(batch as u64, Ordering::Relaxed);
    }
    publisher.finish().await
}

/// Publishes `rate` messages a second, until `stop`.
async fn paced(
    mut publisher: Publisher,
    topic: String,
    tally: Arc<Tally>,
    stop: CancellationToken,
    size: usize,
    rate: f64,
) -> Result<(), RunError> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return publisher.finish().await,
            _ = tick.tick() => {}
        }
        publisher.publish(&topic, &[tally::payload(size)]).await?;
        tally.published.fetch_add(1, Ordering::Relaxed);
    }
}

fn totals(groups: &[Group]) -> (u64, u64) {
    groups.iter().fold((0, 0), |(p, d), g| {
        (
            p + g.tally.published.load(Ordering::Relaxed),
            d + g.tally.delivered.load(Ordering::Relaxed),
        )
    })
}

fn bar(settings: &Settings, label: &str) -> indicatif::ProgressBar {
    if !settings.progress {
        return indicatif::ProgressBar::hidden();
    }
    let total = (settings.warmup + settings.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>14} [{bar:30}] {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs groups of publishers and subscribers: warm up, measure, drain.
async fn throughput(
    ep: &Endpoint,
    settings: &Settings,
    groups: Vec<Group>,
    rate: Option<f64>,
    label: &str,
) -> Result<(Vec<Figure>, Histogram<u64>), RunError> {
    let stop_subs = CancellationToken::new();
    let stop_pubs = CancellationToken::new();
    let latency = rate.is_some();
    let mut subs = spawn_subscribers(ep, &groups, &stop_subs, latency).await?;
    let mut pubs = JoinSet::new();
    for g in &groups {
        for (name, topic) in &g.publishers {
            let p = Publisher::connect(ep, name)
                .await
                .map_err(|e| e.to_string())?;
            let (tally, stop, topic) = (g.tally.clone(), stop_pubs.clone(), topic.clone());
            match rate {
                Some(r) => pubs.spawn(paced(p, topic, tally, stop, settings.payload, r)),
                None => pubs.spawn(flood(
                    p,
                    topic,
                    tally,
                    stop,
                    settings.payload,
                    settings.batch,
                )),
            };
        }
    }
    let bar = bar(settings, label);
    let started = Instant::now();
    while started.elapsed() < settings.warmup {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message("warming up");
        if let Some(r) = pubs.try_join_next() {
            r.map_err(|e| e.to_string())??;
        }
    }
    for g in &groups {
        g.tally.measuring.store(true, Ordering::Relaxed);
    }
    let (p0, d0) = totals(&groups);
    let server_cpu = CpuMeter::start(settings.server_pids.iter().copied());
    let own_cpu = CpuMeter::start(Some(std::process::id()));
    let t0 = Instant::now();
    let mut last = (t0, d0);
    while t0.elapsed() < settings.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, d) = totals(&groups);
        let rate = (d - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), d);
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!("{:.0} delivered/s", rate));
        if let Some(r) = pubs.try_join_next() {
            r.map_err(|e| e.to_string())??;
        }
    }
    let (p1, d1) = totals(&groups);
    let secs = t0.elapsed().as_secs_f64();
    let server_pct = server_cpu.percent();
    let own_pct = own_cpu.percent();
    for g in &groups {
        g.tally.measuring.store(false, Ordering::Relaxed);
    }
    stop_pubs.cancel();
    while let Some(r) = pubs.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    // Let what is in flight arrive, up to a bound.
    let drain_until = Instant::now() + Duration::from_secs(3);
    while groups.iter().any(|g| g.tally.outstanding() > 0) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_subs.cancel();
    let mut hist = tally::histogram();
    while let Some(h) = subs.join_next().await {
        hist.add(h.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    bar.finish_and_clear();
    let lost: u64 = groups.iter().map(|g| g.tally.outstanding()).sum();
    let mut figures = vec![
        Figure::more("delivered/s", (d1 - d0) as f64 / secs, "msg/s"),
        Figure::more("published/s", (p1 - p0) as f64 / secs, "msg/s"),
        Figure::less("lost", lost as f64, "msg"),
    ];
    // On a machine this small the load generator, not the server, often
    // caps throughput; CPU per delivery shows each side's own cost.
    let delivered = (d1 - d0) as f64 / secs;
    figures.extend(cpu_figures(server_pct, own_pct, delivered));
    Ok((figures, hist))
}

/// CPU time per delivery in nanoseconds, from a CPU percentage and a
/// delivery rate over the same interval.
fn per_delivery(pct: f64, delivered_per_sec: f64) -> Option<f64> {
    (delivered_per_sec > 0.0).then(|| pct / 100.0 / delivered_per_sec * 1e9)
}

/// The server's and the load generator's CPU, in percent of one core and
/// per delivery.
fn cpu_figures(
    server_pct: Option<f64>,
    own_pct: Option<f64>,
    delivered_per_sec: f64,
) -> Vec<Figure> {
    let mut figures = Vec::new();
    for (who, pct) in [("server", server_pct), ("load-gen", own_pct)] {
        let Some(pct) = pct else { continue };
        figures.push(Figure::less(&format!("{who} CPU"), pct, "%"));
        if let Some(ns) = per_delivery(pct, delivered_per_sec) {
            figures.push(Figure::less(&format!("{who} CPU/delivery"), ns, "ns"));
        }
    }
    figures
}

fn latency_figures(hist: &Histogram<u64>) -> Vec<Figure> {
    if hist.is_empty() {
        return Vec::new();
    }
    vec![
        Figure::less("p50", hist.value_at_quantile(0.50) as f64, "us"),
        Figure::less("p90", hist.value_at_quantile(0.90) as f64, "us"),
        Figure::less("p99", hist.value_at_quantile(0.99) as f64, "us"),
        Figure::less("p99.9", hist.value_at_quantile(0.999) as f64, "us"),
        Figure::less("max", hist.max() as f64, "us"),
    ]
}

/// One publisher, one channel, `subscribers` receivers.
pub async fn fanout(
    ep: &Endpoint,
    s: &Settings,
    subscribers: usize,
) -> Result<Vec<Figure>, RunError> {
    let topic = "bench.fanout".to_owned();
    let group = Group {
        tally: Arc::new(Tally::new(subscribers as u64, s.window)),
        publishers: vec![("fanout-pub".into(), topic.clone())],
        subscribers: (0..subscribers)
            .map(|i| (format!("fanout-sub-{i}"), vec![topic.clone()]))
            .collect(),
    };
    Ok(throughput(ep, s, vec![group], None, "fanout").await?.0)
}

/// `pairs` sender/receiver pairs; with apm the messages are private
/// messages to the receiver, elsewhere one subject per receiver.
pub async fn pairs(ep: &Endpoint, s: &Settings, pairs: usize) -> Result<Vec<Figure>, RunError> {
    let apm = ep.target.is_apm();
    let groups = (0..pairs)
        .map(|i| {
            let receiver = format!("pair-recv-{i}");
            let topic = if apm {
                format!("@{receiver}")
            } else {
                format!("bench.pair.{i}")
            };
            Group {
                tally: Arc::new(Tally::new(1, s.window)),
                publishers: vec![(format!("pair-send-{i}"), topic.clone())],
                subscribers: vec![(receiver, vec![topic])],
            }
        })
        .collect();
    Ok(throughput(ep, s, groups, None, "pairs").await?.0)
}

/// `rooms` channels of `members` receivers each, `publishers` publishers
/// spread over the rooms.
pub async fn rooms(
    ep: &Endpoint,
    s: &Settings,
    rooms: usize,
    members: usize,
    publishers: usize,
) -> Result<Vec<Figure>, RunError> {
    let groups = (0..rooms)
        .map(|r| {
            let topic = format!("bench.room.{r}");
            Group {
                tally: Arc::new(Tally::new(members as u64, s.window)),
                publishers: (0..publishers)
                    .filter(|p| p % rooms == r)
                    .map(|p| (format!("room-pub-{p}"), topic.clone()))
                    .collect(),
                subscribers: (0..members)
                    .map(|m| (format!("room-{r}-member-{m}"), vec![topic.clone()]))
                    .collect(),
            }
        })
        .collect();
    Ok(throughput(ep, s, groups, None, "rooms").await?.0)
}

/// A fixed publish rate into `subscribers` receivers; latency percentiles
/// from the send time each payload carries.
pub async fn latency(
    ep: &Endpoint,
    s: &Settings,
    subscribers: usize,
    rate: f64,
) -> Result<Vec<Figure>, RunError> {
    let topic = "bench.latency".to_owned();
    let group = Group {
        tally: Arc::new(Tally::new(subscribers as u64, u64::MAX / 4)),
        publishers: vec![("latency-pub".into(), topic.clone())],
        subscribers: (0..subscribers)
            .map(|i| (format!("latency-sub-{i}"), vec![topic.clone()]))
            .collect(),
    };
    let (mut figures, hist) = throughput(ep, s, vec![group], Some(rate), "latency").await?;
    figures.retain(|f| f.name != "published/s");
    figures.extend(latency_figures(&hist));
    Ok(figures)
}

/// One message at a time from A to B and back: round-trip percentiles.
pub async fn round_trip(ep: &Endpoint, s: &Settings) -> Result<Vec<Figure>, RunError> {
    let err = |e: crate::load::target::TargetError| e.to_string();
    let mut pongs = subscribe(ep, "rtt-a", &["bench.rtt.pong".to_owned()])
        .await
        .map_err(err)?;
    let mut pings = subscribe(ep, "rtt-b", &["bench.rtt.ping".to_owned()])
        .await
        .map_err(err)?;
    let mut to_b = Publisher::connect(ep, "rtt-a-pub").await.map_err(err)?;
    let mut to_a = Publisher::connect(ep, "rtt-b-pub").await.map_err(err)?;
    let stop = CancellationToken::new();
    let echo = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let p = tokio::select! {
                    _ = stop.cancelled() => return Ok::<(), RunError>(()),
                    p = pings.next() => p,
                };
                let Some(p) = p else { return Ok(()) };
                to_a.publish("bench.rtt.pong", &[p]).await?;
            }
        })
    };
    let bar = bar(s, "round-trip");
    let mut hist = tally::histogram();
    let started = Instant::now();
    let mut count = 0u64;
    let mut measured_from = None;
    let mut meters = None;
    while started.elapsed() < s.warmup + s.duration {
        to_b.publish("bench.rtt.ping", &[tally::payload(s.payload)])
            .await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), pongs.next())
            .await
            .map_err(|_| "no echo within 5 s".to_owned())?
            .ok_or("echo stream ended")?;
        if started.elapsed() >= s.warmup {
            measured_from.get_or_insert_with(Instant::now);
            meters.get_or_insert_with(|| {
                (
                    CpuMeter::start(s.server_pids.iter().copied()),
                    CpuMeter::start(Some(std::process::id())),
                )
            });
            count += 1;
            if let Some(us) = tally::latency_us(&reply) {
                let _ = hist.record(us.max(1));
            }
        }
        if count.is_multiple_of(256) {
            bar.set_position(started.elapsed().as_millis() as u64);
        }
    }
    bar.finish_and_clear();
    stop.cancel();
    echo.await.map_err(|e| e.to_string())??;
    let secs = measured_from.map_or(1.0, |t| t.elapsed().as_secs_f64());
    let (server_pct, own_pct) = meters.map_or((None, None), |(server, own)| {
        (server.percent(), own.percent())
    });
    let mut figures = vec![Figure::more("round trips/s", count as f64 / secs, "1/s")];
    figures.extend(latency_figures(&hist));
    // A round trip is two deliveries: the ping to B and the echo to A.
    figures.extend(cpu_figures(server_pct, own_pct, 2.0 * count as f64 / secs));
    let payload = s.payload;
    let floor = tokio::task::spawn_blocking(move || crate::load::floor::loopback(payload))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("loopback floor: {e}"))?;
    figures.push(Figure::less(
        "floor p50",
        floor.value_at_quantile(0.50) as f64,
        "us",
    ));
    figures.push(Figure::less(
        "floor p99",
        floor.value_at_quantile(0.99) as f64,
        "us",
    ));
    Ok(figures)
}
