//! Fleet-wide measurements, shared by every simulated agent of this process: counters
//! as atomics, latencies in HDR histograms behind a mutex (recorded once per event, not
//! per row), a per-second time series, and the JSON report. Reports of worker processes
//! merge exactly: histograms travel serialised (HdrHistogram V2, base64).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use packhunt::agent::events::DropReason;
use packhunt::agent::run::Observer;
use packhunt::config::url::ServerUrl;
use packhunt::protocol::pb;

/// Invariant: every critical section on a `Stats` mutex is a clone, push, insert or
/// histogram record that cannot panic, so no lock is ever poisoned; a poisoned one would
/// mean a bug in this file, and the figures behind it could not be trusted anyway.
const NOT_POISONED: &str = "no Stats critical section panics, so no lock is poisoned";

pub struct Stats {
    pub connected: AtomicI64,
    pub connected_peak: AtomicI64,
    pub ever_connected: AtomicU64,
    pub reconnects: AtomicU64,
    pub tasks: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub upload_rows: AtomicU64,
    /// File chunks the server answered DUPLICATE or OUT_OF_ORDER: resumed from its offset.
    pub file_chunks_resumed: AtomicU64,
    pub flows_done: AtomicU64,
    pub errors: AtomicU64,
    /// Facts (ClientInfo) uploads the server refused for now (503) and the agent sent
    /// again.
    pub facts_refused: AtomicU64,
    /// Facts uploads answered 408 (the server saw no body within its idle timeout: a
    /// stalled agent or a shard that did not read in time), sent again.
    pub facts_timed_out: AtomicU64,
    /// Connections on which an agent offered a TLS session ticket (asked to resume).
    pub tickets_offered: AtomicU64,
    /// Client monitoring events the server acknowledged (rows, bytes of rows, batches),
    /// and event rows the agents gave up (buffer full, refused, too large).
    pub events_acked_rows: AtomicU64,
    pub events_acked_bytes: AtomicU64,
    pub events_acked_batches: AtomicU64,
    pub events_dropped_rows: AtomicU64,
    /// Wall-clock µs of the first and the last task to arrive (0: none yet). When one
    /// collection goes to the whole fleet, the last arrival against the moment it was
    /// started is the fan-out time; the 1 s time series is too coarse for a 2 s target.
    first_task_unix_us: AtomicU64,
    last_task_unix_us: AtomicU64,
    connect_us: Mutex<Histogram<u64>>,
    task_latency_us: Mutex<Histogram<u64>>,
    /// The same latencies split by the frontend the agent was connected to when the task
    /// arrived: whether tasking through another frontend costs more (P5).
    /// Invariant: an index once handed out by `frontend_slot` keeps naming its URL.
    task_latency_by_frontend_us: Mutex<Vec<(String, Histogram<u64>)>>,
    /// flow id -> (client id, rows sent), for checking exact counts against the server.
    flows: Mutex<HashMap<String, (String, u64)>>,
    last_error: Mutex<Option<String>>,
    series: Mutex<Vec<SeriesPoint>>,
    /// Latencies of the current window (`--window-s`), shared with the API probe.
    pub window: std::sync::Arc<Mutex<Window>>,
    windows: Mutex<Vec<WindowPoint>>,
}

/// Task delivery and API probe latencies since the last window closed.
pub struct Window {
    pub task_us: Histogram<u64>,
    pub api_us: Histogram<u64>,
    pub api_errors: u64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            task_us: new_histogram(),
            api_us: new_histogram(),
            api_errors: 0,
        }
    }
}

/// One closed window of the latency series: how delivery and the GUI/API fared over
/// time (a soak's drift, a restart's dent), not only over the whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WindowPoint {
    /// Seconds since the start at the window's end.
    pub t_s: u64,
    pub tasks: u64,
    pub task_p50_us: u64,
    pub task_p99_us: u64,
    pub task_max_us: u64,
    pub api_requests: u64,
    pub api_p50_us: u64,
    pub api_p99_us: u64,
    pub api_max_us: u64,
    /// Probe requests that failed or answered other than 200 (the API was away).
    pub api_errors: u64,
}

/// Latencies from 1 µs to 1 hour at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

