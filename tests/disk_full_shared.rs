//! Goal: a full shared datastore under a master and a minion. Every frontend answers
//! uploads (result rows, file chunks, event batches) with 503 and the configured
//! Retry-After; the agents back off, so the refusals each frontend counts over the outage
//! stay within a bound of agents × window / Retry-After (no retry storm); nothing
//! half-written is left on the mount (result sets whole, every document parses, no temp
//! file, partial upload files only in `uploading/`); and once space returns ingest resumes
//! by itself: every flow completes with every row once and every file whole.
//!
//! Method: the datastore on one small tmpfs (skipped, counted, where mounting is not
//! allowed) shared by a master and a minion, `disk_full_retry_after_s` a few seconds.
//! Real agents (the agent's own run loop, in this process) are pinned half to each
//! frontend; their collections (rows, or one file each) are scheduled through the API and
//! held by the runner until the disk is filled up to a little room, then released
//! together. A raw agent per frontend checks each upload kind's answer. The refusals are
//! counted from each frontend's metrics over a window measured here; counts, not timings,
//! are asserted, within generous bounds.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use packhunt::agent::collected::{ArtifactOutput, CollectContext, CollectedFile, FileSource};
use packhunt::agent::run::{AgentOptions, Observer};
use packhunt::agent::runner::{push_row, Runner};
use packhunt::protocol::pb::{self, upload::Kind};
use serde_json::{json, Value};
use sha2::Digest;

use common::{Deployment, Minion, RawAgent};

/// What a full disk tells agents to wait, here: short, so the outage window holds a few
/// retries per agent and the test ends in well under a minute of waiting.
const RETRY_AFTER_S: u64 = 4;
/// The outage window the refusals are counted over.
const WINDOW: Duration = Duration::from_secs(20);
/// Agents per frontend collecting rows, and collecting one file.
const ROW_AGENTS: usize = 4;
const FILE_AGENTS: usize = 3;
/// Rows per row flow (~300 bytes each) and bytes per file: each agent holds more than the
/// room left on the disk, so every one of them is still waiting during the window.
const ROWS_PER_FLOW: usize = 2_500;
const FILE_BYTES: usize = 700_000;
/// The agents' batch and chunk size: several uploads per flow.
const AGENT_UPLOAD_BYTES: u64 = 64 * 1024;
/// Room left when the agents are released.
const HEADROOM_BYTES: u64 = 512 * 1024;
/// The raw agents' probes: far larger than any room a rolled-back upload frees for a
/// moment (at most one agent batch each), so they cannot fit by chance.
const PROBE_BYTES: usize = 2 * 1024 * 1024;

