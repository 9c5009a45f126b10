//! The replication thread: a current-thread tokio runtime (tonic needs tokio; the agent
//! shards run glommio) that serves the master's side or keeps a minion's link.

use std::path::PathBuf;
use std::sync::Arc;

use super::queue::{Inbox, OutboxReceiver};
use super::ReplicationError;
use crate::config::{FrontendIdentity, ServerConfig};
use crate::events::WatchHub;

/// The running thread; `stop` ends it and waits.
pub struct LinkThread {
    handle: std::thread::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The master's side: serves minion links on `listener` (bound by the caller); monitoring
/// events minions forward go straight to `watch`.
pub fn spawn_master(
    config: Arc<ServerConfig>,
    config_path: PathBuf,
    listener: std::net::TcpListener,
    outbox: OutboxReceiver,
    inbox: Inbox,
    watch: WatchHub,
) -> Result<LinkThread, ReplicationError> {
    spawn(move |mut stop| async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let link = super::master::Link {
            outbox,
            inbox,
            watch,
        };
        if let Err(e) = super::master::run(config, config_path, listener, link, shutdown).await {
            tracing::error!("replication service stopped: {e}");
        }
    })
}

/// A minion's side: links to the master and keeps the link up.
pub fn spawn_minion(
    config: Arc<ServerConfig>,
    identity: FrontendIdentity,
    outbox: OutboxReceiver,
    inbox: Inbox,
) -> Result<LinkThread, ReplicationError> {
    spawn(move |stop| async move {
        if let Err(e) = super::minion::run(config, identity, outbox, inbox, stop).await {
            tracing::error!("replication link stopped: {e}");
        }
    })
}

fn spawn<F, Fut>(body: F) -> Result<LinkThread, ReplicationError>
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReplicationError::Thread)?;
    let handle = std::thread::Builder::new()
        .name("replication".into())
        .spawn(move || runtime.block_on(body(stopped)))
        .map_err(ReplicationError::Thread)?;
    Ok(LinkThread { handle, stop })
}

impl LinkThread {
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.join();
    }
}
