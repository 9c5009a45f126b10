//! The server side of connected agents: which agents this shard holds (registry), the
//! push stream that carries their tasks (tasks), and their uploads (upload, flows, and
//! event_streams for monitoring events, facts for an agent's ClientInfo); the liveness of its agents' connections and the
//! settling of a client id's older stream when a newer one opens (liveness, clones).
//! Data flows one way: transport hands requests in, the datastore receives what they
//! carry, and presence goes out to the priority executor.

pub mod checkout;
pub mod clones;
pub mod disk_full;
pub mod event_streams;
pub mod facts;
pub mod file_upload;
pub mod flows;
pub mod liveness;
pub mod registry;
pub mod shard;
pub mod tasks;
pub mod upload;
