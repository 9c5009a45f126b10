//! Client monitoring events: the client event table (which event artifacts every agent
//! runs, and which run in addition on agents carrying a label), its validation and its
//! document on the datastore; the seam between ingest and what acts on events
//! (`ingested`); live watchers on the master (`watch`).
//!
//! Owns the table's meaning and its version. Must not: know HTTP (the route is in
//! `api/`), reach into sessions, or join datastore paths (`datastore/path.rs` does).
//! Agents get the table through their shards (`sessions/tasks.rs`) in the wire form
//! `to_wire` gives (`protocol::event_table`).

pub mod ingested;
pub mod store;
pub mod table;
pub mod watch;

pub use ingested::{EventConsumer, EventTaps, IngestedBatch};
pub use store::TableStore;
pub use table::{EventEntry, EventTable, EventTableError, TableVersion, VersionedTable};
pub use watch::{WatchHub, Watcher};
