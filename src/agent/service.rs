//! The real agent process: identity from the writeback file, TLS from the client config,
//! native artifacts, progress in the log; stops on SIGINT/SIGTERM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::events::buffer::EventBuffer;
use crate::agent::events::{DropReason, EventSpool, NativeQueries, OnDrop};
use crate::agent::run::{self, AgentEvents, AgentOptions, Observer};
use crate::agent::runner::NativeRunner;
use crate::config::url::ServerUrl;
use crate::config::ClientConfig;
use crate::protocol::pb;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("writeback: {0}")]
    Writeback(#[from] crate::agent::writeback::WritebackError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::server::TlsConfigError),
    #[error("starting the event flusher thread: {0}")]
    Thread(std::io::Error),
}

/// The last client event table, kept beside the event buffer: an agent restarted while
/// no frontend is reachable runs its queries at once rather than after its next connect.
const EVENT_TABLE_FILE: &str = "table.pb";

/// Logs what the agent does at the levels an operator needs.
struct LogObserver;

impl Observer for LogObserver {
    fn connected(&self, url: &ServerUrl, connect_time: Duration, _first: bool) {
        tracing::info!(%url, ?connect_time, "connected");
    }
    fn disconnected(&self, why: &str) {
        tracing::warn!("disconnected: {why}");
    }
    fn task_received(&self, task: &pb::Task, _received_us: u64) {
        tracing::info!(flow = %task.flow_id, artifacts = task.artifacts.len(), "task received");
    }
    fn flow_done(&self, flow_id: &str, rows: u64) {
        tracing::info!(flow = %flow_id, rows, "flow delivered");
    }
    fn error(&self, what: &str) {
        tracing::warn!("{what}");
    }
}

/// Facts the agent reports about its host after every connect.
pub fn host_info() -> pb::ClientInfo {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    pb::ClientInfo {
        hostname: read("/proc/sys/kernel/hostname"),
        os: "linux".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

pub async fn run_from_config(config: ClientConfig) -> Result<(), AgentError> {
    let identity = crate::agent::writeback::load_or_create(&config.client.writeback_path)?;
    crate::say!("packhunt client {} starting", identity.client_id());
    let tls = crate::tls::client::agent_client_config(
        &config.client.ca_certificate,
        identity.rustls_cert_chain(),
        identity.rustls_private_key(),
    )?;
    let spool = open_spool(&config);
    let flusher = spool.start_flusher_thread().map_err(AgentError::Thread)?;
    let opts = AgentOptions {
        urls: config.client.server_urls.clone(),
        tls,
        local_ip: None,
        info: host_info(),
        max_upload_bytes: config.client.max_upload_bytes,
        drop_connection_every_uploads: 0,
        enrolment_secret: config.client.enrolment_secret.clone(),
        events: Some(AgentEvents {
            spool: spool.clone(),
            queries: Box::new(NativeQueries::new(
                spool.clone(),
                Some(config.client.event_buffer_dir.join(EVENT_TABLE_FILE)),
            )),
        }),
        outbox_dir: Some(config.client.outbox_dir.clone()),
        max_outbox_bytes: config.client.max_outbox_bytes,
        rekey: Some(rekeyer(&config)),
        io: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop().await;
        let _ = stop_tx.send(true);
    });
    run::run(opts, Arc::new(NativeRunner), Arc::new(LogObserver), stop_rx).await;
    // The queries stopped with `run`; what they produced since the last batch waits in
    // the buffer for the next start.
    spool.close();
    let _ = flusher.join();
    Ok(())
}

/// Re-keying for the real agent: a new key pair written to the writeback file (so the
/// new client id survives a restart), and the TLS config that presents it.
fn rekeyer(config: &ClientConfig) -> run::Rekeyer {
    let (writeback, ca) = (
        config.client.writeback_path.clone(),
        config.client.ca_certificate.clone(),
    );
    Arc::new(move || {
        let identity = crate::agent::writeback::renew(&writeback).map_err(|e| e.to_string())?;
        crate::say!("packhunt client re-keyed: now {}", identity.client_id());
        crate::tls::client::agent_client_config(
            &ca,
            identity.rustls_cert_chain(),
            identity.rustls_private_key(),
        )
        .map_err(|e| e.to_string())
    })
}

/// The event spool on the configured folder; if the folder cannot be used, events are
/// kept in memory (and say so), so the agent still runs and delivers while it is up.
fn open_spool(config: &ClientConfig) -> Arc<EventSpool> {
    let (dir, max_bytes) = (
        &config.client.event_buffer_dir,
        config.client.max_event_buffer_bytes,
    );
    let dropped_total = AtomicU64::new(0);
    let on_drop: OnDrop = Box::new(move |artifact: &str, rows: u64, why: DropReason| {
        // Offline with a full buffer (or facing a server that takes no events) every new
        // batch is a drop: log sparingly, with the running count.
        let total = dropped_total.fetch_add(1, Ordering::Relaxed) + 1;
        if total.is_power_of_two() {
            tracing::warn!(
                artifact,
                rows,
                "event rows dropped: {} ({total} drops so far)",
                why.as_str()
            );
        }
    });
    let buffer = match EventBuffer::open(dir, max_bytes) {
        Ok((buffer, dropped)) => {
            if !buffer.is_empty() {
                tracing::info!(
                    batches = buffer.len(),
                    bytes = buffer.total_bytes(),
                    "event batches from the previous run to deliver"
                );
            }
            for d in dropped {
                tracing::warn!(artifact = %d.artifact, rows = d.rows,
                    "event rows dropped at start: {}", d.reason.as_str());
            }
            buffer
        }
        Err(e) => {
            tracing::warn!("{e}; events are kept in memory only");
            EventBuffer::memory(max_bytes)
        }
    };
    EventSpool::new(buffer, config.client.max_upload_bytes, on_drop)
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
