//! Bounded cross-shard queues between the priority executor and the agent shards.
//!
//! priority -> shard: `ShardMessage` (work notifications), one queue per shard; every
//! shard gets every notification and acts only if it holds the agent, which leaves no
//! window between an agent connecting and the priority executor learning where it is.
//! When full: the sender waits up to `NOTIFY_SEND_DEADLINE`, then drops and counts
//! (`packhunt_notifications_dropped_total`); the work itself is never lost because it
//! is queued on disk first and the agent picks it up when it next connects.
//!
//! The same queue carries `ShardMessage::EventTable`, the client event table for the
//! shard to hold and push to its agents. Same policy (wait up to `NOTIFY_SEND_DEADLINE`,
//! then drop and count in `packhunt_event_table_handoffs_dropped_total`); the hub sends it
//! from a task of its own, never from the API request that changed the table. A shard
//! that missed one keeps the older table until the next change.
//!
//! `ShardMessage::Labels` (an operator changed a client's labels) goes like a work
//! notification, counted with them: the labels are on disk first, so a dropped one only
//! delays the agent's new table until it next connects.
//!
//! `ShardMessage::Cancel` (flows an operator cancelled, already on disk) goes the same way
//! and is counted in `packhunt_cancel_notices_dropped_total` when dropped: the flow is
//! closed on disk, so an agent that missed its Cancel is refused (409) at its next upload
//! and drops the flow, and a later connect is not given the task again.
//!
//! `ShardMessage::Displaced` (the client's stream `session` on that shard was displaced
//! by a newer one elsewhere) goes to the one shard that holds it, with the same wait;
//! when dropped it is counted in `packhunt_fleet_displaced_dropped_total` (the older
//! stream then lives until its agent leaves or idles out).
//!
//! shard -> priority: `ShardEvent` (who is connected where, agents' facts, flows that
//! changed state), one queue per shard, in batches (`notify::shard_events`: one hub wake
//! per batch window, not per event). When full: the shard waits (presence must not be
//! lost or the client list lies).

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use glommio::{GlommioError, ResourceType};

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{ClientId, FlowId};
use crate::limits::{MESH_QUEUE_COUNT, NOTIFY_SEND_DEADLINE};
use crate::notify::shard_events::ShardEventBatch;
use crate::protocol::event_table::FleetTable;
use crate::runtime::channel::connect_polled;
use crate::runtime::deadline::with_deadline;

#[derive(Debug, Clone)]
pub enum ShardMessage {
    /// New work was queued on disk for this client; `frame` is its task frame when the
    /// sender has it, so that the shard pushes it without reading the disk.
    Notify {
        client_id: ClientId,
        flow_id: FlowId,
        frame: Option<Bytes>,
    },
    /// Notifications may have been lost (the replication link was down): look on disk
    /// for tasks queued for every agent connected here.
    Rescan,
    /// The client event table to hold from now on (if newer than the one held) and to
    /// push to every connected agent whose merged table it changes.
    EventTable(Arc<FleetTable>),
    /// An operator changed this client's labels (already on disk): if it is connected
    /// here, its merged event table is recomputed and sent if it changed.
    Labels {
        client_id: ClientId,
        labels: Arc<[String]>,
    },
    /// These flows were cancelled (status.json says so, their queue entries are gone): a
    /// shard holding one's agent pushes it a Cancel frame. A batch, so that a hunt stopped
    /// with `cancel_flows` costs one message per shard per batch, not per flow.
    Cancel(Arc<CancelledFlows>),
    /// This client's stream `session` here was displaced by a newer stream of the same
    /// client id on another shard or frontend: check its connection, then re-key (alive:
    /// a clone) or end it (dead).
    Displaced { client_id: ClientId, session: u64 },
}

