//! The replication stream between frontends (docs/architecture.md): each minion keeps one
//! bidirectional gRPC stream (tonic, mutual TLS with the deployment CA) to the master.
//! It runs on its own small tokio runtime thread; the glommio executors reach it only
//! through the queues in `queue`. What crosses it: agent presence (minion -> master, as
//! deltas and, on every new link, a full snapshot), work notifications (master ->
//! minions: "client C has new work"), cancelled flows (master -> minions: "push these
//! agents a Cancel"), flow state changes (minion -> master), and for live
//! watch the set of watched event artifacts (master -> minions) and the monitoring events
//! of those artifacts (minion -> master, `forward`). The envelope has room for hunt
//! events, which nothing produces yet. Results never cross it: every frontend writes them
//! straight to the shared datastore.

pub mod forward;
pub mod master;
pub mod minion;
pub mod queue;
pub mod thread;

use crate::datastore::FlowState;

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

/// A flow state on the wire names a state this build does not know (a newer peer, or
/// one still sending the old string field). The sender's fault; the message is dropped.
#[derive(Debug, thiserror::Error)]
#[error("unknown flow state {0} on the replication link")]
pub struct UnknownFlowState(pub i32);

/// The one mapping between `datastore::FlowState` and its wire enum.
impl From<FlowState> for pb::FlowStateKind {
    fn from(state: FlowState) -> Self {
        match state {
            FlowState::Scheduled => Self::Scheduled,
            FlowState::InProgress => Self::InProgress,
            FlowState::Finished => Self::Finished,
            FlowState::Error => Self::Error,
            FlowState::Cancelled => Self::Cancelled,
        }
    }
}

/// Drops a message from frontend `from` that carries a field this build cannot read
/// (`what` says which): counted in `packhunt_replication_malformed_total` and logged,
/// never guessed at.
pub fn drop_malformed(from: &str, what: std::fmt::Arguments<'_>) {
    crate::metrics::metrics()
        .replication_malformed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(frontend = from, "{what}; ignored");
}

/// Reads `pb::FlowState::state` (prost keeps unknown enum values as the raw `i32`).
pub fn flow_state_from_wire(value: i32) -> Result<FlowState, UnknownFlowState> {
    match pb::FlowStateKind::try_from(value) {
        Ok(pb::FlowStateKind::Scheduled) => Ok(FlowState::Scheduled),
        Ok(pb::FlowStateKind::InProgress) => Ok(FlowState::InProgress),
        Ok(pb::FlowStateKind::Finished) => Ok(FlowState::Finished),
        Ok(pb::FlowStateKind::Error) => Ok(FlowState::Error),
        Ok(pb::FlowStateKind::Cancelled) => Ok(FlowState::Cancelled),
        Ok(pb::FlowStateKind::Unspecified) | Err(_) => Err(UnknownFlowState(value)),
    }
}

/// A message with its kind set, as the link sends it.
pub fn envelope(kind: pb::envelope::Kind) -> pb::Envelope {
    pb::Envelope { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every state survives the wire, and what is not a state is refused, not
    // mapped to a default.
    #[test]
    fn flow_states_round_trip_and_unknown_values_are_refused() {
        for state in [
            FlowState::Scheduled,
            FlowState::InProgress,
            FlowState::Finished,
            FlowState::Error,
            FlowState::Cancelled,
        ] {
            let wire = pb::FlowStateKind::from(state) as i32;
            assert_eq!(flow_state_from_wire(wire).ok(), Some(state));
        }
        for value in [0, 6, -1, i32::MAX] {
            assert!(flow_state_from_wire(value).is_err(), "{value}");
        }
    }
}
