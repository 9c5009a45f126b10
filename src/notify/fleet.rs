//! Reaching an agent wherever it is connected: this frontend's shards through the mesh,
//! the other frontends through the replication stream. The API and hunts reach agents
//! only through this.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{ClientId, FlowId};
use crate::notify::mesh::Notifier;
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
