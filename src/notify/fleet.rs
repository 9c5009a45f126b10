//! Reaching an agent wherever it is connected: this frontend's shards through the mesh,
//! the other frontends through the replication stream. The API and hunts reach agents
//! only through this.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{ClientId, FlowId};
use crate::notify::mesh::{CancelledFlows, Notifier};
use crate::protocol::event_table::FleetTable;
use crate::replication::pb;
use crate::replication::queue::Outbox;

/// Reaches an agent wherever it is connected.
pub struct FleetNotifier {
    pub local: Rc<Notifier>,
    /// The replication queue to the minions (none without minions).
    pub replication: Option<Outbox>,
}

impl FleetNotifier {
    /// Tells every frontend that `client_id` has new work: this one's shards directly,
    /// the minions over the replication stream (each pushes `frame` if it holds the agent).
    pub async fn notify(&self, client_id: &ClientId, flow_id: &FlowId, frame: Bytes) {
        if let Some(outbox) = &self.replication {
            let notification = pb::Notification {
                client_id: client_id.to_string(),
                flow_id: flow_id.to_string(),
                frame: frame.clone(),
            };
            outbox.offer(pb::envelope::Kind::Notification(notification));
        }
        self.local.notify(client_id, flow_id, Some(frame)).await;
    }

    /// `cancelled` flows were cancelled on disk: every frontend holding one's agent pushes
    /// it a Cancel frame (this one's shards directly, the minions over the replication
    /// stream, as one envelope). A full replication queue drops the envelope (counted in
    /// `packhunt_cancel_notices_dropped_total`): the flows stay closed on disk, so their
    /// agents are refused at their next upload.
    pub async fn cancel(&self, cancelled: Arc<CancelledFlows>) {
        if cancelled.flows.is_empty() {
            return;
        }
        if let Some(outbox) = &self.replication {
            let flows = cancelled
                .flows
                .iter()
                .map(|(client, flow)| pb::CancelledFlow {
                    client_id: client.to_string(),
                    flow_id: flow.to_string(),
                })
                .collect();
            let envelope = pb::CancelFlows {
                flows,
                reason: cancelled.reason.clone(),
            };
            if !outbox.offer(pb::envelope::Kind::CancelFlows(envelope)) {
                crate::metrics::metrics()
                    .cancel_notices_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.local.cancel(cancelled).await;
    }

    /// An operator changed `client_id`'s labels (on disk already): whichever frontend
    /// holds the agent sends it its new event table if its queries changed.
    pub async fn labels_changed(&self, client_id: &ClientId, labels: Vec<String>) {
        if let Some(outbox) = &self.replication {
            let changed = pb::LabelsChanged {
                client_id: client_id.to_string(),
                labels: labels.clone(),
            };
            outbox.offer(pb::envelope::Kind::LabelsChanged(changed));
        }
        self.local.labels_changed(client_id, labels.into()).await;
    }

    /// The client event table changed (or is loaded at start): this frontend's shards get
    /// it, the minions are told to reload it from the datastore. Returns at once: the
    /// hand-off to the shards runs as its own task (it may wait on a full queue), so the
    /// API request that changed the table is never held up by it.
    pub fn event_table_changed(&self, table: Arc<FleetTable>) {
        if let Some(outbox) = &self.replication {
            let changed = pb::EventTableChanged {
                version: table.version,
            };
            outbox.offer(pb::envelope::Kind::EventTableChanged(changed));
        }
        let local = self.local.clone();
        glommio::spawn_local(async move { local.event_table(table).await }).detach();
    }
}

/// The flows of a `CancelFlows` envelope from `from` (the master), for this frontend's
/// shards. A flow with a malformed id is dropped and counted; the others still go.
pub fn cancelled_from_wire(from: &str, envelope: pb::CancelFlows) -> CancelledFlows {
    let flows = envelope
        .flows
        .into_iter()
        .filter_map(
            |f| match (ClientId::parse(&f.client_id), FlowId::parse(&f.flow_id)) {
                (Ok(client), Ok(flow)) => Some((client, flow)),
                _ => {
                    crate::replication::drop_malformed(
                        from,
                        format_args!("cancelled flow with malformed ids"),
                    );
                    None
                }
            },
        )
        .collect();
    let reason = envelope
        .reason
        .chars()
        .take(crate::limits::MAX_CANCEL_REASON_CHARS)
        .collect();
    CancelledFlows { flows, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a batch from the link keeps its well-formed flows when one is malformed, and a
    // hostile reason is cut to its bound.
    #[test]
    fn a_cancel_envelope_drops_only_its_malformed_flows() {
        let good = |n: u8| pb::CancelledFlow {
            client_id: format!("C.{n:016x}"),
            flow_id: format!("F.{n:016X}"),
        };
        let bad = pb::CancelledFlow {
            client_id: "../etc".into(),
            flow_id: "F.0000000000000001".into(),
        };
        let envelope = pb::CancelFlows {
            flows: vec![good(1), bad, good(2)],
            reason: "x".repeat(10_000),
        };
        let cancelled = cancelled_from_wire("master:1", envelope);
        let flows: Vec<String> = cancelled
            .flows
            .iter()
            .map(|(c, f)| format!("{c} {f}"))
            .collect();
        assert_eq!(
            flows,
            [
                "C.0000000000000001 F.0000000000000001",
                "C.0000000000000002 F.0000000000000002"
            ]
        );
        assert_eq!(
            cancelled.reason.chars().count(),
            crate::limits::MAX_CANCEL_REASON_CHARS
        );
    }
}