#[test]
fn a_full_shared_disk_refuses_uploads_everywhere_and_ingest_resumes() -> Result<()> {
    let mount_dir = tempfile::tempdir()?;
    let datastore = mount_dir.path().join("ds");
    let Some(_mount) = common::TmpfsMount::new(&datastore, "96m") else {
        common::skip(
            "disk_full_shared::a_full_shared_disk_refuses_uploads_everywhere_and_ingest_resumes",
            "root and mount rights, to mount a 96 MiB tmpfs",
        );
        return Ok(());
    };
    let location = datastore.display().to_string();
    let (deployment, minions) = common::cluster_with(1, |text| {
        *text = text.replace(
            "location = \"datastore\"",
            &format!("location = \"{location}\""),
        );
        common::set_keys(
            text,
            &[("disk_full_retry_after_s", &RETRY_AFTER_S.to_string())],
        );
        allow_small_mount(text);
    })?;
    let minion = &minions[0];
    let ports = [deployment.agent_port, minion.agent_port];

    // Agents, pinned half to each frontend, their collections held at the gate.
    let gate = Gate::default();
    let runner = Arc::new(HeldRunner { gate: gate.clone() });
    let fleet = Fleet::start(&deployment, &ports, runner)?;
    let ids = deployment.wait_connected(2 * (ROW_AGENTS + FILE_AGENTS), Duration::from_secs(60))?;
    ensure!(ids.len() == fleet.agents.len(), "{ids:?}");
    let flows = schedule(&deployment, &fleet)?;
    wait_collections_started(&gate, fleet.agents.len())?;
    // Raw agents, one per frontend, each with a flow that takes rows and files.
    let mut probes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let config = deployment.client_config_for(&format!("probe-{i}.toml"), &[*port], None)?;
        let agent = RawAgent::connect_with(&config)?;
        let flow = common::uploads::upload_flow_at(
            &datastore,
            &agent.client_id,
            packhunt::limits::FlowLimits::default(),
        )?;
        probes.push((agent, flow));
    }

    // The disk fills: a little room, then the agents are released into it.
    let filler = datastore.join("filler");
    fill(&filler, &datastore, HEADROOM_BYTES)?;
    gate.open();
    for (name, api) in frontends(&deployment, minion) {
        common::wait_until(
            &format!("{name} refusing for a full disk"),
            Duration::from_secs(60),
            || api.metric("packhunt_datastore_full"),
            |full| *full == 1,
        )?;
    }

    // Every frontend answers each kind of upload with 503 + the configured Retry-After.
    for (agent, flow) in &mut probes {
        for upload in probe_uploads(flow) {
            let reply = agent.upload(&upload)?;
            ensure!(reply.status == 503, "{reply:?}");
            ensure!(
                reply.retry_after == Some(Duration::from_secs(RETRY_AFTER_S)),
                "{reply:?}"
            );
        }
    }

    // No retry storm: the refusals of the window stay near agents × window / Retry-After.
    let before = refusals(&deployment, minion)?;
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let after = refusals(&deployment, minion)?;
    let window_s = started.elapsed().as_secs_f64();
    let agents = (ROW_AGENTS + FILE_AGENTS) as f64;
    let retry_after_s = RETRY_AFTER_S as f64;
    // Each agent has one upload in flight and sleeps at least Retry-After after a 503.
    let most = agents * (window_s / retry_after_s + 2.0);
    // Each sleeps at most Retry-After + 25 % jitter (+ the request); half of that is
    // still far from an agent that gave up.
    let least = agents * (window_s / (retry_after_s * 1.25) - 1.0) / 2.0;
    for (frontend, (b, a)) in ["master", "minion"].iter().zip(before.iter().zip(&after)) {
        let counted = (a - b) as f64;
        eprintln!(
            "{frontend}: {counted} uploads refused in {window_s:.1} s by {agents} agents \
             (bounds {least:.0}..={most:.0})"
        );
        ensure!(
            (least..=most).contains(&counted),
            "{frontend}: {counted} uploads refused in {window_s:.1} s by {agents} agents told \
             to wait {RETRY_AFTER_S} s (expected {least:.0}..={most:.0})"
        );
    }

    // Nothing half-written while the disk is full.
    common::wait_until(
        "the datastore whole while full",
        Duration::from_secs(10),
        || Ok(check_whole(&datastore, &filler)),
        |problems| problems.is_empty(),
    )?;

    // Room again: the agents' next tries land and every flow completes by itself.
    std::fs::remove_file(&filler)?;
    let statuses = deployment
        .api()
        .wait_flows(&flows.all(), Duration::from_secs(180))?;
    for status in &statuses {
        ensure!(status["state"] == "finished", "{status}");
    }
    check_rows_once(&datastore, &flows.rows)?;
    check_files(&deployment, &datastore, &flows.files)?;
    let problems = check_whole(&datastore, &filler);
    ensure!(problems.is_empty(), "{problems:?}");
    for (name, api) in frontends(&deployment, minion) {
        ensure!(api.metric("packhunt_datastore_full")? == 0, "{name}");
        ensure!(
            api.metric("packhunt_disk_full_recoveries_total")? >= 1,
            "{name}"
        );
        for kind in ["rows", "file_chunk", "events"] {
            let series = format!("packhunt_disk_full_refusals_total{{kind=\"{kind}\"}}");
            ensure!(api.metric(&series)? >= 1, "{name}: {series}");
        }
    }
    ensure!(fleet.flows_done.load(Ordering::Relaxed) == fleet.agents.len() as u64);
    fleet.stop();
    Ok(())
}