/// Flows cancelled together, and why (for the agents' logs).
#[derive(Debug)]
pub struct CancelledFlows {
    pub flows: Vec<(ClientId, FlowId)>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum ShardEvent {
    Connected {
        client_id: ClientId,
        shard: usize,
        session: u64,
    },
    Disconnected {
        client_id: ClientId,
        shard: usize,
        session: u64,
    },
    /// An agent's facts, as this shard just recorded them in its `info.json` (sent after
    /// every ClientInfo, written or not): the master's client index keeps them.
    Facts(Box<crate::datastore::ClientInfoDoc>),
    /// A flow this shard's agent is writing started or ended.
    FlowState {
        client_id: ClientId,
        flow_id: FlowId,
        state: crate::datastore::FlowState,
        total_rows: u64,
    },
}

/// The unconnected ends handed to one agent shard's thread.
pub struct ShardEnds {
    pub notifications: SharedReceiver<ShardMessage>,
    pub events: SharedSender<ShardEventBatch>,
}

/// The unconnected ends handed to the priority executor's thread.
pub struct PriorityEnds {
    pub notifications: Vec<SharedSender<ShardMessage>>,
    pub events: Vec<SharedReceiver<ShardEventBatch>>,
}

/// Builds the queues for `shards` agent shards.
pub fn build(shards: usize) -> (PriorityEnds, Vec<ShardEnds>) {
    let mut priority = PriorityEnds {
        notifications: Vec::new(),
        events: Vec::new(),
    };
    let mut ends = Vec::new();
    for _ in 0..shards {
        let (ntx, nrx) = shared_channel::new_bounded(MESH_QUEUE_COUNT);
        let (ptx, prx) = shared_channel::new_bounded(MESH_QUEUE_COUNT);
        priority.notifications.push(ntx);
        priority.events.push(prx);
        ends.push(ShardEnds {
            notifications: nrx,
            events: ptx,
        });
    }
    (priority, ends)
}

/// Connected senders from the priority executor to every shard.
pub struct Notifier {
    shards: Vec<ConnectedSender<ShardMessage>>,
}

impl Notifier {
    pub async fn connect(ends: Vec<SharedSender<ShardMessage>>) -> Self {
        let mut shards = Vec::with_capacity(ends.len());
        for end in ends {
            shards.push(connect_polled(end.connect()).await);
        }
        Self { shards }
    }

    /// Tells every shard that `client_id` has new work; see the module doc for the policy.
    pub async fn notify(&self, client_id: &ClientId, flow_id: &FlowId, frame: Option<Bytes>) {
        self.broadcast(|| ShardMessage::Notify {
            client_id: client_id.clone(),
            flow_id: flow_id.clone(),
            frame: frame.clone(),
        })
        .await
    }

    /// Tells every shard that `client_id` now carries `labels`; same policy as `notify`.
    pub async fn labels_changed(&self, client_id: &ClientId, labels: Arc<[String]>) {
        self.broadcast(|| ShardMessage::Labels {
            client_id: client_id.clone(),
            labels: labels.clone(),
        })
        .await
    }

    /// Tells every shard that `cancelled` flows were cancelled; same wait as `notify`, a
    /// drop counted in `packhunt_cancel_notices_dropped_total`.
    pub async fn cancel(&self, cancelled: Arc<CancelledFlows>) {
        let m = crate::metrics::metrics();
        for shard in &self.shards {
            if !send_or_wait(shard, ShardMessage::Cancel(cancelled.clone())).await {
                m.cancel_notices_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Tells shard `shard` (every shard if there is no such index) that its stream
    /// `session` of `client_id` was displaced; false when the message was dropped.
    pub async fn displaced(&self, client_id: &ClientId, shard: usize, session: u64) -> bool {
        let message = || ShardMessage::Displaced {
            client_id: client_id.clone(),
            session,
        };
        match self.shards.get(shard) {
            Some(owner) => send_or_wait(owner, message()).await,
            None => {
                let mut sent = false;
                for each in &self.shards {
                    sent |= send_or_wait(each, message()).await;
                }
                sent
            }
        }
    }

    /// Asks every shard to look for queued tasks of all its agents.
    pub async fn rescan(&self) {
        self.broadcast(|| ShardMessage::Rescan).await
    }

    /// Hands `table` to every shard; see the module doc for the policy. Records its
    /// version as the one this frontend serves.
    pub async fn event_table(&self, table: Arc<FleetTable>) {
        let m = crate::metrics::metrics();
        let version = table.version.min(i64::MAX as u64) as i64;
        m.event_table_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
        for shard in &self.shards {
            if !send_or_wait(shard, ShardMessage::EventTable(table.clone())).await {
                m.event_table_handoffs_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    async fn broadcast(&self, message: impl Fn() -> ShardMessage) {
        let m = crate::metrics::metrics();
        for shard in &self.shards {
            let sent = send_or_wait(shard, message()).await;
            let counter = if sent {
                &m.notifications_sent
            } else {
                &m.notifications_dropped
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Sends at once if there is room, else waits up to `NOTIFY_SEND_DEADLINE`; false when
/// the message was dropped.
async fn send_or_wait(shard: &ConnectedSender<ShardMessage>, message: ShardMessage) -> bool {
    match shard.try_send(message) {
        Ok(()) => true,
        Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
            with_deadline(NOTIFY_SEND_DEADLINE, shard.send(msg))
                .await
                .is_some_and(|r| r.is_ok())
        }
        Err(_) => false,
    }
}

pub type ShardEventReceiver = ConnectedReceiver<ShardEventBatch>;
pub type NotificationReceiver = ConnectedReceiver<ShardMessage>;
