//! loadgen: simulated agent fleets, each agent with its own key, real TLS 1.3 + HTTP/2
//! connection and the agent's own comms code, answering tasks with synthetic rows of
//! realistic size. A fleet larger than one process may hold (open files) is split over
//! worker processes whose reports are merged. Prints progress while it runs and writes
//! a JSON report.

mod api;
mod bare_tls;
mod coordinator;
mod driver;
mod events;
mod files;
mod fleet;
mod handshake;
mod record;
mod stats;
mod verify;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

use packhunt::agent::outbox::ArtifactOutput;
use packhunt::agent::runner::{push_row, Runner};
use packhunt::config::ClientConfig;
use packhunt::protocol::pb;

// loadgen keeps glibc's malloc, unlike the frontend: a simulated agent cost 55.1 KiB of
// RSS with it against 74.4 with mimalloc (18,000 agents, same code; tuning.md, "P1 per box
// at 200,000"), and memory is what bounds a fleet on one box. Heap profilers (heaptrack)
// see every allocation as they are.

/// Agents one source address may hold towards one server port (~28k ephemeral ports,
/// with room to spare for reconnects).
pub(crate) const AGENTS_PER_SOURCE_IP: usize = 20_000;
/// Source addresses a fleet uses at least: the frontend closes at accept a connection
/// whose address already holds 32 handshakes in flight (a stranger must not stall the
/// agent port), so a whole fleet from one address ramped with thousands of refusals and
/// retries (a 19,000-agent ramp took 87 s instead of 21).
pub(crate) const MIN_SOURCE_IPS: usize = 16;
/// File descriptors kept free for everything that is not an agent connection.
const RESERVED_FDS: u64 = 200;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Simulated packhunt agent fleets (real mTLS + HTTP/2 connections)",
    after_help = "Reconnect storms: SIGUSR1 makes every connected agent drop its connection and \
reconnect at once, offering its TLS session ticket (resumed handshakes); SIGUSR2 does the same \
with a fresh TLS config per agent (no ticket: full handshakes). Results not yet acknowledged \
are dropped, so storm an idle fleet.

