//! Sinks: each frontend ships the events it ingests to the systems a security team runs
//! (Elasticsearch/OpenSearch, ClickHouse, a webhook, a JSONL file), as `[[sinks]]` in
//! `server.config.toml` says (docs/events/sinks.md).
//!
//! Per sink: a tap (`EventConsumer`, on the agent shards, never waits) → a bounded queue
//! (full: drop and count) → the spool writer thread → an on-disk spool bounded by
//! `spool_bytes` (full: the oldest dropped and counted) → the sender thread, which
//! delivers batches and moves the spool past them only once delivered.
//!
//! Owns: the sinks' threads, spools and requests. Must not: block an agent shard or the
//! GUI/API, or read the monitoring day files (the spool is its own copy).

mod backoff;
mod clickhouse;
mod delivery;
mod elastic;
mod file;
mod http;
mod record;
mod sender;
mod spool;
mod tap;
mod webhook;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use record::SpoolEvent;

use crate::config::{Sink, SinkKind};
use crate::events::EventConsumer;
use crate::limits::{SINK_POLL_INTERVAL, SINK_QUEUE_BATCHES_COUNT};
use crate::metrics::SinkMetrics;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{sink}`: {source}")]
    Spool {
        sink: String,
        source: spool::SpoolError,
    },
    #[error("sink `{sink}`: {source}")]
    Http {
        sink: String,
        source: http::HttpSetupError,
    },
    #[error("sink `{sink}`: cannot start its thread: {source}")]
    Thread {
        sink: String,
        source: std::io::Error,
    },
}

/// The spool folder of `sink` on the frontend named `frontend`: `<spool_dir or
/// <datastore>/spool>/<frontend>/<sink>`. Per frontend because each ships what it
/// ingests and two frontends must never share a spool, even on a shared datastore.
pub fn spool_dir(sink: &Sink, datastore: &Path, frontend: &str) -> PathBuf {
    let root = sink
        .spool_dir
        .clone()
        .unwrap_or_else(|| datastore.join("spool"));
    // A frontend name is HOST:PORT; keep it one safe path component.
    let frontend: String = frontend
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    // Config checks sink names are [A-Za-z0-9_-]{1,64}: one component, never `..`.
    root.join(frontend).join(&sink.name)
}

/// State the spool writer and the sender share.
struct Shared {
    name: String,
    spool: Mutex<spool::Spool>,
    /// Signalled on append and on stop.
    wake: Condvar,
    stop: Arc<AtomicBool>,
    metrics: Arc<SinkMetrics>,
}

impl Shared {
    fn lock_spool(&self) -> MutexGuard<'_, spool::Spool> {
        // A panic while holding it leaves the spool's files consistent (appends and
        // cursor replaces are whole), so the state is still usable.
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn publish_size(&self, spool: &spool::Spool) {
        let bytes = spool.disk_bytes().min(i64::MAX as u64) as i64;
        self.metrics.spooled_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Sleeps `wait`, waking early on a stop; false if stopped.
    fn sleep_unless_stopped(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(SINK_POLL_INTERVAL));
        }
        false
    }
}

/// One started sink: its tap for the agent shards and its two threads.
pub struct RunningSink {
    shared: Arc<Shared>,
    tap: Arc<tap::SinkTap>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningSink {
    /// Opens the spool in `spool_dir` (sending what an earlier run left there) and
    /// starts the sink's threads.
    pub fn start(sink: &Sink, spool_dir: &Path) -> Result<Self, SinkError> {
        let name = sink.name.clone();
        let spool =
            spool::Spool::open(spool_dir, sink.spool_bytes).map_err(|source| SinkError::Spool {
                sink: name.clone(),
                source,
            })?;
        let metrics = crate::metrics::metrics().sink(&name);
        let stop = Arc::new(AtomicBool::new(false));
        let kind = deliverer(sink, &stop).map_err(|source| SinkError::Http {
            sink: name.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            name: name.clone(),
            spool: Mutex::new(spool),
            wake: Condvar::new(),
            stop,
            metrics: metrics.clone(),
        });
        shared.publish_size(&shared.lock_spool());
        let (queue, queued) = crossbeam_channel::bounded(SINK_QUEUE_BATCHES_COUNT);
        let queued_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tap = Arc::new(tap::SinkTap::new(
            sink.artifacts.clone(),
            sink.labels.clone(),
            queue,
            queued_bytes.clone(),
            metrics,
        ));
        let mut running = Self {
            shared: shared.clone(),
            tap,
            threads: Vec::with_capacity(2),
        };
        let spawn = |what: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("sink-{what}-{name}"))
                .spawn(f)
                .map_err(|source| SinkError::Thread {
                    sink: name.clone(),
                    source,
                })
        };
        let s = shared.clone();
        running.threads.push(spawn(
            "spool",
            Box::new(move || writer::run(s, queued, queued_bytes)),
        )?);
        let batching = sender::Batching {
            rows: sink.batch_rows.get(),
            age: sink.batch_age,
        };
        running.threads.push(spawn(
            "send",
            Box::new(move || sender::run(shared, kind, batching)),
        )?);
        Ok(running)
    }

    /// What the agent shards offer batches to.
    pub fn consumer(&self) -> Arc<dyn EventConsumer> {
        self.tap.clone()
    }

    pub fn metrics(&self) -> &Arc<SinkMetrics> {
        &self.shared.metrics
    }

    /// Stops the threads: queued batches are spooled first, a delivery in flight is
    /// abandoned (the spool still holds it, so the next start sends it again).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningSink {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Every configured sink of one frontend.
#[derive(Default)]
pub struct Sinks(Vec<RunningSink>);

impl Sinks {
    /// Starts `sinks` for the frontend `frontend`, spools under `datastore` by default.
    pub fn start(sinks: &[Sink], datastore: &Path, frontend: &str) -> Result<Self, SinkError> {
        let mut running = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let dir = spool_dir(sink, datastore, frontend);
            running.push(RunningSink::start(sink, &dir)?);
        }
        Ok(Self(running))
    }

    pub fn consumers(&self) -> Vec<Arc<dyn EventConsumer>> {
        self.0.iter().map(RunningSink::consumer).collect()
    }

    pub fn stop(self) {
        for sink in self.0 {
            sink.stop();
        }
    }
}

fn deliverer(
    sink: &Sink,
    stop: &Arc<AtomicBool>,
) -> Result<Box<dyn delivery::Deliver>, http::HttpSetupError> {
    let client = |target| http::HttpClient::new(target, stop.clone());
    Ok(match &sink.kind {
        SinkKind::Elastic { http, index } => Box::new(elastic::Elastic {
            index: index.clone(),
            client: client(http)?,
        }),
        SinkKind::ClickHouse { http, table } => Box::new(clickhouse::ClickHouse {
            table: table.clone(),
            client: client(http)?,
        }),
        SinkKind::Webhook { http } => Box::new(webhook::Webhook {
            name: sink.name.clone(),
            client: client(http)?,
        }),
        SinkKind::File {
            path,
            max_file_bytes,
            max_files,
        } => Box::new(file::FileSink::new(
            path.clone(),
            *max_file_bytes,
            *max_files,
        )),
    })
}
