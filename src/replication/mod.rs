//! The replication stream between frontends (docs/architecture.md): each minion keeps one
//! bidirectional gRPC stream (tonic, mutual TLS with the deployment CA) to the master.
//! It runs on its own small tokio runtime thread; the glommio executors reach it only
//! through the queues in `queue`. What crosses it: agent presence (minion -> master, as
//! deltas and, on every new link, a full snapshot), work notifications (master ->
//! minions: "client C has new work"), flow state changes, and hunt and monitoring
//! events. The master re-broadcasts what one minion sends for all (notifications, hunt
//! and monitoring events) to the others. Results never cross it: every frontend writes
//! them straight to the shared datastore.

pub mod master;
pub mod minion;
pub mod queue;
pub mod thread;

/// Generated types and service stubs (proto/replication.proto).
pub mod pb {
    tonic::include_proto!("packhunt.replication.v1");
}

/// Errors starting the replication service.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::server::TlsConfigError),
    #[error("cannot listen for minions on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start the replication thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// A message with its kind set, as the link sends it.
pub fn envelope(kind: pb::envelope::Kind) -> pb::Envelope {
    pb::Envelope { kind: Some(kind) }
}
