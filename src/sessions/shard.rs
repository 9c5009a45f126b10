//! What one agent shard's sessions share through `Rc`: the config, the datastore
//! handle, the registry of agents connected to this shard, the queue that reports
//! presence and flow states to the hub, and the shutdown signal. Nothing here is
//! reachable from another thread. (Admission, the transport's share, lives in
//! `transport::admission`.)

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::datastore::Datastore;
use crate::events::EventTaps;
use crate::notify::shard_events::ShardEventSender;
use crate::protocol::event_table::FleetTable;
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
    /// Who gets every event batch this shard makes durable.
    pub event_taps: EventTaps,
    shutdown: ShutdownSignal,
    next_session_id: Cell<u64>,
    /// Stream openings' reads of queued tasks and labels, batched per blocking-pool trip.
    pub connect_reads: crate::sessions::tasks::ConnectReads,
    /// This shard's facts budget and the frontend's memory of recent facts.
    pub facts: crate::sessions::facts::ShardFacts,
    /// The latest client event table the hub handed over; `None` until the first.
    /// Invariant: its version only grows.
    event_table: RefCell<Option<Arc<FleetTable>>>,
}

impl ShardCtx {
    // One argument per shared part; the composition root (frontend/run.rs) is the only
    // caller and names each, so a builder would add a type without adding safety.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: usize,
        config: Arc<ServerConfig>,
        datastore: Datastore,
        frontend_name: String,
        agent_port: u16,
        events: ShardEventSender,
        event_taps: EventTaps,
        shutdown: ShutdownSignal,
        audit: crate::audit::AuditLog,
        facts_memory: crate::sessions::facts::FactsMemory,
    ) -> Rc<Self> {
        let place: Rc<str> = Rc::from(format!("{frontend_name} shard {shard}"));
        let audit = crate::sessions::registry::CloneAudit { log: audit, place };
        Rc::new(Self {
            shard,
            config,
            connect_reads: crate::sessions::tasks::connect_reads(datastore.clone()),
            datastore,
            frontend_name,
            agent_port,
            sessions: Registry::with_audit(audit),
            events,
            event_taps,
            shutdown,
            next_session_id: Cell::new(1),
            facts: crate::sessions::facts::ShardFacts::new(facts_memory),
            event_table: RefCell::new(None),
        })
    }

    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    pub fn is_stopping(&self) -> bool {
        shutdown::has_fired(&self.shutdown)
    }

    /// The client event table agents of this shard get now, if the hub sent one yet.
    pub fn event_table(&self) -> Option<Arc<FleetTable>> {
        self.event_table.borrow().clone()
    }

    /// Holds `table` if it is newer than the one held (hand-offs may arrive out of
    /// order); returns whether it was.
    pub fn hold_event_table(&self, table: Arc<FleetTable>) -> bool {
        let mut held = self.event_table.borrow_mut();
        if held.as_ref().is_some_and(|h| h.version >= table.version) {
            return false;
        }
        *held = Some(table);
        true
    }

    /// A shard-unique session number; with the shard index it names one connection.
    pub fn next_session_id(&self) -> u64 {
        let id = self.next_session_id.get();
        self.next_session_id.set(id + 1);
        id
    }
}