`loadgen verify --record DIR --datastore PATH` checks a datastore against the record of runs \
made with --record DIR (see `loadgen verify --help`)."
)]
pub struct Args {
    /// client.config.toml of the deployment to load (needed by everything but
    /// --bare-tls-server).
    #[arg(long, required_unless_present = "bare_tls_server")]
    pub config: Option<PathBuf>,
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
    /// (0 = as many as the fleet needs for ports, and at least MIN_SOURCE_IPS, since a
    /// real fleet comes from many addresses and the frontend caps handshakes in flight per
    /// address; for --bare-tls-connect, 0 leaves the choice to the kernel).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Fault injection: each agent drops its connection after every N-th upload, before
    /// taking the ack, so the batch is resent after the reconnect (0 = never).
    #[arg(long, default_value_t = 0)]
    pub drop_connection_every_uploads: u64,
    /// Agents report the hostname PREFIX<i>. The tasking and upload scenarios task only
    /// connected clients whose hostname starts with PREFIX, so a small measuring loadgen
    /// (e.g. --hostname-prefix probe-) can run beside a fleet loadgen on one frontend and
    /// time only its own agents' tasks.
    #[arg(long, default_value = "loadgen-")]
    pub hostname_prefix: String,
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
    /// What the fleet is asked to do through the API: idle (connect and hold), tasking
    /// (random agents tasked at --task-rate-per-second), upload (every agent streams
    /// --upload-bytes-per-agent of rows), events (every agent emits client monitoring
    /// events for the artifacts its client event table lists, at
    /// --events-per-second-per-agent; --event-artifact sets that table first). tasking
    /// and upload need --api-url. files: every agent is tasked with
    /// Generic.Collectors.File and uploads one synthetic file of --file-bytes-per-agent
    /// (known SHA-256); after the run the uploads are checked on the server (needs
    /// --api-url; pair with --exit-after-flows = --clients so the MB/s counts the upload
    /// time only).
    #[arg(long, value_enum, default_value = "idle")]
    pub scenario: driver::Scenario,
    /// GUI/API URL of the frontend, e.g. https://127.0.0.1:8889/ (for scenarios and the
    /// latency probe).
    #[arg(long)]
    pub api_url: Option<String>,
    #[arg(long, default_value = "admin")]
    pub api_user: String,
    #[arg(long, env = "LOADGEN_API_PASSWORD")]
    pub api_password: Option<String>,
    /// tasking: collections scheduled per second.
    #[arg(long, default_value_t = 20.0)]
    pub task_rate_per_second: f64,
    /// upload: bytes of rows each agent sends for its collection.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub upload_bytes_per_agent: u64,
    /// files: bytes of the synthetic file each agent uploads (one file per agent).
    #[arg(long, default_value_t = 20 * 1000 * 1000)]
    pub file_bytes_per_agent: u64,
    /// events: synthetic event rows each agent emits per second, over the event
    /// artifacts its table lists (rows of each artifact's usual shape and size).
    #[arg(long, default_value_t = 1.0)]
    pub events_per_second_per_agent: f64,
    /// events: set the client event table (PUT, `all` for every agent) to list this
    /// artifact before the run, as NAME or NAME:key=value,... (repeatable), e.g.
    /// Generic.Client.Stats, Linux.Events.LogTail:path=/var/log/auth.log. Without it the
    /// table is left as it is. Needs --api-url.
    #[arg(long, value_name = "NAME[:k=v,...]")]
    pub event_artifact: Vec<String>,
    /// events: each simulated agent keeps at most this many bytes of unacknowledged
    /// events (in memory); beyond it the oldest batches are dropped and counted.
    #[arg(long, default_value_t = 64 * 1024)]
    pub event_buffer_bytes: u64,
    /// Follow the master's live watch (GET /api/v1/events/watch?artifact=A) for the whole
    /// run and report the events seen and their lag (receive time − event time_ms),
    /// p50/p99/max. Any scenario; needs --api-url.
    #[arg(long, value_name = "A")]
    pub watch_artifact: Option<String>,
    /// Each simulated collection is held this many milliseconds before its answer is
    /// queued, as a real agent's collection takes time (0: at once). The agent keeps
    /// serving its task stream meanwhile; a cancel or the flow's timeout ends it as it
    /// would a real one.
    #[arg(long, default_value_t = 0)]
    pub collect_ms: u64,
    /// Run the simulated agents' own work (taking a task up, the synthetic collection,
    /// posting answers and waiting out 503s) on threads at this nice value, and their
    /// connections (socket, TLS, HTTP/2, reading the task stream) on threads of their own
    /// at the default priority. On a real fleet each agent has its own CPU and one
    /// agent's answer never delays another's reading; here thousands share two cores, and
    /// without this an agent's answer is built and sent before the next agent's task is
    /// read. Unset: one set of threads for both.
    #[arg(long, value_name = "NICE", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub answer_nice: Option<i32>,
    /// Linux.Sys.Pslist answers with this many rows (default: its usual count, or in the
    /// upload scenario enough rows for --upload-bytes-per-agent). Long flows for
    /// fail-over tests.
    #[arg(long)]
    pub pslist_rows: Option<usize>,
    /// GUI/API latency probe requests per second while the run lasts (needs --api-url;
    /// 0 = off).
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate_per_second: f64,
    /// What the probe GETs (repeat for several: they are requested in turn and reported
    /// each on its own under `api_latency_by_path`), e.g. the GUI's own calls
    /// `/api/v1/clients?search=host-42&limit=50`.
    #[arg(long = "probe-path", default_value = "/api/v1/frontends")]
    pub probe_paths: Vec<String>,
    /// Run no fleet: time N full and N resumed agent-port TLS handshakes in memory with
    /// the deployment's own server config (--server-config) and print the server side's
    /// CPU per handshake as JSON.
    #[arg(long, value_name = "N", requires = "server_config")]
    pub measure_handshake: Option<usize>,
    /// server.config.toml of the deployment, for --measure-handshake and
    /// --bare-tls-server.
    #[arg(long)]
    pub server_config: Option<PathBuf>,
    /// Run no fleet: a bare TLS server on ADDR, the P6 baseline: the frontend's own
    /// agent-port TLS (--server-config) on a glommio socket, one executor on this thread;
    /// it accepts, does the mTLS handshake, sends the session ticket, reads to the
    /// client's close and closes (no HTTP/2, no sessions). Stops after --bare-tls-seconds
    /// or at SIGTERM/SIGINT and prints its counts as JSON.
    #[arg(long, value_name = "ADDR", requires = "server_config")]
    pub bare_tls_server: Option<SocketAddr>,
    /// --bare-tls-server stops after this many seconds (default: only at SIGTERM/SIGINT).
    #[arg(long, value_name = "S")]
    pub bare_tls_seconds: Option<u64>,
    /// Run no fleet: make N connections in all to the bare TLS server at
    /// --bare-tls-target, each a full mTLS handshake with an agent key (16 keys in turn),
    /// then close; prints the counts as JSON. --source-ips K spreads them over
    /// 127.0.0.1..127.0.0.K.
    #[arg(long, value_name = "N", requires = "bare_tls_target")]
    pub bare_tls_connect: Option<usize>,
    /// ADDR of the bare TLS server, for --bare-tls-connect.
    #[arg(long, value_name = "ADDR")]
    pub bare_tls_target: Option<SocketAddr>,
    /// --bare-tls-connect: each worker keeps its TLS session tickets, so every connection
    /// after its first resumes (without it, resumption is off).
    #[arg(long)]
    pub bare_tls_resumed: bool,
    /// --bare-tls-connect: connections made at once (one thread each).
    #[arg(long, value_name = "C", default_value_t = bare_tls::client::DEFAULT_CONCURRENCY)]
    pub bare_tls_concurrency: usize,
    /// Run no fleet: print, as JSON, the task latency percentiles of the tasks that arrived
    /// through the --frontend URLs, merged from REPORT's task_latency_by_frontend (e.g.
    /// every minion at once).
    #[arg(long, value_name = "REPORT", requires = "frontend")]
    pub task_latency_of: Option<PathBuf>,
    /// A frontend URL as the client config lists it, for --task-latency-of (repeatable).
    #[arg(long, value_name = "URL")]
    pub frontend: Vec<String>,
    /// Record what every agent was asked for, sent and had acknowledged (rows, files,
    /// events) as JSON lines under DIR (one file per process), for `loadgen verify`.
    /// Recorded rows carry their own ids (`loadgen_row`, `loadgen_run`/`loadgen_seq`).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// For the last N seconds of the run nothing new is scheduled and no new events are
    /// made, so what is in flight is delivered before the agents stop (a complete record
    /// for `verify`).
    #[arg(long, default_value_t = 0)]
    pub settle_s: u64,
    /// Close a window of the latency series (task delivery and API probe p50/p99/max, probe
    /// errors: the report's `latency_windows`) every this many seconds.
    #[arg(long, default_value_t = 10)]
    pub window_s: u64,
    /// tasking, upload, files: start scheduling once every agent is listed as connected,
    /// or after this many seconds with those that are (a fleet under faults is rarely
    /// all connected at once).
    #[arg(long, default_value_t = 600)]
    pub connect_wait_s: u64,
}

