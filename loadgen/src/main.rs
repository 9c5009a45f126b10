//! loadgen: simulated agent fleets, each agent with its own key, real TLS 1.3 + HTTP/2
//! connection and the agent's own comms code, answering tasks with synthetic rows of
//! realistic size. A fleet larger than one process may hold (open files) is split over
//! worker processes whose reports are merged. Prints progress while it runs and writes
//! a JSON report.

mod coordinator;
mod fleet;
mod stats;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;

use packhunt::agent::outbox::ArtifactOutput;
use packhunt::agent::runner::{push_row, Runner};
use packhunt::config::ClientConfig;
use packhunt::protocol::pb;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agents one source address may hold towards one server port (~28k ephemeral ports,
/// with room to spare for reconnects).
pub(crate) const AGENTS_PER_SOURCE_IP: usize = 20_000;
/// File descriptors kept free for everything that is not an agent connection.
const RESERVED_FDS: u64 = 200;

#[derive(Parser)]
#[command(name = "loadgen", about = "Simulated packhunt agent fleets (real mTLS + HTTP/2 connections)")]
pub struct Args {
    /// client.config.toml of the deployment to load.
    #[arg(long)]
    pub config: PathBuf,
    /// Simulated agents in this process.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// Stop once this many flows were delivered in full (0 = don't).
    #[arg(long, default_value_t = 0)]
    pub exit_after_flows: u64,
    /// New agents started per second while ramping up.
    #[arg(long, default_value_t = 1000)]
    pub ramp_per_second: u64,
    /// Keep agent keys here so a rerun is the same fleet (agent-N.toml).
    #[arg(long)]
    pub identity_dir: Option<PathBuf>,
    /// Spread agents over this many source addresses 127.0.0.1, 127.0.0.2, ...
    /// (0 = as many as the fleet needs).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Fault injection: each agent drops its connection after every N-th upload, before
    /// taking the ack, so the batch is resent after the reconnect (0 = never).
    #[arg(long, default_value_t = 0)]
    pub drop_connection_every_uploads: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Most agents one process runs; larger fleets fork worker processes. A process may
    /// hold 20,000 open files on the reference box (tuning.md).
    #[arg(long, default_value_t = 19_000)]
    pub agents_per_worker: usize,
    /// Global index of this process's first agent (set by the coordinator for workers).
    #[arg(long, default_value_t = 0, hide = true)]
    pub first_agent: usize,
    /// Run as a worker: print progress as JSON lines on stdout for the coordinator.
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Answers every artifact with deterministic synthetic rows.
pub struct SyntheticRunner;

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
    let config = ClientConfig::load(&args.config)?;
    if !args.worker && args.clients > args.agents_per_worker {
        return coordinator::run(&args);
    }
    check_fd_budget(args.clients)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(fleet::run_fleet(args, config))
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