impl Stats {
    pub fn new() -> Self {
        Self {
            connected: AtomicI64::new(0),
            connected_peak: AtomicI64::new(0),
            ever_connected: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            upload_rows: AtomicU64::new(0),
            file_chunks_resumed: AtomicU64::new(0),
            flows_done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            facts_refused: AtomicU64::new(0),
            facts_timed_out: AtomicU64::new(0),
            tickets_offered: AtomicU64::new(0),
            events_acked_rows: AtomicU64::new(0),
            events_acked_bytes: AtomicU64::new(0),
            events_acked_batches: AtomicU64::new(0),
            events_dropped_rows: AtomicU64::new(0),
            first_task_unix_us: AtomicU64::new(0),
            last_task_unix_us: AtomicU64::new(0),
            connect_us: Mutex::new(new_histogram()),
            task_latency_us: Mutex::new(new_histogram()),
            task_latency_by_frontend_us: Mutex::new(Vec::new()),
            flows: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
            series: Mutex::new(Vec::new()),
            window: Default::default(),
            windows: Mutex::new(Vec::new()),
        }
    }

    /// Closes the current latency window as the point at `t_s`.
    pub fn close_window(&self, t_s: u64) {
        let w = std::mem::take(&mut *self.window.lock().expect(NOT_POISONED));
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let point = WindowPoint {
            t_s,
            tasks: w.task_us.len(),
            task_p50_us: q(&w.task_us, 0.5),
            task_p99_us: q(&w.task_us, 0.99),
            task_max_us: w.task_us.max(),
            api_requests: w.api_us.len(),
            api_p50_us: q(&w.api_us, 0.5),
            api_p99_us: q(&w.api_us, 0.99),
            api_max_us: w.api_us.max(),
            api_errors: w.api_errors,
        };
        self.windows.lock().expect(NOT_POISONED).push(point);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect(NOT_POISONED).clone()
    }

    /// The counters now, as one point of the time series.
    pub fn snapshot(&self, t_s: u64) -> SeriesPoint {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SeriesPoint {
            t_s,
            connected: self.connected.load(Ordering::Relaxed),
            ever_connected: l(&self.ever_connected),
            tasks: l(&self.tasks),
            flows: l(&self.flows_done),
            upload_bytes: l(&self.upload_bytes),
            errors: l(&self.errors),
            reconnects: l(&self.reconnects),
            tickets_offered: l(&self.tickets_offered),
            events_acked: l(&self.events_acked_rows),
            events_dropped: l(&self.events_dropped_rows),
        }
    }

    pub fn record_point(&self, point: SeriesPoint) {
        self.series.lock().expect(NOT_POISONED).push(point);
    }

    /// The index under which tasks that arrive through `url` are counted. A fleet talks to
    /// a handful of frontends, so a scan beats hashing, and agents keep the index rather
    /// than a copy of the URL.
    pub fn frontend_slot(&self, url: &str) -> usize {
        let mut frontends = self.task_latency_by_frontend_us.lock().expect(NOT_POISONED);
        if let Some(i) = frontends.iter().position(|(u, _)| u == url) {
            return i;
        }
        frontends.push((url.to_string(), new_histogram()));
        frontends.len() - 1
    }

    /// One task's delivery latency, overall and under its frontend's slot (if known).
    pub fn record_task_latency(&self, frontend: Option<usize>, latency_us: u64) {
        let latency_us = latency_us.max(1);
        let _ = self
            .task_latency_us
            .lock()
            .expect(NOT_POISONED)
            .record(latency_us);
        let _ = self
            .window
            .lock()
            .expect(NOT_POISONED)
            .task_us
            .record(latency_us);
        if let Some(slot) = frontend {
            if let Some((_, h)) = self
                .task_latency_by_frontend_us
                .lock()
                .expect(NOT_POISONED)
                .get_mut(slot)
            {
                let _ = h.record(latency_us);
            }
        }
    }
}

/// One agent's view onto the shared stats (it knows its own client id).
pub struct AgentObserver {
    pub stats: std::sync::Arc<Stats>,
    pub client_id: String,
    /// A storm restarts the agent's run, which then reports its next connection as its
    /// first; this remembers that it was not.
    connected_before: std::sync::atomic::AtomicBool,
    /// `Stats::frontend_slot` of the frontend the agent is connected to; `NO_FRONTEND`
    /// before the first connection. Tasks arrive only on a live connection, so the slot
    /// set at connect is the one a task came through.
    frontend: AtomicUsize,
}

const NO_FRONTEND: usize = usize::MAX;

impl AgentObserver {
    pub fn new(stats: std::sync::Arc<Stats>, client_id: String) -> Self {
        Self {
            stats,
            client_id,
            connected_before: std::sync::atomic::AtomicBool::new(false),
            frontend: AtomicUsize::new(NO_FRONTEND),
        }
    }
}

