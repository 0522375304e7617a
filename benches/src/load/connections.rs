//! The `connections` scenario: many idle, authenticated, subscribed
//! connections spread over worker processes and source addresses, so that
//! no process passes its open-file limit, and over a cluster's nodes
//! (worker by worker, in turn).

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::load::procfs;
use crate::load::scenario::{Figure, RunError};
use crate::load::target::{Endpoint, Publisher};

/// The channel every idle connection joins.
pub const CHANNEL: &str = "bench.idle";

/// Worker side: opens `count` connections from `source`, each subscribed
/// to [`CHANNEL`]; prints `ready <connected> <ms> <refused>`; on a `stop`
/// line (or EOF)
/// prints `received <n> <cpu seconds>` (messages delivered to its
/// connections, waiting up to 10 s for one each, and the CPU time this
/// process used) and exits.
pub async fn worker(
    addr: &str,
    count: usize,
    source: IpAddr,
    secret: Option<&str>,
) -> Result<(), RunError> {
    let secret: Option<Arc<str>> = secret.map(Arc::from);
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..count {
        let (addr, gate, received) = (addr.to_owned(), gate.clone(), received.clone());
        let secret = secret.clone();
        connecting.spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate open");
            let user = format!("idle-{source}-{i}");
            let token = super::target::token(secret.as_deref(), &user);
            let client = apm_client::Client::builder(addr)
                .credentials(user, token)
                .local_ip(source)
                .connect_timeout(Duration::from_secs(30))
                // Tens of thousands of handshakes on two shared cores: an
                // answer may take longer than the SDK's default allows.
                .request_timeout(Duration::from_secs(60))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut sub = client.subscribe(CHANNEL).await.map_err(|e| e.to_string())?;
            drop(permit);
            tokio::spawn(async move {
                while sub.next().await.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            Ok::<_, String>(client)
        });
    }
    let mut clients = Vec::with_capacity(count);
    let mut refused = 0usize;
    let mut last_error = String::new();
    while let Some(r) = connecting.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(client) => clients.push(client),
            // Past the server's limit a refusal is the expected answer.
            Err(e) => {
                refused += 1;
                last_error = e;
            }
        }
    }
    if refused > 0 {
        eprintln!("{source}: {refused} connections refused, last: {last_error}");
    }
    println!(
        "ready {} {} {refused}",
        clients.len(),
        start.elapsed().as_millis()
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "stop" {
            break;
        }
    }
    // The announcement was sequenced before `stop` was sent; give it a
    // bounded time to reach every connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (received.load(Ordering::Relaxed) as usize) < clients.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "received {} {}",
        received.load(Ordering::Relaxed),
        procfs::cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Where a worker process finds the server's token secret.
pub const WORKER_SECRET: &str = "APM_LOAD_WORKER_SECRET";

