//! Fleet-wide measurements, shared by every simulated agent of this process: counters
//! as atomics, latencies in HDR histograms behind a mutex (recorded once per event, not
//! per row).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use packhunt::agent::run::Observer;
use packhunt::protocol::pb;

pub struct Stats {
    pub connected: AtomicI64,
    pub connected_peak: AtomicI64,
    pub ever_connected: AtomicU64,
    pub reconnects: AtomicU64,
    pub tasks: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub upload_rows: AtomicU64,
    pub flows_done: AtomicU64,
    pub errors: AtomicU64,
    connect_us: Mutex<Histogram<u64>>,
    task_latency_us: Mutex<Histogram<u64>>,
    /// flow id -> (client id, rows sent), for checking exact counts against the server.
    flows: Mutex<HashMap<String, (String, u64)>>,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn new() -> Self {
        let hist = || Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"));
        Self {
            connected: AtomicI64::new(0),
            connected_peak: AtomicI64::new(0),
            ever_connected: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            upload_rows: AtomicU64::new(0),
            flows_done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connect_us: hist(),
            task_latency_us: hist(),
            flows: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }
}

/// One agent's view onto the shared stats (it knows its own client id).
pub struct AgentObserver {
    pub stats: std::sync::Arc<Stats>,
    pub client_id: String,
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Observer for AgentObserver {
    fn connected(&self, connect_time: Duration, first: bool) {
        let s = &self.stats;
        let now = s.connected.fetch_add(1, Ordering::Relaxed) + 1;
        s.connected_peak.fetch_max(now, Ordering::Relaxed);
        if first {
            s.ever_connected.fetch_add(1, Ordering::Relaxed);
        } else {
            s.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let _ = s.connect_us.lock().unwrap().record((connect_time.as_micros() as u64).max(1));
    }
    fn disconnected(&self, _why: &str) {
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
    fn task_received(&self, task: &pb::Task) {
        self.stats.tasks.fetch_add(1, Ordering::Relaxed);
        let latency = now_us().saturating_sub(task.create_time_us).max(1);
        let _ = self.stats.task_latency_us.lock().unwrap().record(latency);
    }
    fn uploaded(&self, bytes: u64, rows: u64) {
        self.stats.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.stats.upload_rows.fetch_add(rows, Ordering::Relaxed);
    }
    fn flow_done(&self, flow_id: &str, rows: u64) {
        self.stats.flows_done.fetch_add(1, Ordering::Relaxed);
        self.stats.flows.lock().unwrap().insert(flow_id.to_string(), (self.client_id.clone(), rows));
    }
    fn error(&self, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock().unwrap() = Some(what.to_string());
    }
}

#[derive(Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Serialize)]
pub struct FlowReport {
    pub client_id: String,
    pub flow_id: String,
    pub rows: u64,
}

#[derive(Serialize)]
pub struct Report {
    pub clients: usize,
    pub duration_s: f64,
    pub connected_peak: i64,
    pub connected_at_end: i64,
    pub ever_connected: u64,
    pub time_to_connect_all_s: Option<f64>,
    pub connect_time: Percentiles,
    pub tasks_received: u64,
    pub task_latency: Percentiles,
    pub upload_bytes: u64,
    pub upload_rows: u64,
    pub upload_mb_per_second: f64,
    pub flows_completed: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub flows: Vec<FlowReport>,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles { count: h.len(), p50_us: h.value_at_quantile(0.5), p99_us: h.value_at_quantile(0.99), max_us: h.max() }
}

impl Stats {
    pub fn report(&self, clients: usize, duration: Duration, connect_all: Option<Duration>) -> Report {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let flows = self.flows.lock().unwrap();
        let mut flows: Vec<FlowReport> = flows
            .iter()
            .map(|(f, (c, r))| FlowReport { client_id: c.clone(), flow_id: f.clone(), rows: *r })
            .collect();
        flows.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
        Report {
            clients,
            duration_s: duration.as_secs_f64(),
            connected_peak: self.connected_peak.load(Ordering::Relaxed),
            connected_at_end: self.connected.load(Ordering::Relaxed),
            ever_connected: l(&self.ever_connected),
            time_to_connect_all_s: connect_all.map(|d| d.as_secs_f64()),
            connect_time: percentiles(&self.connect_us.lock().unwrap()),
            tasks_received: l(&self.tasks),
            task_latency: percentiles(&self.task_latency_us.lock().unwrap()),
            upload_bytes: l(&self.upload_bytes),
            upload_rows: l(&self.upload_rows),
            upload_mb_per_second: l(&self.upload_bytes) as f64 / 1e6 / duration.as_secs_f64().max(1e-9),
            flows_completed: l(&self.flows_done),
            errors: l(&self.errors),
            last_error: self.last_error(),
            reconnects: l(&self.reconnects),
            flows,
        }
    }
}
