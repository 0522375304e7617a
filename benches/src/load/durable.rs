//! Publishing with receipts, durable and not: apm with the memory store,
//! apm with the disk store, and Redis Streams (`XADD`) with its append-only
//! file fsync'd on every write, in one run, legs alternating.
//!
//! Each publisher keeps `window` publishes in flight and counts a message
//! when its acknowledgement comes back (apm: the `Receipt`; Redis: the
//! `XADD` reply). Latency is send to acknowledgement. Both sides keep the
//! last 1,000 messages per stream (apm's default retention; `XADD MAXLEN ~
//! 1000` on Redis).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::load::procfs::CpuMeter;
use crate::load::server::{self, SpawnedServer};
use crate::load::tally;

/// One of the systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leg {
    /// apm, `--store memory`: a receipt means sequenced.
    ApmMemory,
    /// apm, `--store disk`: a receipt means fsync'd.
    ApmDisk,
    /// Redis Streams, `appendonly yes`, `appendfsync always`.
    RedisXadd,
}

impl Leg {
    const ALL: [Leg; 3] = [Leg::ApmMemory, Leg::ApmDisk, Leg::RedisXadd];

    fn name(self) -> &'static str {
        match self {
            Leg::ApmMemory => "apm memory",
            Leg::ApmDisk => "apm disk",
            Leg::RedisXadd => "redis xadd (aof always)",
        }
    }
}

/// What the comparison is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Publishing connections.
    pub publishers: usize,
    /// Channels (apm) or streams (Redis) they spread over.
    pub channels: usize,
    /// Publishes in flight per publisher.
    pub window: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Rounds of all legs.
    pub rounds: usize,
    /// Extra arguments for each apm-server started.
    pub apm_args: Vec<String>,
}

/// One leg's figures in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Which system.
    pub leg: Leg,
    /// Which round.
    pub round: usize,
    /// Acknowledged messages per second.
    pub acked_per_sec: f64,
    /// Send-to-acknowledgement latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Server CPU, percent of one core.
    pub server_cpu: Option<f64>,
    /// This load generator's own CPU, percent of one core.
    pub load_gen_cpu: Option<f64>,
}

impl Measured {
    /// CPU nanoseconds per acknowledged message, from a percentage.
    fn per_ack(&self, pct: Option<f64>) -> f64 {
        match pct {
            Some(pct) if self.acked_per_sec > 0.0 => pct / 100.0 / self.acked_per_sec * 1e9,
            _ => f64::NAN,
        }
    }
}

/// A server started for one leg, and its data directory (removed after
/// the server has stopped: fields drop in order).
struct Running {
    server: Server,
    _dir: tempfile::TempDir,
}

enum Server {
    Apm(SpawnedServer),
    Redis(RedisServer),
}

impl Running {
    fn pid(&self) -> u32 {
        match &self.server {
            Server::Apm(s) => s.pid(),
            Server::Redis(r) => r.child.id(),
        }
    }
}

/// A redis-server this tool started, on its own port and directory.
struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port())
}

fn spawn_redis(dir: &std::path::Path) -> Result<RedisServer, String> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start redis-server (is it on PATH?): {e}"))?;
    let server = RedisServer { child, addr };
    server::wait_until_listening(addr, "redis-server")?;
    Ok(server)
}

fn start(leg: Leg, plan: &Plan) -> Result<Running, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = match leg {
        Leg::ApmMemory | Leg::ApmDisk => {
            let store = if leg == Leg::ApmDisk {
                "disk"
            } else {
                "memory"
            };
            let mut args = vec![
                "--store".to_owned(),
                store.to_owned(),
                "--data-dir".to_owned(),
                dir.path().display().to_string(),
            ];
            args.extend(plan.apm_args.iter().cloned());
            Server::Apm(server::spawn(&args, false)?)
        }
        Leg::RedisXadd => Server::Redis(spawn_redis(dir.path())?),
    };
    Ok(Running { server, _dir: dir })
}

/// A connection that publishes and waits for acknowledgements.
#[derive(Clone)]
enum Acker {
    Apm(apm_client::Client),
    Redis(redis::aio::MultiplexedConnection),
}

