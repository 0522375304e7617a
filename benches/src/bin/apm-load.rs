//! `apm-load`: one scenario against apm and, with `--vs`, a peer server,
//! A B A B, with the ratio per figure.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use apm_benches::load::nats_cluster::NatsCluster;
use apm_benches::load::report::{Report, Run};
use apm_benches::load::scenario::{self, Figure, Settings};
use apm_benches::load::server::{self, SpawnedServer};
use apm_benches::load::target::{Endpoint, Target};
use apm_benches::load::{connections, durable, procfs};
use clap::{Parser, Subcommand};

/// Load tester for apm and the servers people compare it with.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The server to load: apm, apm-tls (apm with TLS), nats, redis or
    /// mqtt.
    #[arg(long, global = true, default_value = "apm")]
    target: Target,
    /// Also run a peer, alternating apm and the peer (A B A B), and print
    /// apm's ratio to it. `--vs apm-tls` measures what TLS costs: apm
    /// without and with TLS in the same run.
    #[arg(long, global = true)]
    vs: Option<Target>,
    /// Load apm over TLS (the same as `--target apm-tls`). The apm-server
    /// this tool starts gets a self-signed certificate made for the run;
    /// with `--apm-addr`, the server's certificate is checked against
    /// `--tls-ca`, or the system's roots.
    #[arg(long, global = true)]
    tls: bool,
    /// With `--tls` and `--apm-addr`: a PEM file with the CA
    /// certificate(s) the server's certificate is checked against.
    #[arg(long, global = true, value_name = "PATH")]
    tls_ca: Option<std::path::PathBuf>,
    /// Rounds per target (default 2 with --vs, else 1).
    #[arg(long, global = true)]
    rounds: Option<usize>,
    /// An apm server to use, or a cluster's nodes, comma-separated;
    /// without it the release apm-server beside this binary is started
    /// for the run and stopped after.
    #[arg(long, global = true)]
    apm_addr: Option<String>,
    /// The token secret of the apm server at `--apm-addr`: its clients
    /// connect with tokens made from it (without one, in dev mode). The
    /// apm-server this tool starts gets a secret made for the run, so its
    /// clients authenticate as in production.
    #[arg(long, global = true, env = "APM_LOAD_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Start apm-server without a secret: clients connect in dev mode,
    /// with no token to check and no expiry timer.
    #[arg(long, global = true)]
    dev_mode: bool,
    /// Extra arguments for the apm-server this tool starts.
    #[arg(long, global = true, allow_hyphen_values = true)]
    apm_arg: Vec<String>,
    /// apm nodes to start (cluster mode: needs `--apm-arg=--cluster
    /// --apm-arg=redis://...`); clients are spread over them by name, and
    /// the server CPU column is theirs together.
    #[arg(long, global = true, default_value_t = 1)]
    nodes: usize,
    /// Records a perf profile (call graphs) of apm's server processes
    /// during each apm round, warm-up included, to PREFIX-ROUND.data (read
    /// with `perf report -i`). Needs `perf` on PATH.
    #[arg(long, global = true, value_name = "PREFIX")]
    profile: Option<std::path::PathBuf>,
    /// Another process whose CPU counts as apm's (the cluster's Redis),
    /// by pid; may be given more than once.
    #[arg(long, global = true, value_name = "PID")]
    count_cpu_of: Vec<u32>,
    /// The peer's address (default: its standard loopback port).
    #[arg(long, global = true)]
    peer_addr: Option<String>,
    /// With `--vs nats`: start a NATS cluster of this many nodes (routed
    /// to each other, on free loopback ports) for each round, and spread
    /// clients over them as over apm's nodes, instead of using the NATS at
    /// `--peer-addr`.
    #[arg(long, global = true, default_value_t = 0)]
    nats_nodes: usize,
    /// Measured time.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, global = true, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Payload bytes (the first 8 carry the send time).
    #[arg(long, global = true, default_value_t = 128)]
    payload: usize,
    /// Flow control: messages a publisher may have outstanding per receiver.
    #[arg(long, global = true, default_value_t = 1000)]
    window: u64,
    /// Messages a publisher hands its client library at once.
    #[arg(long, global = true, default_value_t = 16)]
    batch: usize,
    /// Print JSON instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One publisher, one channel, N subscribers.
    Fanout {
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
    },
    /// N sender/receiver pairs (apm: private messages).
    Pairs {
        /// Pairs.
        #[arg(long, default_value_t = 200)]
        pairs: usize,
    },
    /// M channels of K members, P publishers.
    Rooms {
        /// Channels.
        #[arg(long, default_value_t = 50)]
        rooms: usize,
        /// Members per channel.
        #[arg(long, default_value_t = 20)]
        members: usize,
        /// Publishers, spread over the channels.
        #[arg(long, default_value_t = 50)]
        publishers: usize,
    },
    /// A fixed publish rate into N subscribers: latency percentiles.
    Latency {
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Messages per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// 1 -> 1 -> 1 round trips, one at a time.
    Rtt,
    /// N idle authenticated connections, each subscribed: connect time and
    /// server memory per connection (apm only).
    Connections {
        /// Connections in total.
        #[arg(long, default_value_t = 19_900)]
        count: usize,
        /// Load-generator processes (each under its open-file limit).
        #[arg(long, default_value_t = 4)]
        workers: usize,
    },
    /// Publishing with receipts: apm with the memory store, apm with the
    /// disk store, and Redis Streams (XADD, AOF fsync always; the tool
    /// starts its own redis-server) in one run.
    Durable {
        /// Publishing connections.
        #[arg(long, default_value_t = 50)]
        publishers: usize,
        /// Publishes each publisher keeps waiting for their receipts.
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        /// Channels / streams they spread over.
        #[arg(long, default_value_t = 10)]
        channels: usize,
    },
    /// Internal: one process of the connections scenario.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        source: IpAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apm-load: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Scenario::Worker {
        addr,
        count,
        source,
    } = &cli.scenario
    {
        let secret = std::env::var(connections::WORKER_SECRET).ok();
        return connections::worker(addr, *count, *source, secret.as_deref()).await;
    }
    if let Scenario::Durable {
        publishers,
        in_flight,
        channels,
    } = &cli.scenario
    {
        if cli.vs.is_some() || cli.target != Target::Apm || cli.apm_addr.is_some() || cli.tls {
            return Err(
                "the durable scenario starts its own servers and compares them itself".into(),
            );
        }
        let plan = durable::Plan {
            publishers: *publishers,
            channels: *channels,
            window: *in_flight,
            payload: cli.payload,
            warmup: cli.warmup,
            duration: cli.duration,
            rounds: cli.rounds.unwrap_or(2).max(1),
            apm_args: cli.apm_arg.clone(),
        };
        let runs = durable::run(&plan, !cli.json).await?;
        if cli.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&runs).map_err(|e| e.to_string())?
            );
        } else {
            println!("{}", durable::table(&plan, &runs));
        }
        return Ok(());
    }
    let base = match (cli.target, cli.tls) {
        (Target::Apm, true) => Target::ApmTls,
        (_, true) => return Err("--tls is for apm: leave --target at apm".into()),
        (target, false) => target,
    };
    let mut targets = vec![base];
    if let Some(peer) = cli.vs {
        if !base.is_apm() {
            return Err("--vs compares apm with a peer: leave --target at apm".into());
        }
        if peer == base || peer == Target::Apm {
            return Err("--vs needs a peer: apm-tls (from plain apm), nats, redis or mqtt".into());
        }
        if peer == Target::ApmTls && cli.apm_addr.is_some() {
            return Err("--vs apm-tls starts both servers itself: leave out --apm-addr".into());
        }
        targets.push(peer);
    }
    if matches!(cli.scenario, Scenario::Connections { .. }) && targets != [Target::Apm] {
        return Err("the connections scenario measures plain apm only".into());
    }
    let tls_ca: Option<std::sync::Arc<[u8]>> = match &cli.tls_ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .into(),
        ),
        None => None,
    };
    let rounds = cli
        .rounds
        .unwrap_or(if cli.vs.is_some() { 2 } else { 1 })
        .max(1);
    let nodes = cli.nodes.max(1);
    if nodes > 1 && (cli.apm_addr.is_some() || !cli.apm_arg.iter().any(|a| a == "--cluster")) {
        return Err(
            "--nodes starts a cluster: give --apm-arg=--cluster --apm-arg=redis://HOST:PORT, \
             and no --apm-addr"
                .into(),
        );
    }
    // The servers this tool starts check tokens, as in production.
    let secret_given = cli
        .apm_arg
        .iter()
        .any(|a| a == "--secret" || a.starts_with("--secret="));
    let own_secret: Option<std::sync::Arc<str>> = if secret_given {
        // The server's secret is the one in --apm-arg; --secret says it
        // to the clients.
        cli.secret.as_deref().map(Into::into)
    } else if cli.dev_mode {
        None
    } else {
        Some(cli.secret.clone().unwrap_or_else(run_secret).into())
    };
    let mut apm_args = cli.apm_arg.clone();
    if let Some(secret) = own_secret.as_ref().filter(|_| !secret_given) {
        apm_args.extend(["--secret".to_owned(), secret.to_string()]);
    }
    let mut spawned: Vec<SpawnedServer> = Vec::new();
    let mut nats: Option<NatsCluster> = None;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for &target in &targets {
            let (ep, pids, node_pids) = match target {
                Target::Apm | Target::ApmTls => match &cli.apm_addr {
                    Some(addrs) => (
                        Endpoint {
                            tls_ca: tls_ca.clone(),
                            secret: cli.secret.as_deref().map(Into::into),
                            nodes: addrs.split(',').map(str::to_owned).collect(),
                            ..Endpoint::new(
                                target,
                                addrs.split(',').next().unwrap_or_default().to_owned(),
                            )
                        },
                        procfs::find_process(target.process_name())
                            .into_iter()
                            .chain(cli.count_cpu_of.iter().copied())
                            .collect::<Vec<_>>(),
                        procfs::find_process(target.process_name())
                            .into_iter()
                            .collect::<Vec<_>>(),
                    ),
                    None => {
                        // Fresh servers per round, so runs do not inherit
                        // each other's state.
                        spawned.clear();
                        for _ in 0..nodes {
                            spawned.push(server::spawn(&apm_args, target == Target::ApmTls)?);
                        }
                        let ep = Endpoint {
                            tls_ca: spawned[0].tls_ca.clone(),
                            secret: own_secret.clone(),
                            nodes: spawned.iter().map(|s| s.addr.to_string()).collect(),
                            ..Endpoint::new(target, spawned[0].addr.to_string())
                        };
                        let node_pids: Vec<u32> = spawned.iter().map(|s| s.pid()).collect();
                        let pids = node_pids
                            .iter()
                            .copied()
                            .chain(cli.count_cpu_of.iter().copied())
                            .collect();
                        (ep, pids, node_pids)
                    }
                },
                Target::Nats if cli.nats_nodes > 0 => {
                    nats.take();
                    let cluster = NatsCluster::start(cli.nats_nodes).await?;
                    let ep = Endpoint {
                        nodes: cluster.addrs.clone(),
                        ..Endpoint::new(Target::Nats, cluster.addrs[0].clone())
                    };
                    let pids = cluster.pids();
                    nats = Some(cluster);
                    (ep, pids.clone(), pids)
                }
                peer => (
                    Endpoint::new(
                        peer,
                        cli.peer_addr
                            .clone()
                            .unwrap_or_else(|| peer.default_addr().to_owned()),
                    ),
                    procfs::find_process(peer.process_name())
                        .into_iter()
                        .collect(),
                    Vec::new(),
                ),
            };
            let settings = Settings {
                duration: cli.duration,
                warmup: cli.warmup,
                payload: cli.payload.max(8),
                window: cli.window,
                batch: cli.batch.max(1),
                progress: !cli.quiet && !cli.json,
                server_pids: pids.clone(),
            };
            if !cli.json {
                eprintln!("round {} of {rounds}: {target} at {}", round + 1, ep.addr);
            }
            let profiler = match (&cli.profile, target.is_apm()) {
                (Some(prefix), true) => {
                    let out = format!("{}-{}.data", prefix.display(), round + 1);
                    Some(profile(&pids, &out, cli.warmup + cli.duration)?)
                }
                _ => None,
            };
            let figures: Vec<Figure> = match &cli.scenario {
                Scenario::Fanout { subscribers } => {
                    scenario::fanout(&ep, &settings, *subscribers).await?
                }
                Scenario::Pairs { pairs } => scenario::pairs(&ep, &settings, *pairs).await?,
                Scenario::Rooms {
                    rooms,
                    members,
                    publishers,
                } => scenario::rooms(&ep, &settings, *rooms, *members, *publishers).await?,
                Scenario::Latency { subscribers, rate } => {
                    scenario::latency(&ep, &settings, *subscribers, *rate).await?
                }
                Scenario::Rtt => scenario::round_trip(&ep, &settings).await?,
                Scenario::Connections { count, workers } => {
                    connections::run(&ep, *count, *workers, &node_pids, &pids).await?
                }
                Scenario::Worker { .. } | Scenario::Durable { .. } => {
                    unreachable!("handled above")
                }
            };
            if let Some(mut perf) = profiler {
                // It stops by itself when its time is up.
                let _ = perf.wait();
            }
            runs.push(Run {
                target,
                round,
                figures,
            });
        }
    }
    spawned.clear();
    drop(nats);
    let label = format!(
        "{:?}, payload {} B, {:?} measured after {:?} warm-up, {} round(s)",
        cli.scenario, cli.payload, cli.duration, cli.warmup, rounds
    );
    let report = Report::new(label, runs, cli.vs);
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", report.table());
    }
    Ok(())
}

/// Starts `perf record` on `pids` for `time`, writing to `out`.
fn profile(pids: &[u32], out: &str, time: Duration) -> Result<std::process::Child, String> {
    if pids.is_empty() {
        return Err("--profile: no server process to record".into());
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    std::process::Command::new("perf")
        .args([
            "record",
            "-F",
            "499",
            "-g",
            "-o",
            out,
            "-p",
            &pids.join(","),
        ])
        .arg("--")
        .args(["sleep", &format!("{:.3}", time.as_secs_f64())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("--profile: cannot start perf: {e}"))
}

/// A token secret for the servers of one run: 32 hex digits from the
/// standard library's per-process random hash keys.
fn run_secret() -> String {
    use std::hash::BuildHasher;
    let key = || std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{:016x}{:016x}", key(), key())
}