impl Args {
    /// The client config's path; clap requires it for every mode that reads it.
    pub fn client_config(&self) -> Result<&Path> {
        self.config.as_deref().context("--config is required")
    }

    /// The scenario driver's plan (only the coordinator or a lone process drives).
    pub fn driver_plan(
        &self,
        ca: &[rustls::pki_types::CertificateDer<'static>],
        record: Option<std::sync::Arc<record::Recorder>>,
        window: std::sync::Arc<std::sync::Mutex<stats::Window>>,
    ) -> Result<driver::DriverPlan> {
        let target = match (&self.api_url, &self.api_password) {
            (Some(url), Some(pw)) => Some(api::ApiTarget::parse(url, ca, &self.api_user, pw)?),
            (Some(_), None) => bail!("--api-url needs --api-password (or LOADGEN_API_PASSWORD)"),
            _ => None,
        };
        let event_artifacts = self
            .event_artifact
            .iter()
            .map(|spec| driver::event_table_entry(spec))
            .collect::<Result<Vec<_>>>()?;
        Ok(driver::DriverPlan {
            target,
            scenario: self.scenario,
            clients: self.clients,
            hostname_prefix: self.hostname_prefix.clone(),
            task_rate_per_second: self.task_rate_per_second,
            probe_rate_per_second: self.probe_rate_per_second,
            probe_paths: self.probe_paths.clone(),
            event_artifacts,
            watch_artifact: self.watch_artifact.clone(),
            file_bytes_per_agent: self.file_bytes_per_agent,
            record,
            schedule_until: self.quiet_from(),
            window,
            connect_wait: std::time::Duration::from_secs(self.connect_wait_s),
        })
    }

    /// When the settle time starts (None: no settle time).
    pub fn quiet_from(&self) -> Option<std::time::Instant> {
        (self.settle_s > 0).then(|| {
            std::time::Instant::now()
                + std::time::Duration::from_secs(self.duration_s.saturating_sub(self.settle_s))
        })
    }

    /// Each agent's events, in the events scenario.
    pub fn event_plan(&self, max_upload_bytes: u64) -> Option<events::EventPlan> {
        (self.scenario == driver::Scenario::Events).then_some(events::EventPlan {
            events_per_second_per_agent: self.events_per_second_per_agent,
            buffer_bytes: self.event_buffer_bytes,
            max_upload_bytes,
            quiet_from: self.quiet_from().map(tokio::time::Instant::from_std),
        })
    }
}

/// Answers every artifact with deterministic synthetic rows: the usual count, or in the
/// upload scenario enough Pslist rows to reach the asked-for bytes.
pub struct SyntheticRunner {
    pub pslist_rows: Option<usize>,
    /// Output per (artifact, rows), made once and shared by every agent, with the SHA-256
    /// of its bytes (for the record): building rows as JSON values held loadgen to
    /// ~50 MB/s on its core, so the server was never the bottleneck of an upload
    /// benchmark. The server validates every batch all the same.
    made: std::sync::Mutex<std::collections::HashMap<(String, usize), Made>>,
    /// files scenario: the size of each agent's synthetic file (None: other scenarios
    /// answer Generic.Collectors.File with no file).
    pub file_bytes: Option<u64>,
    files: files::SyntheticFiles,
    /// With `--record`: every row starts with its index (`record::ROW_ID_FIELD`), so the
    /// verifier can tell a lost row from a duplicated one.
    tag_rows: bool,
    /// `--collect-ms`: how long each collection is held before it answers.
    collect_time: std::time::Duration,
}

#[derive(Clone)]
struct Made {
    jsonl: bytes::Bytes,
    rows: u64,
    sha256: [u8; 32],
}

/// Mean size of a synthetic Pslist row, for turning bytes into rows.
const PSLIST_ROW_BYTES: u64 = 250;

impl SyntheticRunner {
    pub fn for_args(args: &Args) -> Self {
        let for_upload = (args.scenario == driver::Scenario::Upload)
            .then(|| (args.upload_bytes_per_agent / PSLIST_ROW_BYTES).max(1) as usize);
        let rows = args.pslist_rows.or(for_upload);
        Self {
            pslist_rows: rows,
            made: Default::default(),
            file_bytes: (args.scenario == driver::Scenario::Files)
                .then_some(args.file_bytes_per_agent),
            files: Default::default(),
            tag_rows: args.record.is_some(),
            collect_time: std::time::Duration::from_millis(args.collect_ms),
        }
    }