/// Runs `total` connections over `workers` processes against `ep` (its
/// nodes in turn). `node_pids` are the server's processes whose RSS is
/// measured (a cluster's nodes); `cpu_pids` those whose CPU is counted
/// (with a cluster's Redis).
pub async fn run(
    ep: &Endpoint,
    total: usize,
    workers: usize,
    node_pids: &[u32],
    cpu_pids: &[u32],
) -> Result<Vec<Figure>, RunError> {
    let workers = workers.max(1);
    // Connected first, so it has its place even when the run fills the
    // server.
    let mut publisher = Publisher::connect(ep, "idle-announcer")
        .await
        .map_err(|e| e.to_string())?;
    let rss = || -> Option<Vec<u64>> { node_pids.iter().map(|p| procfs::rss_bytes(*p)).collect() };
    let rss_before = rss();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server_cpu = procfs::CpuMeter::start(cpu_pids.iter().copied());
    let own_cpu_before = procfs::cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut children = Vec::new();
    for w in 0..workers {
        let count = total / workers + usize::from(w < total % workers);
        // 127.0.0.2, .3, ...: each source address has its own ephemeral
        // ports.
        let source = format!("127.0.0.{}", 2 + w);
        let node = &ep.nodes[w % ep.nodes.len().max(1)];
        let mut command = Command::new(&exe);
        command.args([
            "worker",
            "--addr",
            node,
            "--count",
            &count.to_string(),
            "--source",
            &source,
        ]);
        if let Some(secret) = &ep.secret {
            // Not on the command line, where `ps` shows it.
            command.env(WORKER_SECRET, &**secret);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        children.push((child, stdout));
    }
    let mut connected = 0usize;
    let mut refused = 0usize;
    let mut slowest_ms = 0u64;
    for (_, out) in &mut children {
        let line = tokio::time::timeout(Duration::from_secs(300), out.next_line())
            .await
            .map_err(|_| "a worker did not get ready within 300 s".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("a worker exited before it was ready (see its error above)")?;
        let mut parts = line.split_whitespace().skip(1);
        connected += parts
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        slowest_ms = slowest_ms.max(parts.next().and_then(|n| n.parse().ok()).unwrap_or(0));
        refused += parts
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    let all_up = started.elapsed();
    let rss_after = rss();
    // Prove the connections are live: one message reaches every one.
    publisher
        .publish_sync(CHANNEL, crate::load::tally::payload(32))
        .await?;
    let mut received = 0u64;
    let mut workers_cpu = 0.0;
    for (child, out) in &mut children {
        let stdin = child.stdin.as_mut().expect("piped");
        let _ = stdin.write_all(b"stop\n").await;
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(30), out.next_line()).await
        {
            let mut parts = line.split_whitespace().skip(1);
            received += parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            workers_cpu += parts
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    // CPU per connection: each was made, authenticated, subscribed, and
    // handed one message.
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = server_cpu.percent().map(|pct| pct / 100.0 * wall);
    let own_cpu = own_cpu_before
        .zip(procfs::cpu_seconds(std::process::id()))
        .map(|(before, after)| after - before + workers_cpu);
    let mut figures = vec![
        Figure {
            name: "connections".into(),
            value: connected as f64,
            unit: "",
            higher_is_better: true,
        },
        Figure {
            name: "refused".into(),
            value: refused as f64,
            unit: "",
            higher_is_better: false,
        },
        Figure {
            name: "time to connect".into(),
            value: all_up.as_secs_f64(),
            unit: "s",
            higher_is_better: false,
        },
        Figure {
            name: "connects/s".into(),
            value: connected as f64 / all_up.as_secs_f64(),
            unit: "1/s",
            higher_is_better: true,
        },
        Figure {
            name: "slowest worker".into(),
            value: slowest_ms as f64 / 1000.0,
            unit: "s",
            higher_is_better: false,
        },
        Figure {
            name: "delivered to idle".into(),
            value: received as f64,
            unit: "msg",
            higher_is_better: true,
        },
    ];
    for (who, cpu) in [("server", server_cpu), ("load-gen", own_cpu)] {
        if let Some(cpu) = cpu.filter(|c| c.is_finite() && connected > 0) {
            figures.push(Figure {
                name: format!("{who} CPU/conn"),
                value: cpu / connected as f64 * 1e6,
                unit: "us",
                higher_is_better: false,
            });
        }
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grew: u64 = before
            .iter()
            .zip(&after)
            .map(|(a, b)| b.saturating_sub(*a))
            .sum();
        figures.push(Figure {
            name: "server RSS".into(),
            value: after.iter().sum::<u64>() as f64 / (1 << 20) as f64,
            unit: "MiB",
            higher_is_better: false,
        });
        if after.len() > 1 {
            figures.push(Figure {
                name: "largest node RSS".into(),
                value: after.iter().copied().max().unwrap_or(0) as f64 / (1 << 20) as f64,
                unit: "MiB",
                higher_is_better: false,
            });
        }
        // Over all nodes: what a connection costs the node that holds it.
        figures.push(Figure {
            name: "server RSS/conn".into(),
            value: grew as f64 / connected.max(1) as f64,
            unit: "B",
            higher_is_better: false,
        });
    }
    Ok(figures)
}