impl Acker {
    async fn connect(running: &Running, name: &str) -> Result<Acker, String> {
        Ok(match &running.server {
            Server::Apm(s) => Acker::Apm(
                apm_client::Client::builder(s.addr.to_string())
                    .credentials(name, "")
                    .queue_size(65_536)
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Server::Redis(r) => {
                let client = redis::Client::open(format!("redis://{}", r.addr))
                    .map_err(|e| e.to_string())?;
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                Acker::Redis(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
        })
    }

    /// Publishes one message and waits for its acknowledgement.
    async fn publish(mut self, stream: Arc<str>, payload: Bytes) -> Result<(), String> {
        match &mut self {
            Acker::Apm(c) => c
                .publish(&stream, payload)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Acker::Redis(c) => redis::cmd("XADD")
                .arg(&*stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(1000)
                .arg("*")
                .arg("p")
                .arg(&payload[..])
                .query_async::<String>(c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// Counters shared by a leg's publishers.
#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    stop: AtomicBool,
    acked: AtomicU64,
}

async fn publish_loop(
    acker: Acker,
    stream: Arc<str>,
    window: usize,
    size: usize,
    counters: Arc<Counters>,
) -> Result<Histogram<u64>, String> {
    let mut hist = tally::histogram();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < window && !counters.stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let fut = acker.clone().publish(stream.clone(), tally::payload(size));
            in_flight.push(async move { fut.await.map(|()| sent) });
        }
        let Some(done) = in_flight.next().await else {
            return Ok(hist);
        };
        let sent = done?;
        if counters.measuring.load(Ordering::Relaxed) {
            counters.acked.fetch_add(1, Ordering::Relaxed);
            let _ = hist.record(sent.elapsed().as_micros() as u64);
        }
    }
}

async fn measure(leg: Leg, round: usize, plan: &Plan) -> Result<Measured, String> {
    let running = start(leg, plan)?;
    let counters = Arc::new(Counters::default());
    let mut set = JoinSet::new();
    for p in 0..plan.publishers {
        let acker = Acker::connect(&running, &format!("durable-pub-{p}")).await?;
        let stream: Arc<str> = Arc::from(format!("durable-{}", p % plan.channels.max(1)));
        set.spawn(publish_loop(
            acker,
            stream,
            plan.window.max(1),
            plan.payload.max(8),
            counters.clone(),
        ));
    }
    tokio::time::sleep(plan.warmup).await;
    let cpu = CpuMeter::start(Some(running.pid()));
    let own_cpu = CpuMeter::start(Some(std::process::id()));
    counters.measuring.store(true, Ordering::Relaxed);
    let began = Instant::now();
    tokio::time::sleep(plan.duration).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    let server_cpu = cpu.percent();
    let load_gen_cpu = own_cpu.percent();
    counters.stop.store(true, Ordering::Relaxed);
    let mut hist = tally::histogram();
    // Publishers finish what is in flight; bounded in case a server hangs.
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = set.join_next().await {
            hist.add(r.map_err(|e| e.to_string())??)
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
    .await;
    drained.map_err(|_| format!("{}: publishers did not finish", leg.name()))??;
    drop(running);
    Ok(Measured {
        leg,
        round,
        acked_per_sec: counters.acked.load(Ordering::Relaxed) as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        server_cpu,
        load_gen_cpu,
    })
}

/// Runs every leg `plan.rounds` times, alternating.
pub async fn run(plan: &Plan, verbose: bool) -> Result<Vec<Measured>, String> {
    let mut out = Vec::new();
    for round in 0..plan.rounds.max(1) {
        for leg in Leg::ALL {
            if verbose {
                eprintln!("round {} of {}: {}", round + 1, plan.rounds, leg.name());
            }
            out.push(measure(leg, round, plan).await?);
        }
    }
    Ok(out)
}

fn mean(runs: &[Measured], leg: Leg, f: impl Fn(&Measured) -> f64) -> f64 {
    let v: Vec<f64> = runs.iter().filter(|m| m.leg == leg).map(f).collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The table: each leg's mean over rounds, then the ratios.
pub fn table(plan: &Plan, runs: &[Measured]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "durable publish: {} publishers x {} in flight over {} streams, {} B payload, {:?} measured after {:?} warm-up, {} round(s)\n",
        plan.publishers,
        plan.window,
        plan.channels,
        plan.payload,
        plan.duration,
        plan.warmup,
        plan.rounds
    );
    let _ = writeln!(
        t,
        "{:<26} {:>12} {:>10} {:>10} {:>10} {:>9} {:>11} {:>11}",
        "leg", "acked/s", "p50 us", "p99 us", "p99.9 us", "srv cpu%", "srv ns/ack", "gen ns/ack"
    );
    for leg in Leg::ALL {
        let cpu = mean(runs, leg, |m| m.server_cpu.unwrap_or(f64::NAN));
        let _ = writeln!(
            t,
            "{:<26} {:>12.0} {:>10.0} {:>10.0} {:>10.0} {:>9.0} {:>11.0} {:>11.0}",
            leg.name(),
            mean(runs, leg, |m| m.acked_per_sec),
            mean(runs, leg, |m| m.p50_us as f64),
            mean(runs, leg, |m| m.p99_us as f64),
            mean(runs, leg, |m| m.p999_us as f64),
            cpu,
            mean(runs, leg, |m| m.per_ack(m.server_cpu)),
            mean(runs, leg, |m| m.per_ack(m.load_gen_cpu)),
        );
    }
    let rate = |leg| mean(runs, leg, |m| m.acked_per_sec);
    let p99 = |leg| mean(runs, leg, |m| m.p99_us as f64);
    let _ = writeln!(
        t,
        "\napm disk / apm memory: {:.2}x acked/s, {:.2}x p99",
        rate(Leg::ApmDisk) / rate(Leg::ApmMemory),
        p99(Leg::ApmDisk) / p99(Leg::ApmMemory)
    );
    let _ = writeln!(
        t,
        "apm disk / redis xadd:  {:.2}x acked/s, {:.2}x p99",
        rate(Leg::ApmDisk) / rate(Leg::RedisXadd),
        p99(Leg::ApmDisk) / p99(Leg::RedisXadd)
    );
    let per_round: Vec<String> = (0..plan.rounds.max(1))
        .map(|r| {
            let of = |leg| {
                runs.iter()
                    .find(|m| m.leg == leg && m.round == r)
                    .map_or(f64::NAN, |m| m.acked_per_sec)
            };
            format!("{:.2}x", of(Leg::ApmDisk) / of(Leg::RedisXadd))
        })
        .collect();
    let _ = writeln!(
        t,
        "apm disk / redis xadd acked/s per round: {}",
        per_round.join(", ")
    );
    t
}