/// The agent's default ticket cache (rustls' in-memory one, same size), counting the
/// tickets taken out of it: each is a resumption the agent offers the server.
pub struct CountingTicketStore {
    inner: rustls::client::ClientSessionMemoryCache,
    stats: std::sync::Arc<Stats>,
}

/// rustls' default `Resumption::in_memory_sessions` size.
const TICKET_CACHE_ENTRIES: usize = 256;

impl CountingTicketStore {
    pub fn new(stats: std::sync::Arc<Stats>) -> Self {
        Self {
            inner: rustls::client::ClientSessionMemoryCache::new(TICKET_CACHE_ENTRIES),
            stats,
        }
    }
}

impl std::fmt::Debug for CountingTicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingTicketStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl rustls::client::ClientSessionStore for CountingTicketStore {
    fn set_kx_hint(&self, name: rustls::pki_types::ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let ticket = self.inner.take_tls13_ticket(name);
        if ticket.is_some() {
            self.stats.tickets_offered.fetch_add(1, Ordering::Relaxed);
        }
        ticket
    }
}

impl Observer for AgentObserver {
    fn connected(&self, url: &ServerUrl, connect_time: Duration, first: bool) {
        self.frontend.store(
            self.stats.frontend_slot(&url.to_string()),
            Ordering::Relaxed,
        );
        let first = first && !self.connected_before.swap(true, Ordering::Relaxed);
        let s = &self.stats;
        let now = s.connected.fetch_add(1, Ordering::Relaxed) + 1;
        s.connected_peak.fetch_max(now, Ordering::Relaxed);
        if first {
            s.ever_connected.fetch_add(1, Ordering::Relaxed);
        } else {
            s.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let _ = s
            .connect_us
            .lock()
            .expect(NOT_POISONED)
            .record((connect_time.as_micros() as u64).max(1));
    }
    fn disconnected(&self, _why: &str) {
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
    fn task_received(&self, task: &pb::Task, received_us: u64) {
        self.stats.tasks.fetch_add(1, Ordering::Relaxed);
        let _ = self.stats.first_task_unix_us.compare_exchange(
            0,
            received_us,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.stats
            .first_task_unix_us
            .fetch_min(received_us, Ordering::Relaxed);
        self.stats
            .last_task_unix_us
            .fetch_max(received_us, Ordering::Relaxed);
        let latency = received_us.saturating_sub(task.create_time_us);
        let frontend = Some(self.frontend.load(Ordering::Relaxed)).filter(|&i| i != NO_FRONTEND);
        self.stats.record_task_latency(frontend, latency);
    }
    fn uploaded(&self, bytes: u64, rows: u64) {
        self.stats.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.stats.upload_rows.fetch_add(rows, Ordering::Relaxed);
    }
    fn file_chunk_resumed(&self) {
        self.stats
            .file_chunks_resumed
            .fetch_add(1, Ordering::Relaxed);
    }
    fn flow_done(&self, flow_id: &str, rows: u64) {
        self.stats.flows_done.fetch_add(1, Ordering::Relaxed);
        self.stats
            .flows
            .lock()
            .expect(NOT_POISONED)
            .insert(flow_id.to_string(), (self.client_id.clone(), rows));
    }
    fn facts_refused(&self, status: u16) {
        let counter = match status {
            408 => &self.stats.facts_timed_out,
            _ => &self.stats.facts_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn error(&self, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock().expect(NOT_POISONED) = Some(what.to_string());
    }
    fn events_acked(&self, _artifact: &str, rows: u64, bytes: u64) {
        let s = &self.stats;
        s.events_acked_rows.fetch_add(rows, Ordering::Relaxed);
        s.events_acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        s.events_acked_batches.fetch_add(1, Ordering::Relaxed);
    }
    fn events_dropped(&self, _artifact: &str, rows: u64, _why: DropReason) {
        self.stats
            .events_dropped_rows
            .fetch_add(rows, Ordering::Relaxed);
    }
}

/// Counters at one second of the run (cumulative, except `connected`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t_s: u64,
    pub connected: i64,
    pub ever_connected: u64,
    pub tasks: u64,
    pub flows: u64,
    pub upload_bytes: u64,
    pub errors: u64,
    pub reconnects: u64,
    #[serde(default)]
    pub tickets_offered: u64,
    /// Event rows acknowledged and dropped so far.
    #[serde(default)]
    pub events_acked: u64,
    #[serde(default)]
    pub events_dropped: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// The whole histogram (HdrHistogram V2, base64) so reports merge exactly.
    pub histogram_v2: String,
}

/// The live watch: events seen and how late they arrived (receive time − `time_ms`).
#[derive(Serialize, Deserialize)]
pub struct WatchReport {
    pub artifact: String,
    pub events_seen: u64,
    pub events_per_second: f64,
    pub lag: Percentiles,
    /// Times the stream was opened (more than 1: it ended or failed and was reopened).
    pub opened: u64,
    pub end_reason: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct FlowReport {
    pub client_id: String,
    pub flow_id: String,
    pub rows: u64,
}

/// The files scenario's outcome, checked on the server.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FilesReport {
    /// Bytes of complete, verified files over the seconds from the first collection
    /// scheduled to the end of the run (end the run with --exit-after-flows).
    pub upload_mb_per_second: f64,
    pub seconds: f64,
    pub files_completed: u64,
    pub bytes_completed: u64,
    pub files_wrong: u64,
    pub downloads_verified: u64,
    pub downloads_failed: u64,
    /// Chunks the server answered DUPLICATE or OUT_OF_ORDER: the agents resumed from the
    /// server's offset (after a reconnect, a move or a restart) rather than from zero.
    pub resumed_chunks: u64,
    /// Agent-side errors over the run (all kinds).
    pub errors: u64,
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Report {
    pub scenario: Option<crate::driver::Scenario>,
    /// The files scenario: what the server holds after the run.
    #[serde(default)]
    pub files: Option<FilesReport>,
    /// Collections the scenario scheduled through the API, and how many it could not.
    pub collections_scheduled: u64,
    pub schedule_errors: u64,
    /// GUI/API latency measured by the probe while the run lasted.
    pub api_latency: Option<Percentiles>,
    /// The probe's latency per path it requested (`--probe-path`).
    #[serde(default)]
    pub api_latency_by_path: BTreeMap<String, Percentiles>,
    pub clients: usize,
    pub workers: usize,
    pub duration_s: f64,
    pub connected_peak: i64,
    pub connected_at_end: i64,
    pub ever_connected: u64,
    pub time_to_connect_all_s: Option<f64>,
    pub connect_time: Percentiles,
    pub tasks_received: u64,
    /// Wall-clock µs (this host's clock, as the server's `create_time_us`) of the first
    /// and the last task that arrived; absent if none did.
    #[serde(default)]
    pub first_task_unix_us: Option<u64>,
    #[serde(default)]
    pub last_task_unix_us: Option<u64>,
    pub task_latency: Percentiles,
    /// Frontend URL (as the client config lists it) -> latency of the tasks that arrived
    /// through it; only frontends through which a task arrived.
    #[serde(default)]
    pub task_latency_by_frontend: BTreeMap<String, Percentiles>,
    pub upload_bytes: u64,
    pub upload_rows: u64,
    /// File chunks answered DUPLICATE or OUT_OF_ORDER (resent after a reconnect, or
    /// skipped to the server's offset).
    #[serde(default)]
    pub file_chunks_resumed: u64,
    pub upload_mb_per_second: f64,
    pub flows_completed: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Facts uploads the server refused for now (503), sent again by the agents.
    #[serde(default)]
    pub facts_refused: u64,
    /// Facts uploads answered 408 (no body within the server's idle timeout), sent again.
    #[serde(default)]
    pub facts_timed_out: u64,
    pub reconnects: u64,
    /// Connections on which an agent offered a TLS session ticket.
    #[serde(default)]
    pub tickets_offered: u64,
    /// Client monitoring events: rows, bytes of rows and batches the server acknowledged,
    /// rows the agents dropped, and the acknowledged rates over the run.
    #[serde(default)]
    pub events_acked_rows: u64,
    #[serde(default)]
    pub events_acked_bytes: u64,
    #[serde(default)]
    pub events_acked_batches: u64,
    #[serde(default)]
    pub events_dropped_rows: u64,
    #[serde(default)]
    pub events_acked_per_second: f64,
    #[serde(default)]
    pub events_bytes_per_second: f64,
    /// What `--watch-artifact` saw on the master's watch stream.
    #[serde(default)]
    pub watch: Option<WatchReport>,
    /// Probe requests that failed or answered other than 200, over the run.
    #[serde(default)]
    pub api_errors: u64,
    pub series: Vec<SeriesPoint>,
    /// Task delivery and API probe latency per `--window-s` window (a lone process's
    /// own; a fleet of worker processes reports none).
    #[serde(default)]
    pub latency_windows: Vec<WindowPoint>,
    pub flows: Vec<FlowReport>,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising to memory cannot fail");
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        histogram_v2: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

fn histogram_of(p: &Percentiles) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&p.histogram_v2)
        .context("histogram base64")?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))
}

impl Stats {
    pub fn report(
        &self,
        clients: usize,
        duration: Duration,
        connect_all: Option<Duration>,
    ) -> Report {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut flows: Vec<FlowReport> = self
            .flows
            .lock()
            .expect(NOT_POISONED)
            .iter()
            .map(|(f, (c, r))| FlowReport {
                client_id: c.clone(),
                flow_id: f.clone(),
                rows: *r,
            })
            .collect();
        flows.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
        Report {
            scenario: None,
            files: None,
            collections_scheduled: 0,
            schedule_errors: 0,
            api_latency: None,
            api_latency_by_path: BTreeMap::new(),
            clients,
            workers: 1,
            duration_s: duration.as_secs_f64(),
            connected_peak: self.connected_peak.load(Ordering::Relaxed),
            connected_at_end: self.connected.load(Ordering::Relaxed),
            ever_connected: l(&self.ever_connected),
            time_to_connect_all_s: connect_all.map(|d| d.as_secs_f64()),
            connect_time: percentiles(&self.connect_us.lock().expect(NOT_POISONED)),
            tasks_received: l(&self.tasks),
            first_task_unix_us: Some(l(&self.first_task_unix_us)).filter(|&t| t != 0),
            last_task_unix_us: Some(l(&self.last_task_unix_us)).filter(|&t| t != 0),
            task_latency: percentiles(&self.task_latency_us.lock().expect(NOT_POISONED)),
            task_latency_by_frontend: self
                .task_latency_by_frontend_us
                .lock()
                .expect(NOT_POISONED)
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(url, h)| (url.clone(), percentiles(h)))
                .collect(),
            upload_bytes: l(&self.upload_bytes),
            upload_rows: l(&self.upload_rows),
            file_chunks_resumed: l(&self.file_chunks_resumed),
            upload_mb_per_second: l(&self.upload_bytes) as f64
                / 1e6
                / duration.as_secs_f64().max(1e-9),
            flows_completed: l(&self.flows_done),
            errors: l(&self.errors),
            last_error: self.last_error(),
            facts_refused: l(&self.facts_refused),
            facts_timed_out: l(&self.facts_timed_out),
            reconnects: l(&self.reconnects),
            tickets_offered: l(&self.tickets_offered),
            events_acked_rows: l(&self.events_acked_rows),
            events_acked_bytes: l(&self.events_acked_bytes),
            events_acked_batches: l(&self.events_acked_batches),
            events_dropped_rows: l(&self.events_dropped_rows),
            events_acked_per_second: l(&self.events_acked_rows) as f64
                / duration.as_secs_f64().max(1e-9),
            events_bytes_per_second: l(&self.events_acked_bytes) as f64
                / duration.as_secs_f64().max(1e-9),
            watch: None,
            api_errors: 0,
            series: self.series.lock().expect(NOT_POISONED).clone(),
            latency_windows: self.windows.lock().expect(NOT_POISONED).clone(),
            flows,
        }
    }
}

impl Report {
    /// Adds what the scenario driver did and measured.
    pub fn add_driver(
        &mut self,
        scenario: crate::driver::Scenario,
        outcome: crate::driver::DriverOutcome,
    ) {
        self.scenario = Some(scenario);
        self.files = outcome.files.map(|check| FilesReport {
            upload_mb_per_second: check.bytes_completed as f64
                / outcome.files_seconds.max(1e-9)
                / 1e6,
            seconds: outcome.files_seconds,
            files_completed: check.files_completed,
            bytes_completed: check.bytes_completed,
            files_wrong: check.files_wrong,
            downloads_verified: check.downloads_verified,
            downloads_failed: check.downloads_failed,
            resumed_chunks: self.file_chunks_resumed,
            errors: self.errors,
            problems: check.problems,
        });
        self.collections_scheduled = outcome.collections_scheduled;
        self.schedule_errors = outcome.schedule_errors;
        self.api_latency = outcome.api_latency_us.as_ref().map(percentiles);
        self.api_errors = outcome.api_errors;
        self.api_latency_by_path = outcome
            .api_latency_by_path_us
            .iter()
            .map(|(path, hist)| (path.clone(), percentiles(hist)))
            .collect();
        self.watch = outcome.watch.map(|w| WatchReport {
            events_per_second: w.events_seen as f64 / self.duration_s.max(1e-9),
            artifact: w.artifact,
            events_seen: w.events_seen,
            lag: percentiles(&w.lag_us),
            opened: w.opened,
            end_reason: w.end_reason,
            error: w.error,
        });
    }

