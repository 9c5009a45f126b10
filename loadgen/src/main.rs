//! loadgen: N simulated agents in one process, each with its own key, real TLS 1.3 +
//! HTTP/2 connection and the agent's own comms code, answering tasks with synthetic
//! rows of realistic size. Prints progress while it runs and writes a JSON report.

mod stats;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use packhunt::agent::outbox::ArtifactOutput;
use packhunt::agent::run::{self, AgentOptions};
use packhunt::agent::runner::{push_row, Runner};
use packhunt::agent::url::ServerUrl;
use packhunt::config::ClientConfig;
use packhunt::protocol::pb;
use packhunt::tls::agent_key::AgentIdentity;

use stats::{AgentObserver, Stats};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agents one source address may hold towards one server port (~28k ephemeral ports,
/// with room to spare for reconnects).
const AGENTS_PER_SOURCE_IP: usize = 20_000;
/// File descriptors kept free for everything that is not an agent connection.
const RESERVED_FDS: u64 = 200;

#[derive(Parser)]
#[command(name = "loadgen", about = "Simulated packhunt agent fleets (real mTLS + HTTP/2 connections)")]
struct Args {
    /// client.config.toml of the deployment to load.
    #[arg(long)]
    config: PathBuf,
    /// Simulated agents in this process.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Stop once this many flows were delivered in full (0 = don't).
    #[arg(long, default_value_t = 0)]
    exit_after_flows: u64,
    /// New agents started per second while ramping up.
    #[arg(long, default_value_t = 1000)]
    ramp_per_second: u64,
    /// Keep agent keys here so a rerun is the same fleet (agent-N.toml).
    #[arg(long)]
    identity_dir: Option<PathBuf>,
    /// Spread agents over this many source addresses 127.0.0.1, 127.0.0.2, ...
    /// (0 = as many as the fleet needs).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// Fault injection: each agent drops its connection after every N-th upload, before
    /// taking the ack, so the batch is resent after the reconnect (0 = never).
    #[arg(long, default_value_t = 0)]
    drop_connection_every_uploads: u64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Answers every artifact with deterministic synthetic rows.
struct SyntheticRunner;

impl Runner for SyntheticRunner {
    fn collect(&self, task: &pb::Task) -> Vec<ArtifactOutput> {
        task.artifacts
            .iter()
            .map(|a| {
                let count = packhunt::agent::artifacts::synthetic::synthetic_row_count(&a.name);
                let seed = fnv1a(task.flow_id.as_bytes()) ^ fnv1a(a.name.as_bytes());
                let mut jsonl = Vec::new();
                let rows = packhunt::agent::artifacts::synthetic::synthetic_rows(&a.name, count, seed);
                rows.iter().for_each(|r| push_row(&mut jsonl, r));
                ArtifactOutput { name: a.name.clone(), jsonl, rows: rows.len() as u64, error: None }
            })
            .collect()
    }

    fn is_blocking(&self) -> bool {
        false
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

fn main() {
    // Errors are for operators: the message chain, no backtrace, exit status 1.
    if let Err(e) = run() {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    check_fd_budget(args.clients)?;
    let config = ClientConfig::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run_fleet(args, config))
}

fn check_fd_budget(clients: usize) -> Result<()> {
    let mut limit = libc_rlimit_nofile();
    if limit == 0 {
        limit = u64::MAX;
    }
    if clients as u64 + RESERVED_FDS > limit {
        bail!(
            "{clients} agents need {} open files but this process may hold {limit}; run several loadgen processes",
            clients as u64 + RESERVED_FDS
        );
    }
    Ok(())
}

fn libc_rlimit_nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Max open files")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn run_fleet(args: Args, config: ClientConfig) -> Result<()> {
    let urls = config.client.server_urls.iter().map(|u| ServerUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
    let identities = load_identities(&args)?;
    let source_ips = if args.source_ips == 0 { args.clients.div_ceil(AGENTS_PER_SOURCE_IP).max(1) } else { args.source_ips };
    let stats = Arc::new(Stats::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut agents = Vec::with_capacity(args.clients);
    for (i, identity) in identities.into_iter().enumerate() {
        let tls = packhunt::tls::client::agent_client_config(
            &config.client.ca_certificate,
            identity.rustls_cert_chain(),
            identity.rustls_private_key(),
        )?;
        let local_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips) as u8));
        let info = pb::ClientInfo { hostname: format!("loadgen-{i}"), os: "linux".into(), version: "loadgen".into() };
        let opts = AgentOptions {
            urls: urls.clone(),
            tls,
            local_ip: Some(local_ip),
            info,
            max_upload_bytes: config.client.max_upload_bytes,
            drop_connection_every_uploads: args.drop_connection_every_uploads,
        };
        let observer = Arc::new(AgentObserver { stats: stats.clone(), client_id: identity.client_id().to_string() });
        let stop = stop_rx.clone();
        let delay = Duration::from_micros(i as u64 * 1_000_000 / args.ramp_per_second.max(1));
        agents.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run::run(opts, Arc::new(SyntheticRunner), observer, stop).await;
        }));
    }
    let connect_all = watch_progress(&args, &stats, started).await;
    let _ = stop_tx.send(true);
    for agent in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    }
    let report = stats.report(args.clients, started.elapsed(), connect_all);
    let text = serde_json::to_string_pretty(&report)?;
    match &args.report {
        Some(path) => std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    eprintln!(
        "loadgen done: peak {} connected, {} tasks, {} flows, {} errors",
        report.connected_peak, report.tasks_received, report.flows_completed, report.errors
    );
    Ok(())
}

fn load_identities(args: &Args) -> Result<Vec<AgentIdentity>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let identity = match &args.identity_dir {
            Some(dir) => packhunt::agent::writeback::load_or_create(&dir.join(format!("agent-{i}.toml")))?,
            None => AgentIdentity::generate()?,
        };
        out.push(identity);
    }
    eprintln!("loadgen: {} agent identities ready in {:.1}s", out.len(), started.elapsed().as_secs_f64());
    Ok(out)
}

/// Prints a progress line each second until the run should end; returns how long it
/// took for every agent to connect, if they all did.
async fn watch_progress(args: &Args, stats: &Stats, started: Instant) -> Option<Duration> {
    let deadline = started + Duration::from_secs(args.duration_s);
    let mut connect_all = None;
    let mut last_bytes = 0u64;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = tick => {}
            _ = async { if let Some(s) = interrupt.as_mut() { s.recv().await; } else { std::future::pending::<()>().await } } => return connect_all,
            _ = async { if let Some(s) = terminate.as_mut() { s.recv().await; } else { std::future::pending::<()>().await } } => return connect_all,
        }
        let connected = stats.connected.load(Ordering::Relaxed);
        if connect_all.is_none() && stats.ever_connected.load(Ordering::Relaxed) as usize >= args.clients {
            connect_all = Some(started.elapsed());
        }
        let bytes = stats.upload_bytes.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4}s] connected {connected}/{} tasks {} flows {} upload {:.1} MB/s errors {}",
            started.elapsed().as_secs(),
            args.clients,
            stats.tasks.load(Ordering::Relaxed),
            stats.flows_done.load(Ordering::Relaxed),
            (bytes - last_bytes) as f64 / 1e6,
            stats.errors.load(Ordering::Relaxed),
        );
        last_bytes = bytes;
        let flows = stats.flows_done.load(Ordering::Relaxed);
        if Instant::now() >= deadline || (args.exit_after_flows > 0 && flows >= args.exit_after_flows) {
            return connect_all;
        }
    }
}
