//! What one agent shard owns, shared by its tasks through `Rc`: the config, the
//! datastore handle, the registry of agents connected to this shard, and the shutdown
//! signal. Nothing here is reachable from another thread.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use futures::future::{FutureExt, Shared};

use crate::config::ServerConfig;
use crate::datastore::Datastore;
use crate::sessions::registry::Registry;
use crate::shard::mesh::ShardEventSender;

/// Resolves once when the process is asked to stop.
pub type ShutdownSignal = Shared<futures::channel::oneshot::Receiver<()>>;

pub struct ShardCtx {
    pub shard: usize,
    pub config: Arc<ServerConfig>,
    pub datastore: Datastore,
    /// `host:port` of this frontend, as agents and the API name it.
    pub frontend_name: String,
    /// The port this frontend serves agents on (the master's or this minion's).
    pub agent_port: u16,
    pub sessions: Registry,
    /// This shard's share of the `concurrency` limit.
    pub uploads: crate::transport::upload_permits::UploadPermits,
    /// Load shedding: this shard's share of `max_connections_per_second`, one second of
    /// burst. Connections above it are closed right after accept(), before any TLS work.
    pub accept_rate: crate::rate::TokenBucket,
    /// Presence and flow-state events for the hub.
    pub events: ShardEventSender,
    shutdown: ShutdownSignal,
    next_session_id: Cell<u64>,
}

impl ShardCtx {
    pub fn new(
        shard: usize,
        config: Arc<ServerConfig>,
        datastore: Datastore,
        frontend_name: String,
        agent_port: u16,
        upload_permits: u64,
        connections_per_second: u64,
        events: ShardEventSender,
        shutdown: ShutdownSignal,
    ) -> Rc<Self> {
        let uploads = crate::transport::upload_permits::UploadPermits::new(upload_permits, config.limits.concurrency_wait());
        Rc::new(Self {
            shard,
            config,
            datastore,
            frontend_name,
            agent_port,
            sessions: Registry::default(),
            uploads,
            accept_rate: crate::rate::TokenBucket::new(connections_per_second, connections_per_second),
            events,
            shutdown,
            next_session_id: Cell::new(1),
        })
    }

    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.shutdown.clone().now_or_never().is_some()
    }

    /// A shard-unique session number; with the shard index it names one connection.
    pub fn next_session_id(&self) -> u64 {
        let id = self.next_session_id.get();
        self.next_session_id.set(id + 1);
        id
    }
}
