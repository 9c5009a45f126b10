//! Reaching an agent wherever it is connected: this frontend's shards through the mesh,
//! the other frontends through the replication stream. The API and hunts reach agents
//! only through this.

use std::rc::Rc;

use bytes::Bytes;

use crate::ids::{ClientId, FlowId};
use crate::notify::mesh::Notifier;
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
}