    /// One line for the operator: what the events scenario achieved.
    pub fn events_summary(&self) -> Option<String> {
        if self.events_acked_rows == 0 && self.events_dropped_rows == 0 && self.watch.is_none() {
            return None;
        }
        let mut line = format!(
            "events acked {} ({:.0}/s, {:.2} MB/s), dropped {}",
            self.events_acked_rows,
            self.events_acked_per_second,
            self.events_bytes_per_second / 1e6,
            self.events_dropped_rows
        );
        if let Some(w) = &self.watch {
            line += &format!(
                "; watch {}: {} seen, lag p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                w.artifact,
                w.events_seen,
                w.lag.p50_us as f64 / 1e3,
                w.lag.p99_us as f64 / 1e3,
                w.lag.max_us as f64 / 1e3
            );
            if let Some(e) = &w.error {
                line += &format!(" (error: {e})");
            }
        }
        Some(line)
    }
}

/// The latency of the tasks that arrived through any of `frontends` (URLs as the report
/// keys them), merged exactly: e.g. every minion at once, against the master alone.
pub fn task_latency_through(report: &Report, frontends: &[String]) -> Result<Percentiles> {
    let mut merged = new_histogram();
    for url in frontends {
        let p = report.task_latency_by_frontend.get(url).with_context(|| {
            let known: Vec<&str> = report
                .task_latency_by_frontend
                .keys()
                .map(String::as_str)
                .collect();
            format!(
                "no task arrived through {url} (tasks arrived through: {})",
                known.join(", ")
            )
        })?;
        merged
            .add(histogram_of(p)?)
            .with_context(|| format!("merging task latencies of {url}"))?;
    }
    Ok(percentiles(&merged))
}

/// The events part of a progress line (empty when no event moved): rows acknowledged in
/// the last second, and dropped so far.
pub fn events_progress(now: &SeriesPoint, acked_before: u64) -> String {
    if now.events_acked == 0 && now.events_dropped == 0 {
        return String::new();
    }
    format!(
        " events {}/s dropped {}",
        now.events_acked.saturating_sub(acked_before),
        now.events_dropped
    )
}

/// Sums the points of several workers second by second.
pub fn sum_series(all: &[&[SeriesPoint]]) -> Vec<SeriesPoint> {
    let len = all.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            let mut sum = SeriesPoint {
                t_s: i as u64 + 1,
                ..Default::default()
            };
            for series in all {
                // A worker that stopped early keeps its last counters.
                if let Some(p) = series.get(i).or(series.last()) {
                    sum.connected += if i < series.len() { p.connected } else { 0 };
                    sum.ever_connected += p.ever_connected;
                    sum.tasks += p.tasks;
                    sum.flows += p.flows;
                    sum.upload_bytes += p.upload_bytes;
                    sum.errors += p.errors;
                    sum.reconnects += p.reconnects;
                    sum.tickets_offered += p.tickets_offered;
                    sum.events_acked += p.events_acked;
                    sum.events_dropped += p.events_dropped;
                }
            }
            sum
        })
        .collect()
}

