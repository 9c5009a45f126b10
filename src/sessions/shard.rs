//! What one agent shard's sessions share through `Rc`: the config, the datastore
//! handle, the registry of agents connected to this shard, the queue that reports
//! presence and flow states to the hub, and the shutdown signal. Nothing here is
//! reachable from another thread. (Admission, the transport's share, lives in
//! `transport::admission`.)

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::datastore::Datastore;
use crate::notify::mesh::ShardEventSender;
use crate::runtime::shutdown::{self, ShutdownSignal};
use crate::sessions::registry::Registry;

pub struct ShardCtx {
    pub shard: usize,
    pub config: Arc<ServerConfig>,
    pub datastore: Datastore,
    /// `host:port` of this frontend, as agents and the API name it.
    pub frontend_name: String,
    /// The port this frontend serves agents on (the master's or this minion's).
    pub agent_port: u16,
    pub sessions: Registry,
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
        events: ShardEventSender,
        shutdown: ShutdownSignal,
    ) -> Rc<Self> {
        Rc::new(Self {
            shard,
            config,
            datastore,
            frontend_name,
            agent_port,
            sessions: Registry::default(),
            events,
            shutdown,
            next_session_id: Cell::new(1),
        })
    }

    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    pub fn is_stopping(&self) -> bool {
        shutdown::has_fired(&self.shutdown)
    }

    /// A shard-unique session number; with the shard index it names one connection.
    pub fn next_session_id(&self) -> u64 {
        let id = self.next_session_id.get();
        self.next_session_id.set(id + 1);
        id
    }
}
