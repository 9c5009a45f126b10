//! packhunt: a thread-per-core frontend server for endpoint-visibility fleets, its
//! endpoint agent and the shared pieces both ends use. See DESIGN.md for the map.

pub mod agent;
pub mod api;
pub mod artifacts;
pub mod config;
pub mod datastore;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod sessions;
pub mod shard;
pub mod tls;
pub mod transport;
