//! Agents connected to this shard: client id -> the sender of its task stream.
//!
//! One client id should have one live task stream. When a second one opens (a quick
//! reconnect whose old TCP connection is not yet seen dead, or a cloned VM sharing a
//! writeback), the newer stream wins and the older one is ended; each such takeover is
//! counted in `packhunt_session_conflicts_total` so clones show up as a rising count.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;

use crate::ids::{ClientId, FlowId};
use crate::limits::SESSION_TASK_QUEUE_COUNT;
use crate::metrics::metrics;
use crate::protocol::event_table::{event_table_frame, FleetTable, TableDigest};

/// One agent's live task stream as the shard sees it.
pub struct Live {
    pub session_id: u64,
    pub frames: mpsc::Sender<Bytes>,
    /// Flows already pushed on this stream, so a notification that races the queue
    /// scan at connect time does not push a task twice.
    pub delivered: Rc<RefCell<HashSet<FlowId>>>,
    /// `None` until the stream's connect read the agent's labels: a table change before
    /// then is left to that read, which takes the shard's latest table.
    pub event_table: Option<AgentTable>,
}

/// What the shard knows of one agent's client event table.
pub struct AgentTable {
    /// The agent's labels as read at connect (label changes are picked up on reconnect).
    pub labels: Rc<[String]>,
    /// The digest of the table the agent holds, as sent or as its header claimed.
    pub digest: Option<TableDigest>,
}

#[derive(Default)]
pub struct Registry {
    live: RefCell<HashMap<ClientId, Live>>,
}

/// What a newly registered stream gets: its frame receiver.
pub struct Registration {
    pub frames: mpsc::Receiver<Bytes>,
    pub delivered: Rc<RefCell<HashSet<FlowId>>>,
}

impl Registry {
    /// Registers a task stream; an older stream of the same client is ended.
    pub fn register(&self, client_id: &ClientId, session_id: u64) -> Registration {
        // futures' channel allocates per queued message, not for its capacity up front:
        // a glommio local channel of the same bound cost 32 KiB per idle agent.
        let (tx, rx) = mpsc::channel(SESSION_TASK_QUEUE_COUNT);
        let delivered = Rc::new(RefCell::new(HashSet::new()));
        let live = Live {
            session_id,
            frames: tx,
            delivered: delivered.clone(),
            event_table: None,
        };
        let old = self.live.borrow_mut().insert(client_id.clone(), live);
        match old {
            Some(old) => {
                metrics().session_conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client = %client_id, "second task stream for one client id; ending the older one");
                // Dropping the only sender ends the older stream's pump.
                drop(old);
            }
            None => {
                metrics().sessions_open.fetch_add(1, Ordering::Relaxed);
            }
        }
        Registration {
            frames: rx,
            delivered,
        }
    }

    /// Removes the stream if it is still the registered one for the client.
    pub fn unregister(&self, client_id: &ClientId, session_id: u64) -> bool {
        let mut live = self.live.borrow_mut();
        if live.get(client_id).map(|l| l.session_id) == Some(session_id) {
            live.remove(client_id);
            metrics().sessions_open.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Queues a frame on the client's stream if it is connected here and the flow was
    /// not pushed on this stream yet. Returns whether the frame was queued.
    pub fn push(&self, client_id: &ClientId, flow_id: &FlowId, frame: Bytes) -> bool {
        let mut live = self.live.borrow_mut();
        let Some(session) = live.get_mut(client_id) else {
            return false;
        };
        if !session.delivered.borrow_mut().insert(flow_id.clone()) {
            return false;
        }
        // When the stream's queue is full the agent is not reading; the task stays
        // queued on disk and is delivered on its next connect.
        session.frames.try_send(frame).is_ok()
    }

    /// The flow ended (its queue entry is gone): it need not be remembered as pushed, so
    /// a long-lived stream's set stays as small as the flows in progress.
    pub fn flow_ended(&self, client_id: &ClientId, flow_id: &FlowId) {
        if let Some(session) = self.live.borrow().get(client_id) {
            session.delivered.borrow_mut().remove(flow_id);
        }
    }

    /// Records the agent's labels and the table it holds, if `session_id` is still its
    /// stream.
    pub fn set_event_table(&self, client_id: &ClientId, session_id: u64, table: AgentTable) {
        if let Some(live) = self.live.borrow_mut().get_mut(client_id) {
            if live.session_id == session_id {
                live.event_table = Some(table);
            }
        }
    }

    /// Queues `table`'s merge for every agent whose labels are known and whose held table
    /// differs from it; returns how many frames were queued. Merged once per label set:
    /// a fleet has few, so a change costs a hash lookup per agent, not a merge and a
    /// SHA-256. A full stream queue drops the frame (the agent is not reading; it gets
    /// the table on its next connect, as its digest then differs).
    pub fn offer_event_table(&self, table: &Arc<FleetTable>) -> u64 {
        let mut merged: HashMap<Rc<[String]>, (TableDigest, Bytes)> = HashMap::new();
        let mut queued = 0;
        for live in self.live.borrow_mut().values_mut() {
            let Some(agent) = live.event_table.as_mut() else {
                continue;
            };
            let (digest, frame) = merged
                .entry(agent.labels.clone())
                .or_insert_with(|| {
                    let own = table.merged_for(&agent.labels);
                    (TableDigest::of(&own), event_table_frame(own))
                })
                .clone();
            if agent.digest == Some(digest) {
                continue;
            }
            if live.frames.try_send(frame).is_ok() {
                agent.digest = Some(digest);
                queued += 1;
            }
        }
        queued
    }

    /// Every client with a live stream here.
    pub fn client_ids(&self) -> Vec<ClientId> {
        self.live.borrow().keys().cloned().collect()
    }

    pub fn is_connected(&self, client_id: &ClientId) -> bool {
        self.live.borrow().contains_key(client_id)
    }

    pub fn len(&self) -> usize {
        self.live.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.borrow().is_empty()
    }

    /// Ends every stream (shutdown): their connections then drain and close.
    pub fn close_all(&self) {
        let ended = std::mem::take(&mut *self.live.borrow_mut());
        metrics()
            .sessions_open
            .fetch_sub(ended.len() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_pushed_once_per_stream_and_forgotten_when_it_ends() {
        let registry = Registry::default();
        let client = ClientId::parse("C.0123456789abcdef").unwrap();
        let flow = FlowId::random();
        let mut registration = registry.register(&client, 1);
        assert!(registry.push(&client, &flow, Bytes::from_static(b"task")));
        assert!(
            !registry.push(&client, &flow, Bytes::from_static(b"task")),
            "a second notification is not a second push"
        );
        assert_eq!(registration.delivered.borrow().len(), 1);
        registry.flow_ended(&client, &flow);
        assert!(
            registration.delivered.borrow().is_empty(),
            "the stream no longer remembers an ended flow"
        );
        assert!(registration.frames.try_recv().is_ok());
        registry.close_all();
    }
}