/// One report for a fleet run by several worker processes.
pub fn merge(reports: Vec<Report>) -> Result<Report> {
    let mut connect = new_histogram();
    let mut latency = new_histogram();
    let mut by_frontend: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for r in &reports {
        connect
            .add(histogram_of(&r.connect_time)?)
            .context("merging connect times")?;
        latency
            .add(histogram_of(&r.task_latency)?)
            .context("merging task latencies")?;
        for (url, p) in &r.task_latency_by_frontend {
            let h = by_frontend.entry(url.clone()).or_insert_with(new_histogram);
            h.add(histogram_of(p)?)
                .with_context(|| format!("merging task latencies of {url}"))?;
        }
    }
    let series = sum_series(
        &reports
            .iter()
            .map(|r| r.series.as_slice())
            .collect::<Vec<_>>(),
    );
    let duration_s = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    let connect_all = reports
        .iter()
        .map(|r| r.time_to_connect_all_s)
        .collect::<Option<Vec<f64>>>();
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let upload_bytes = sum(|r| r.upload_bytes);
    Ok(Report {
        scenario: None,
        files: None,
        collections_scheduled: 0,
        schedule_errors: 0,
        api_latency: None,
        api_latency_by_path: BTreeMap::new(),
        clients: reports.iter().map(|r| r.clients).sum(),
        workers: reports.len(),
        duration_s,
        connected_peak: series.iter().map(|p| p.connected).max().unwrap_or(0),
        connected_at_end: reports.iter().map(|r| r.connected_at_end).sum(),
        ever_connected: sum(|r| r.ever_connected),
        time_to_connect_all_s: connect_all.map(|v| v.into_iter().fold(0.0, f64::max)),
        connect_time: percentiles(&connect),
        tasks_received: sum(|r| r.tasks_received),
        first_task_unix_us: reports.iter().filter_map(|r| r.first_task_unix_us).min(),
        last_task_unix_us: reports.iter().filter_map(|r| r.last_task_unix_us).max(),
        task_latency: percentiles(&latency),
        task_latency_by_frontend: by_frontend
            .iter()
            .map(|(url, h)| (url.clone(), percentiles(h)))
            .collect(),
        upload_bytes,
        upload_rows: sum(|r| r.upload_rows),
        file_chunks_resumed: sum(|r| r.file_chunks_resumed),
        upload_mb_per_second: upload_bytes as f64 / 1e6 / duration_s.max(1e-9),
        flows_completed: sum(|r| r.flows_completed),
        errors: sum(|r| r.errors),
        last_error: reports.iter().find_map(|r| r.last_error.clone()),
        facts_refused: sum(|r| r.facts_refused),
        facts_timed_out: sum(|r| r.facts_timed_out),
        reconnects: sum(|r| r.reconnects),
        tickets_offered: sum(|r| r.tickets_offered),
        events_acked_rows: sum(|r| r.events_acked_rows),
        events_acked_bytes: sum(|r| r.events_acked_bytes),
        events_acked_batches: sum(|r| r.events_acked_batches),
        events_dropped_rows: sum(|r| r.events_dropped_rows),
        events_acked_per_second: sum(|r| r.events_acked_rows) as f64 / duration_s.max(1e-9),
        events_bytes_per_second: sum(|r| r.events_acked_bytes) as f64 / duration_s.max(1e-9),
        watch: None,
        api_errors: 0,
        series,
        latency_windows: Vec::new(),
        flows: reports.into_iter().flat_map(|r| r.flows).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use packhunt::clock::now_us;

    #[test]
    fn merged_reports_keep_exact_percentiles_and_sums() {
        let a = Stats::new();
        let b = Stats::new();
        for v in 1..=100u64 {
            a.task_latency_us
                .lock()
                .expect(NOT_POISONED)
                .record(v)
                .unwrap();
            b.task_latency_us
                .lock()
                .expect(NOT_POISONED)
                .record(v + 100)
                .unwrap();
        }
        a.tasks.store(100, Ordering::Relaxed);
        b.tasks.store(100, Ordering::Relaxed);
        a.record_point(SeriesPoint {
            t_s: 1,
            connected: 3,
            ..Default::default()
        });
        b.record_point(SeriesPoint {
            t_s: 1,
            connected: 4,
            ..Default::default()
        });
        let merged = merge(vec![
            a.report(10, Duration::from_secs(1), None),
            b.report(5, Duration::from_secs(2), None),
        ])
        .unwrap();
        assert_eq!(merged.clients, 15);
        assert_eq!(merged.tasks_received, 200);
        assert_eq!(merged.task_latency.count, 200);
        assert_eq!(merged.task_latency.p50_us, 100);
        assert_eq!(merged.task_latency.max_us, 200);
        assert_eq!(merged.connected_peak, 7);
        assert_eq!(merged.duration_s, 2.0);
    }

    #[test]
    fn per_frontend_latencies_merge_exactly_across_workers() {
        // Goal: each frontend's percentiles after the merge are those of all its tasks,
        // whichever worker saw them. Method: two workers record disjoint value ranges for
        // a shared frontend plus one frontend each (all below 2,048 µs, where 3 significant
        // digits are exact); compare with known quantiles.
        let (master, minion_a, minion_b) = (
            "https://127.0.0.1:1/",
            "https://127.0.0.1:2/",
            "https://127.0.0.1:3/",
        );
        let a = Stats::new();
        let b = Stats::new();
        // Slots are per process: the same URL may sit at different indexes in each.
        let (a_master, a_minion) = (a.frontend_slot(master), a.frontend_slot(minion_a));
        let (b_minion, b_master) = (b.frontend_slot(minion_b), b.frontend_slot(master));
        assert_eq!(a.frontend_slot(master), a_master, "a URL keeps its slot");
        // Agents connected here, but no task came through it.
        b.frontend_slot("https://127.0.0.1:4/");
        for v in 1..=100u64 {
            a.record_task_latency(Some(a_master), v);
            b.record_task_latency(Some(b_master), v + 100);
            a.record_task_latency(Some(a_minion), v + 1_000);
            b.record_task_latency(Some(b_minion), v + 1_500);
        }
        // A task before any connection counts overall only.
        a.record_task_latency(None, 5);
        let reports = vec![
            a.report(1, Duration::from_secs(1), None),
            b.report(1, Duration::from_secs(1), None),
        ];
        let merged = merge(reports).unwrap();
        let by = &merged.task_latency_by_frontend;
        let listed: Vec<&str> = by.keys().map(String::as_str).collect();
        assert_eq!(
            listed,
            vec![master, minion_a, minion_b],
            "frontends without tasks are left out"
        );
        assert_eq!(
            (
                by[master].count,
                by[master].p50_us,
                by[master].p99_us,
                by[master].max_us
            ),
            (200, 100, 198, 200)
        );
        assert_eq!(
            (by[minion_a].count, by[minion_a].p50_us, by[minion_a].max_us),
            (100, 1_050, 1_100)
        );
        assert_eq!(
            (by[minion_b].count, by[minion_b].p50_us, by[minion_b].max_us),
            (100, 1_550, 1_600)
        );
        assert_eq!(merged.task_latency.count, 401);
        // The merged histogram itself travels: a second merge gives the same figures.
        let again = merge(vec![merged]).unwrap();
        assert_eq!(again.task_latency_by_frontend[master].p99_us, 198);
        // Both minions together: 1,001..1,100 and 1,501..1,600.
        let minions =
            task_latency_through(&again, &[minion_a.to_string(), minion_b.to_string()]).unwrap();
        assert_eq!(
            (minions.count, minions.p50_us, minions.max_us),
            (200, 1_100, 1_600)
        );
        let Err(err) = task_latency_through(&again, &["https://127.0.0.1:4/".to_string()]) else {
            panic!("a frontend without tasks is an error, not an empty histogram");
        };
        assert!(err.to_string().contains("127.0.0.1:4"), "{err}");
    }

    #[test]
    fn a_task_counts_under_the_frontend_of_the_connection_it_came_on() {
        // Goal: the observer files each task under the URL it was connected to at the time,
        // also after a reconnect elsewhere. Method: drive the observer as the agent does.
        let stats = std::sync::Arc::new(Stats::new());
        let observer = AgentObserver::new(stats.clone(), "C.0".into());
        let one = ServerUrl::parse("https://127.0.0.1:1/").unwrap();
        let two = ServerUrl::parse("https://127.0.0.1:2/").unwrap();
        let task = |flow: &str| pb::Task {
            flow_id: flow.into(),
            artifacts: vec![],
            create_time_us: now_us(),
            hunt_id: String::new(),
            limits: None,
        };
        // Each task arrived 5 ms after it was created; the observer may hear of it later.
        let arrived = |task: pb::Task| (task.create_time_us + 5_000, task);
        observer.connected(&one, Duration::from_millis(1), true);
        let (at, t) = arrived(task("F.1"));
        observer.task_received(&t, at);
        observer.disconnected("test");
        observer.connected(&two, Duration::from_millis(1), false);
        for flow in ["F.2", "F.3"] {
            let (at, t) = arrived(task(flow));
            std::thread::sleep(Duration::from_millis(20));
            observer.task_received(&t, at);
        }
        let report = stats.report(1, Duration::from_secs(1), None);
        assert_eq!(report.task_latency.count, 3);
        assert!(
            (4_990..=5_010).contains(&report.task_latency.max_us),
            "latency is arrival − creation: {:?}",
            report.task_latency.max_us
        );
        assert_eq!(report.task_latency_by_frontend[&one.to_string()].count, 1);
        assert_eq!(report.task_latency_by_frontend[&two.to_string()].count, 2);
        let (first, last) = (
            report.first_task_unix_us.unwrap(),
            report.last_task_unix_us.unwrap(),
        );
        assert!(
            first <= last && last <= now_us(),
            "arrivals {first}..{last}"
        );
        let idle = Stats::new().report(1, Duration::from_secs(1), None);
        assert_eq!(
            (idle.first_task_unix_us, idle.last_task_unix_us),
            (None, None),
            "no task, no arrival time"
        );
        let merged = merge(vec![report, idle]).unwrap();
        assert_eq!(
            (merged.first_task_unix_us, merged.last_task_unix_us),
            (Some(first), Some(last))
        );
    }
}
