//! Who is connected where, and "client C has new work": the messages that cross
//! executors and frontends about agents, never the agents' data.
//!
//! mesh — the bounded queues between the hub and the agent shards and their messages
//! (shard_events — a shard's events to the hub, sent in batches);
//! presence — which agent is connected to which frontend, fed by the shards and by the
//! replication stream; fleet — notifying an agent wherever it is; clones — handing a
//! client's displaced older stream to whoever holds it. The API and hunts reach
//! agents only through here; nothing here touches a session or a file.

pub mod clones;
pub mod fleet;
pub mod mesh;
pub mod presence;
pub mod shard_events;

pub use fleet::FleetNotifier;