    /// What the agent sends for `artifact`, and the SHA-256 of its rows.
    fn artifact_output(&self, artifact: &str) -> (ArtifactOutput, [u8; 32]) {
        use sha2::Digest;
        if let (Some(size), packhunt::artifacts::COLLECTORS_FILE) = (self.file_bytes, artifact) {
            let output = self.files.output(artifact, size, self.tag_rows);
            let sha256 = sha2::Sha256::digest(&output.jsonl).into();
            return (output, sha256);
        }
        let usual = packhunt::agent::artifacts::synthetic::synthetic_row_count(artifact);
        let count = match (self.pslist_rows, artifact) {
            (Some(rows), packhunt::artifacts::PSLIST) => rows,
            _ => usual,
        };
        let made = self.output(artifact, count);
        let output = ArtifactOutput {
            name: artifact.to_string(),
            jsonl: made.jsonl,
            rows: made.rows,
            ..Default::default()
        };
        (output, made.sha256)
    }

    /// For the record: what an agent will send for `task` (each artifact's rows and their
    /// digest, and its files, numbered as the agent numbers uploads: 0, 1, .. over the
    /// task's artifacts in order).
    pub fn expected(&self, task: &pb::Task) -> (Vec<record::ArtifactSent>, Vec<record::FileSent>) {
        let (mut artifacts, mut files) = (Vec::new(), Vec::new());
        for a in &task.artifacts {
            let (output, sha256) = self.artifact_output(&a.name);
            artifacts.push(record::ArtifactSent {
                name: a.name.clone(),
                rows: output.rows,
                sha256: hex::encode(sha256),
            });
            for file in &output.uploads {
                files.push(record::FileSent {
                    upload: files.len() as u32,
                    path: file.path.clone(),
                    size: file.size,
                    sha256: hex::encode(file.sha256),
                });
            }
        }
        (artifacts, files)
    }
}

impl Runner for SyntheticRunner {
    fn collect(
        &self,
        task: &pb::Task,
        _ctx: &packhunt::agent::collected::CollectContext,
    ) -> Vec<ArtifactOutput> {
        task.artifacts
            .iter()
            .map(|a| self.artifact_output(&a.name).0)
            .collect()
    }