/// With the mount start-up check (`[datastore] min_free_bytes`), a 96 MiB tmpfs is too
/// small for its default: set it to 0 where this build knows the key.
fn allow_small_mount(text: &mut String) {
    let candidate = text.replacen("[datastore]\n", "[datastore]\nmin_free_bytes = 0\n", 1);
    let known = !text.contains("min_free_bytes")
        && toml::from_str::<packhunt::config::ServerFile>(&candidate).is_ok();
    if known {
        *text = candidate;
    } else if text.contains("min_free_bytes") {
        common::set_keys(text, &[("min_free_bytes", "0")]);
    }
}

fn frontends(deployment: &Deployment, minion: &Minion) -> [(&'static str, common::Api); 2] {
    [
        ("master", deployment.api()),
        ("minion", minion.metrics_api(deployment)),
    ]
}

/// Uploads refused for a full disk so far, master's then minion's.
fn refusals(deployment: &Deployment, minion: &Minion) -> Result<[u64; 2]> {
    let series = "packhunt_upload_rejections_total{reason=\"overloaded\"}";
    Ok([
        deployment.metric(series)?,
        minion.metric(deployment, series)?,
    ])
}

/// Writes `path` until the filesystem of `dir` has about `room` bytes left.
fn fill(path: &std::path::Path, dir: &std::path::Path, room: u64) -> Result<()> {
    use std::io::Write as _;
    let available = available_bytes(dir)?;
    ensure!(available > room, "only {available} bytes free on the mount");
    let mut file = std::fs::File::create(path)?;
    let block = vec![0xa5u8; 1024 * 1024];
    let mut left = available - room;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

fn available_bytes(dir: &std::path::Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value of it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
    let answered = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    ensure!(answered == 0, "statvfs {}", dir.display());
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// A result batch, a file chunk and an event batch, each of `PROBE_BYTES`.
fn probe_uploads(flow: &str) -> Vec<pb::Upload> {
    let row = format!("{{\"probe\":\"{}\"}}\n", "p".repeat(1000));
    let rows_count = PROBE_BYTES / row.len();
    let jsonl = Bytes::from(row.repeat(rows_count));
    let whole = vec![7u8; PROBE_BYTES];
    let chunk = common::uploads::chunk(flow, 0, "/tmp/probe.bin", &whole, 0, whole.len());
    let now_ms = packhunt::clock::now_ms();
    vec![
        pb::Upload {
            kind: Some(Kind::Result(pb::ResultBatch {
                flow_id: flow.to_string(),
                artifact: common::uploads::GLOB.into(),
                seq: 0,
                jsonl: jsonl.clone(),
                row_count: rows_count as u32,
            })),
        },
        chunk,
        pb::Upload {
            kind: Some(Kind::Events(pb::EventBatch {
                artifact: "Generic.Client.Stats".into(),
                seq: 1,
                jsonl,
                row_count: rows_count as u32,
                time_ms: vec![now_ms; rows_count],
                dropped_before: 0,
            })),
        },
    ]
}

/// Agents run in this process (the agent's own loop), each pinned to one frontend.
struct Fleet {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    /// (client id, collects a file rather than rows).
    agents: Vec<(String, bool)>,
    flows_done: Arc<AtomicU64>,
}

impl Fleet {
    fn start(deployment: &Deployment, ports: &[u16], runner: Arc<HeldRunner>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let flows_done = Arc::new(AtomicU64::new(0));
        let mut agents = Vec::new();
        for (f, port) in ports.iter().enumerate() {
            let path = deployment.client_config_for(
                &format!("pinned-{f}.toml"),
                &[*port],
                Some(AGENT_UPLOAD_BYTES),
            )?;
            let config = packhunt::config::ClientConfig::load(&path)?;
            for i in 0..ROW_AGENTS + FILE_AGENTS {
                let identity = packhunt::tls::agent_key::AgentIdentity::generate()?;
                let tls = packhunt::tls::client::agent_client_config(
                    &config.client.ca_certificate,
                    identity.rustls_cert_chain(),
                    identity.rustls_private_key(),
                )?;
                let options = AgentOptions {
                    urls: config.client.server_urls.clone(),
                    tls,
                    local_ip: None,
                    info: pb::ClientInfo {
                        hostname: format!("disk-full-{f}-{i}"),
                        os: "linux".into(),
                        version: "test".into(),
                    },
                    max_upload_bytes: AGENT_UPLOAD_BYTES,
                    drop_connection_every_uploads: 0,
                    enrolment_secret: None,
                    events: None,
                    outbox_dir: None,
                    max_outbox_bytes: packhunt::limits::DEFAULT_MAX_OUTBOX_BYTES,
                    rekey: None,
                    io: None,
                };
                let observer = Arc::new(Counted(flows_done.clone()));
                let agent =
                    packhunt::agent::run::run(options, runner.clone(), observer, stopped.clone());
                rt.spawn(agent);
                agents.push((identity.client_id().to_string(), i >= ROW_AGENTS));
            }
        }
        Ok(Self {
            rt,
            stop,
            agents,
            flows_done,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}

struct Counted(Arc<AtomicU64>);

impl Observer for Counted {
    fn flow_done(&self, _flow_id: &str, _rows: u64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Collections wait here until the test opens it; counts those waiting.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(bool, usize)>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut state = lock.lock().expect("gate lock");
        state.1 += 1;
        cv.notify_all();
        while !state.0 {
            state = cv.wait(state).expect("gate lock");
        }
    }

    fn waiting(&self) -> usize {
        self.0 .0.lock().expect("gate lock").1
    }

    fn open(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().expect("gate lock").0 = true;
        cv.notify_all();
    }
}

fn wait_collections_started(gate: &Gate, n: usize) -> Result<()> {
    common::wait_until(
        "every collection started",
        Duration::from_secs(60),
        || Ok(gate.waiting()),
        |waiting| *waiting >= n,
    )?;
    Ok(())
}

/// Answers Pslist with `ROWS_PER_FLOW` rows naming the flow, and Collectors.File with one
/// file of `FILE_BYTES` made from the flow id; both only once the gate opens.
struct HeldRunner {
    gate: Gate,
}

impl Runner for HeldRunner {
    fn collect(&self, task: &pb::Task, _ctx: &CollectContext) -> Vec<ArtifactOutput> {
        self.gate.wait();
        task.artifacts
            .iter()
            .map(|a| match a.name.as_str() {
                packhunt::artifacts::COLLECTORS_FILE => file_output(&a.name, &task.flow_id),
                _ => rows_output(&a.name, &task.flow_id),
            })
            .collect()
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

fn rows_output(artifact: &str, flow_id: &str) -> ArtifactOutput {
    let mut jsonl = Vec::new();
    for i in 0..ROWS_PER_FLOW {
        push_row(
            &mut jsonl,
            &json!({ "flow": flow_id, "i": i, "pad": "r".repeat(240) }),
        );
    }
    ArtifactOutput {
        name: artifact.to_string(),
        jsonl: jsonl.into(),
        rows: ROWS_PER_FLOW as u64,
        ..Default::default()
    }
}

/// The bytes of the file a flow uploads: distinct per flow, so a mix-up shows.
fn file_bytes(flow_id: &str) -> Vec<u8> {
    let seed = sha2::Sha256::digest(flow_id.as_bytes());
    (0..FILE_BYTES)
        .map(|i| seed[i % seed.len()].wrapping_add((i / seed.len()) as u8))
        .collect()
}

fn file_output(artifact: &str, flow_id: &str) -> ArtifactOutput {
    let bytes = file_bytes(flow_id);
    let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    let mut jsonl = Vec::new();
    push_row(
        &mut jsonl,
        &json!({ "path": file_path(flow_id), "size": FILE_BYTES, "upload": 0 }),
    );
    ArtifactOutput {
        name: artifact.to_string(),
        jsonl: jsonl.into(),
        rows: 1,
        uploads: vec![CollectedFile {
            path: file_path(flow_id),
            size: FILE_BYTES as u64,
            sha256,
            truncated: false,
            source: FileSource::Memory(bytes.into()),
        }],
        ..Default::default()
    }
}

fn file_path(flow_id: &str) -> String {
    format!("/var/log/disk-full-{flow_id}.bin")
}

/// The (client, flow) pairs scheduled, by kind.
struct Flows {
    rows: Vec<(String, String)>,
    files: Vec<(String, String)>,
}

impl Flows {
    fn all(&self) -> Vec<(String, String)> {
        self.rows.iter().chain(&self.files).cloned().collect()
    }
}

/// One collection per agent through the master's API: Pslist, or one file.
fn schedule(deployment: &Deployment, fleet: &Fleet) -> Result<Flows> {
    let api = deployment.api();
    let mut flows = Flows {
        rows: Vec::new(),
        files: Vec::new(),
    };
    for (client, collects_file) in &fleet.agents {
        if !collects_file {
            let flow = api.collect(client, &[packhunt::artifacts::PSLIST])?;
            flows.rows.push((client.clone(), flow));
            continue;
        }
        let file = packhunt::artifacts::COLLECTORS_FILE;
        let body = json!({
            "artifacts": [file],
            "parameters": { file: {
                "globs": ["/var/log/disk-full-*.bin"],
                "max_file_bytes": FILE_BYTES,
                "max_total_bytes": FILE_BYTES,
            }},
            "max_upload_bytes": FILE_BYTES,
        });
        let (status, answer) = api.post(&format!("/api/v1/clients/{client}/collections"), &body)?;
        ensure!(status == 200, "{status} {answer}");
        let flow = answer["flow_id"].as_str().context("flow_id")?.to_string();
        flows.files.push((client.clone(), flow));
    }
    Ok(flows)
}

/// Every row flow holds exactly its rows, each once, in order, with its index.
fn check_rows_once(datastore: &std::path::Path, flows: &[(String, String)]) -> Result<()> {
    for (client, flow) in flows {
        let path = common::flow_results(datastore, client, flow, packhunt::artifacts::PSLIST);
        let text = std::fs::read_to_string(&path)?;
        let rows: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        ensure!(rows.len() == ROWS_PER_FLOW, "{flow}: {} rows", rows.len());
        for (i, row) in rows.iter().enumerate() {
            ensure!(
                row["i"] == i && row["flow"] == flow.as_str(),
                "{flow}: row {i}"
            );
        }
        let index = std::fs::metadata(path.with_extension("index"))?.len();
        ensure!(
            index == ROWS_PER_FLOW as u64 * 8,
            "{flow}: index {index} bytes"
        );
    }
    Ok(())
}

/// Every file flow lists its one file, whole, with the bytes the agent had.
fn check_files(
    deployment: &Deployment,
    datastore: &std::path::Path,
    flows: &[(String, String)],
) -> Result<()> {
    for (client, flow) in flows {
        let (_, uploads) = deployment.api().get(&format!(
            "/api/v1/clients/{client}/collections/{flow}/uploads"
        ))?;
        let items = uploads["items"].as_array().context("items")?;
        ensure!(items.len() == 1, "{flow}: {uploads}");
        let expected = hex::encode(sha2::Sha256::digest(file_bytes(flow)));
        ensure!(items[0]["size"] == FILE_BYTES, "{flow}: {uploads}");
        ensure!(items[0]["sha256"] == expected.as_str(), "{flow}: {uploads}");
        ensure!(items[0]["error"].is_null(), "{flow}: {uploads}");
        let uploading = flow_dir(datastore, client, flow).join("uploading");
        let left = std::fs::read_dir(&uploading).map_or(0, |d| d.count());
        ensure!(left == 0, "{flow}: {left} files left in uploading/");
    }
    Ok(())
}

fn flow_dir(datastore: &std::path::Path, client: &str, flow: &str) -> std::path::PathBuf {
    datastore
        .join("clients")
        .join(client)
        .join("collections")
        .join(flow)
}

/// What is not whole on the datastore: a temp file left, a document that does not parse,
/// a flow without its request or status, a row set whose rows, index and commit records
/// disagree, a file in `uploads/` that its index does not list with its size.
fn check_whole(datastore: &std::path::Path, filler: &std::path::Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    walk(datastore, &mut files);
    for path in files.iter().filter(|p| p.as_path() != filler) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let shown = path.display();
        let in_uploads = path.components().any(|c| c.as_os_str() == "uploads");
        if name.contains(".tmp.") {
            problems.push(format!("temp file left: {shown}"));
        } else if name.ends_with(".json") && !in_uploads {
            let parsed = std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if parsed.is_none() {
                problems.push(format!("document does not parse: {shown}"));
            }
        } else if name.ends_with(".batches") {
            problems.extend(row_set_problem(path));
        } else if name == "uploads.jsonl" {
            problems.extend(uploads_problem(path));
        }
    }
    for flow in files.iter().filter_map(|p| flow_of(p)) {
        for doc in ["request.json", "status.json"] {
            if !flow.join(doc).exists() {
                problems.push(format!("flow without {doc}: {}", flow.display()));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// The flow folder a file is in, if it is under `collections/<flow>/`.
fn flow_of(path: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut at = path.parent()?;
    while let Some(parent) = at.parent() {
        if parent.file_name()? == "collections" {
            return Some(at.to_path_buf());
        }
        at = parent;
    }
    None
}

/// A row set is whole when its rows, index entries and last commit record agree.
fn row_set_problem(batches: &std::path::Path) -> Option<String> {
    let entry_bytes = match batches.components().any(|c| c.as_os_str() == "monitoring") {
        true => 16,
        false => 8,
    };
    let records = std::fs::read(batches).ok()?;
    let jsonl = std::fs::read(batches.with_extension("jsonl")).unwrap_or_default();
    let index = std::fs::metadata(batches.with_extension("index")).map_or(0, |m| m.len());
    let rows = jsonl.iter().filter(|&&b| b == b'\n').count() as u64;
    let (end_offset, end_rows) = match records.len() {
        0 => (0, 0),
        n => {
            let last = &records[n - 32..];
            let word = |i: usize| u64::from_le_bytes(last[i * 8..i * 8 + 8].try_into().unwrap());
            (word(1), word(2))
        }
    };
    let whole = records.len() % 32 == 0
        && jsonl.len() as u64 == end_offset
        && rows == end_rows
        && index == rows * entry_bytes
        && jsonl.last().is_none_or(|b| *b == b'\n');
    (!whole).then(|| {
        format!(
            "row set not whole: {} ({} record bytes, {} jsonl bytes and {rows} rows, {index} \
             index bytes; committed {end_offset} bytes, {end_rows} rows)",
            batches.display(),
            records.len(),
            jsonl.len()
        )
    })
}

/// Every line of an uploads index names a stored file of its size, and every file under
/// `uploads/` is listed: no part of a file outside `uploading/`.
fn uploads_problem(index: &std::path::Path) -> Vec<String> {
    let mut problems = Vec::new();
    let flow = index.parent().expect("in a flow folder");
    let text = std::fs::read_to_string(index).unwrap_or_default();
    let mut listed = std::collections::HashSet::new();
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            problems.push(format!(
                "uploads index line does not parse: {}",
                index.display()
            ));
            continue;
        };
        let stored = flow
            .join("uploads")
            .join(record["stored"].as_str().unwrap_or(""));
        let size = std::fs::metadata(&stored).map(|m| m.len()).ok();
        if size != record["size"].as_u64() {
            problems.push(format!("listed file not whole: {}", stored.display()));
        }
        listed.insert(stored);
    }
    let mut stored = Vec::new();
    walk(&flow.join("uploads"), &mut stored);
    for path in stored.iter().filter(|p| !listed.contains(*p)) {
        problems.push(format!("file in uploads/ not listed: {}", path.display()));
    }
    problems
}