    fn is_blocking(&self) -> bool {
        false
    }

    fn collect_time(&self) -> std::time::Duration {
        self.collect_time
    }
}

impl SyntheticRunner {
    fn output(&self, artifact: &str, count: usize) -> Made {
        let mut made = self
            .made
            .lock()
            .expect("no thread panics holding the cache");
        made.entry((artifact.to_string(), count))
            .or_insert_with(|| {
                use sha2::Digest;
                let mut jsonl = Vec::new();
                let rows = packhunt::agent::artifacts::synthetic::synthetic_rows(
                    artifact,
                    count,
                    fnv1a(artifact.as_bytes()),
                );
                for (index, row) in rows.iter().enumerate() {
                    if self.tag_rows {
                        let bytes =
                            serde_json::to_vec(row).expect("a JSON value always serialises");
                        let id = format!("\"{}\":{index}", record::ROW_ID_FIELD);
                        record::push_tagged(&mut jsonl, &id, &bytes);
                        jsonl.push(b'\n');
                    } else {
                        push_row(&mut jsonl, row);
                    }
                }
                Made {
                    sha256: sha2::Sha256::digest(&jsonl).into(),
                    rows: rows.len() as u64,
                    jsonl: jsonl.into(),
                }
            })
            .clone()
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

fn main() {
    // Errors are for operators: the message chain, no backtrace, exit status 1.
    if let Err(e) = run() {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    // `loadgen verify ...` checks a datastore against a record; anything else runs a fleet.
    if std::env::args_os().nth(1).is_some_and(|a| a == "verify") {
        let args = verify::VerifyArgs::parse_from(std::env::args_os().skip(1));
        let ok = verify::run(&args)?;
        std::process::exit(if ok { 0 } else { verify::EXIT_PROBLEMS });
    }
    let args = Args::parse();
    if let (Some(addr), Some(server_config)) = (args.bare_tls_server, &args.server_config) {
        return bare_tls_server(addr, server_config, args.bare_tls_seconds);
    }
    if let (Some(n), Some(target)) = (args.bare_tls_connect, args.bare_tls_target) {
        let opts = bare_tls::client::ClientOptions {
            target,
            connections: n,
            concurrency: args.bare_tls_concurrency,
            resumed: args.bare_tls_resumed,
            source_ips: args.source_ips,
        };
        let report = bare_tls::client::run(args.client_config()?, &opts)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if let (Some(n), Some(server_config)) = (args.measure_handshake, &args.server_config) {
        let report = handshake::measure(server_config, args.client_config()?, n)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if let Some(path) = &args.task_latency_of {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report: stats::Report =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&stats::task_latency_through(&report, &args.frontend)?)?
        );
        return Ok(());
    }
    // Every process (this one, or each worker) holds at most this many agents.
    check_fd_budget(args.clients.min(args.agents_per_worker))?;
    let config = ClientConfig::load(args.client_config()?)?;
    if !args.worker && args.clients > args.agents_per_worker {
        return coordinator::run(&args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(LOADGEN_THREADS)
        .enable_all()
        .build()?;
    let answering = args.answer_nice.map(answering_runtime).transpose()?;
    let handle = answering.as_ref().map(|rt| rt.handle().clone());
    let done = runtime.block_on(fleet::run_fleet(args, config, handle));
    // Agents still winding down on it are dropped, not waited for: the report is out.
    if let Some(rt) = answering {
        rt.shutdown_background();
    }
    done
}

/// Worker threads of each of loadgen's runtimes (the box it was sized for has 2 cores).
const LOADGEN_THREADS: usize = 2;

/// `--answer-nice`: the runtime the simulated agents' own work runs on, its threads at
/// `nice`. A thread that cannot take it says so and runs at the default priority.
fn answering_runtime(nice: i32) -> Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(LOADGEN_THREADS)
        .thread_name("loadgen-answer")
        .on_thread_start(move || {
            if let Err(e) = packhunt::runtime::thread_nice::nice_this_thread(nice) {
                eprintln!(
                    "loadgen: an answering thread keeps the default priority (nice {nice}): {e}"
                );
            }
        })
        .enable_all()
        .build()?;
    Ok(runtime)
}

/// `--bare-tls-server`: serves until the time is up or SIGTERM/SIGINT, then prints the
/// counts; says where it listens on stderr once it accepts (the benchmark waits for it).
fn bare_tls_server(addr: SocketAddr, server_config: &Path, seconds: Option<u64>) -> Result<()> {
    let opts = bare_tls::server::ServerOptions::load(
        server_config,
        seconds.map(std::time::Duration::from_secs),
    )?;
    let stop = coordinator::signal_flag()?;
    let report = bare_tls::server::run(opts, addr, stop, |bound| {
        eprintln!("loadgen: bare TLS server listening on {bound}")
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn check_fd_budget(clients: usize) -> Result<()> {
    let mut limit = libc_rlimit_nofile();
    if limit == 0 {
        limit = u64::MAX;
    }
    if clients as u64 + RESERVED_FDS > limit {
        bail!(
            "{clients} agents in one process need {} open files but a process may hold {limit}; lower --agents-per-worker",
            clients as u64 + RESERVED_FDS
        );
    }
    Ok(())
}

fn libc_rlimit_nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
