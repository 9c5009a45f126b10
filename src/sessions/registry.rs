//! Agents connected to this shard: client id -> the sender of its task stream.
//!
//! One client id should have one live task stream. When a second one opens (a quick
//! reconnect whose old TCP connection is not yet seen dead, or a cloned VM sharing a
//! writeback), the newer stream wins and the older one is settled by `sessions::clones`:
//! its connection is checked (a PING under a deadline) and the older agent told to
//! re-key if it is alive, before the older stream ends. Each takeover is counted in
//! `packhunt_session_conflicts_total`. The registry also holds the shard's agent
//! connections (`liveness`), so that a stream can be tied to the connection it came on.

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
use crate::sessions::liveness::{Liveness, Pinger};

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
    /// Labels an operator set while the connect's read was in flight (it may have read
    /// the older ones); the connect uses these instead.
    pub relabelled: Option<Rc<[String]>>,
    /// The connection the stream came on (the client's newest when it registered), for
    /// the liveness check when a newer stream displaces this one.
    pub connection: Option<Rc<Pinger>>,
}

/// What the shard knows of one agent's client event table.
pub struct AgentTable {
    /// The agent's labels as read at connect (label changes are picked up on reconnect).
    pub labels: Rc<[String]>,
    /// The digest of the table the agent holds, as sent or as its header claimed.
    pub digest: Option<TableDigest>,
}

/// What offering an agent its merged table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relabelled {
    Queued,
    /// Its merged table is the one it holds.
    AlreadyHeld,
    /// Its stream's queue is full (not reading); it gets the table on its next connect.
    QueueFull,
}

impl AgentTable {
    /// Queues the agent's merged table (its `digest`; `frame` builds it) on `frames`
    /// unless the agent holds that table already, and records what the agent then holds.
    fn offer(
        &mut self,
        frames: &mut mpsc::Sender<Bytes>,
        digest: TableDigest,
        frame: impl FnOnce() -> Bytes,
    ) -> Relabelled {
        if self.digest == Some(digest) {
            return Relabelled::AlreadyHeld;
        }
        if frames.try_send(frame()).is_err() {
            return Relabelled::QueueFull;
        }
        self.digest = Some(digest);
        Relabelled::Queued
    }
}

#[derive(Default)]
pub struct Registry {
    live: RefCell<HashMap<ClientId, Live>>,
    /// Set by `close_all` (the shard drains): no stream registers from then on.
    closed: std::cell::Cell<bool>,
    /// The shard's agent connections, attached by the transport while it drives them.
    pub liveness: Liveness,
    /// Where clones found here are audited (none in unit tests).
    audit: Option<CloneAudit>,
}

/// The audit trail and how this shard names itself in it.
#[derive(Clone)]
pub struct CloneAudit {
    pub log: crate::audit::AuditLog,
    /// `HOST:PORT shard N`, the entry's detail.
    pub place: Rc<str>,
}

/// What a newly registered stream gets: its frame receiver.
pub struct Registration {
    pub frames: mpsc::Receiver<Bytes>,
    pub delivered: Rc<RefCell<HashSet<FlowId>>>,
}

impl Registry {
    /// A registry whose clones are audited in `audit`.
    pub fn with_audit(audit: CloneAudit) -> Self {
        Self {
            audit: Some(audit),
            ..Self::default()
        }
    }

    /// Where clones found on this shard are audited.
    pub fn audit(&self) -> Option<&CloneAudit> {
        self.audit.as_ref()
    }

    /// Registers a task stream; an older stream of the same client is ended. None once
    /// the registry is closed (the shard drains): the agent is to go elsewhere.
    pub fn register(&self, client_id: &ClientId, session_id: u64) -> Option<Registration> {
        if self.closed.get() {
            return None;
        }
        // futures' channel allocates per queued message, not for its capacity up front:
        // a glommio local channel of the same bound cost 32 KiB per idle agent.
        let (tx, rx) = mpsc::channel(SESSION_TASK_QUEUE_COUNT);
        let delivered = Rc::new(RefCell::new(HashSet::new()));
        let connection = self.liveness.newest(client_id);
        let live = Live {
            session_id,
            frames: tx,
            delivered: delivered.clone(),
            event_table: None,
            relabelled: None,
            connection: connection.clone(),
        };
        let old = self.live.borrow_mut().insert(client_id.clone(), live);
        match old {
            Some(old) => {
                metrics().session_conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(client = %client_id, "second task stream for one client id; settling the older one");
                // The older stream ends once settled (its only sender dropped).
                let audit = self.audit.clone();
                crate::sessions::clones::replaced(
                    client_id.clone(),
                    old,
                    connection.as_ref(),
                    audit,
                );
            }
            None => {
                metrics().sessions_open.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Registration {
            frames: rx,
            delivered,
        })
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

    /// Takes the client's stream out if `session_id` is still the registered one (it was
    /// displaced by a newer stream elsewhere): its stream ends when the returned entry is
    /// dropped, and its own later `unregister` finds nothing.
    pub fn take(&self, client_id: &ClientId, session_id: u64) -> Option<Live> {
        let mut live = self.live.borrow_mut();
        if live.get(client_id).map(|l| l.session_id) != Some(session_id) {
            return None;
        }
        metrics().sessions_open.fetch_sub(1, Ordering::Relaxed);
        live.remove(client_id)
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

    /// Queues a control frame (a Cancel) for `flow_id` on the client's stream if it is
    /// connected here: never deduplicated, since the flow's task was pushed on this stream
    /// or on an earlier one (the agent may hold it across reconnects). The flow is then
    /// remembered as pushed, so a task notification or queue scan racing the cancel does
    /// not push its task after the Cancel. `None` when the client has no stream here,
    /// else whether the frame was queued (not: the agent is not reading its stream).
    pub fn push_control(
        &self,
        client_id: &ClientId,
        flow_id: &FlowId,
        frame: Bytes,
    ) -> Option<bool> {
        let mut live = self.live.borrow_mut();
        let session = live.get_mut(client_id)?;
        session.delivered.borrow_mut().insert(flow_id.clone());
        Some(session.frames.try_send(frame).is_ok())
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

    /// The labels an operator set since `session_id` registered, if any.
    pub fn relabelled(&self, client_id: &ClientId, session_id: u64) -> Option<Rc<[String]>> {
        let live = self.live.borrow();
        let live = live.get(client_id)?;
        (live.session_id == session_id)
            .then(|| live.relabelled.clone())
            .flatten()
    }

    /// The client now carries `labels`: queues its merge of `table` (if the shard holds
    /// one) when it differs from what the agent holds; `None` when there was nothing to
    /// compare (not connected here, connect still reading, no table yet).
    pub fn relabel(
        &self,
        client_id: &ClientId,
        labels: Rc<[String]>,
        table: Option<&FleetTable>,
    ) -> Option<Relabelled> {
        let mut live = self.live.borrow_mut();
        let live = live.get_mut(client_id)?;
        let Some(agent) = live.event_table.as_mut() else {
            live.relabelled = Some(labels);
            return None;
        };
        agent.labels = labels;
        let own = table?.merged_for(&agent.labels);
        let digest = TableDigest::of(&own);
        Some(agent.offer(&mut live.frames, digest, || event_table_frame(own)))
    }

    /// Queues `table`'s merge for every agent whose labels are known and whose held table
    /// differs from it; returns how many frames were queued and how many agents already
    /// held their merge. Merged once per label set:
    /// a fleet has few, so a change costs a hash lookup per agent, not a merge and a
    /// SHA-256. A full stream queue drops the frame (the agent is not reading; it gets
    /// the table on its next connect, as its digest then differs).
    pub fn offer_event_table(&self, table: &Arc<FleetTable>) -> (u64, u64) {
        let mut merged: HashMap<Rc<[String]>, (TableDigest, Bytes)> = HashMap::new();
        let (mut queued, mut held) = (0, 0);
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
            match agent.offer(&mut live.frames, digest, || frame) {
                Relabelled::Queued => queued += 1,
                Relabelled::AlreadyHeld => held += 1,
                Relabelled::QueueFull => {}
            }
        }
        (queued, held)
    }

    /// The client's labels as this shard knows them: set by an operator since its
    /// stream connected, else as read at connect; `None` before that read or when the
    /// client has no stream here.
    pub fn labels(&self, client_id: &ClientId) -> Option<Rc<[String]>> {
        let live = self.live.borrow();
        let live = live.get(client_id)?;
        match &live.event_table {
            Some(agent) => Some(agent.labels.clone()),
            None => live.relabelled.clone(),
        }
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

    /// Ends every stream and takes no more (the shard drains): their connections then
    /// finish their uploads and close. Returns the streams ended, by client and session:
    /// the agents told to move. Out of the registry at once, so that a newer stream of one
    /// of them elsewhere is never taken for a clone of the draining one.
    pub fn close_all(&self) -> Vec<(ClientId, u64)> {
        self.closed.set(true);
        let ended = std::mem::take(&mut *self.live.borrow_mut());
        metrics()
            .sessions_open
            .fetch_sub(ended.len() as i64, Ordering::Relaxed);
        ended
            .into_iter()
            .map(|(client_id, live)| (client_id, live.session_id))
            .collect()
    }

    /// Whether `close_all` ran: the shard drains.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
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
        let mut registration = registry.register(&client, 1).unwrap();
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
        assert!(
            registry.register(&client, 2).is_none(),
            "a closed registry takes no stream"
        );
    }

    // Goal: a Cancel reaches the stream even for a flow pushed before, and a task push
    // racing it afterwards is not queued behind it.
    #[test]
    fn a_control_frame_is_never_deduplicated_and_blocks_a_later_task_push() {
        let registry = Registry::default();
        let client = ClientId::parse("C.0123456789abcdef").unwrap();
        let (pushed, fresh) = (FlowId::random(), FlowId::random());
        assert_eq!(
            registry.push_control(&client, &pushed, Bytes::from_static(b"x")),
            None
        );
        let mut registration = registry.register(&client, 1).unwrap();
        assert!(registry.push(&client, &pushed, Bytes::from_static(b"task")));
        for flow in [&pushed, &fresh, &fresh] {
            let queued = registry.push_control(&client, flow, Bytes::from_static(b"cancel"));
            assert_eq!(queued, Some(true));
        }
        assert!(
            !registry.push(&client, &fresh, Bytes::from_static(b"task")),
            "no task after its Cancel"
        );
        let mut frames = Vec::new();
        while let Ok(frame) = registration.frames.try_recv() {
            frames.push(frame);
        }
        assert_eq!(frames, ["task", "cancel", "cancel", "cancel"]);
        registry.close_all();
    }

    #[test]
    fn a_table_change_reaches_agents_whose_merge_changed_once() {
        // Goal: a change is queued once per agent it changes, never before the connect
        // read the agent's labels, and a label change made during that read is kept.
        use crate::protocol::pb;
        let registry = Registry::default();
        let client = ClientId::parse("C.0123456789abcdef").unwrap();
        let mut registration = registry.register(&client, 1).unwrap();
        let stats = |period: &str| pb::ArtifactRequest {
            name: "Generic.Client.Stats".into(),
            parameters: [("period_s".to_string(), period.to_string())].into(),
        };
        let table = Arc::new(FleetTable {
            version: 1,
            all: vec![stats("10")],
            by_label: [("web".to_string(), vec![stats("30")])].into(),
        });
        assert_eq!(
            registry.offer_event_table(&table),
            (0, 0),
            "labels not read yet"
        );
        let web: Rc<[String]> = vec!["web".to_string()].into();
        assert_eq!(registry.relabel(&client, web.clone(), Some(&table)), None);
        assert_eq!(registry.relabelled(&client, 1), Some(web.clone()));
        assert_eq!(
            registry.labels(&client),
            Some(web),
            "labels set while the connect read is in flight are the ones known"
        );
        let labels: Rc<[String]> = Vec::new().into();
        let own = table.merged_for(&labels);
        let state = AgentTable {
            labels: labels.clone(),
            digest: Some(TableDigest::of(&own)),
        };
        registry.set_event_table(&client, 1, state);
        assert_eq!(registry.labels(&client), Some(labels.clone()));
        assert_eq!(registry.offer_event_table(&table), (0, 1), "held already");
        let mut newer = (*table).clone();
        newer.version = 2;
        newer.by_label.clear();
        assert_eq!(registry.offer_event_table(&Arc::new(newer.clone())), (0, 1));
        newer.all = vec![stats("20")];
        assert_eq!(registry.offer_event_table(&Arc::new(newer.clone())), (1, 0));
        assert!(registration.frames.try_recv().is_ok());
        assert_eq!(
            registry.relabel(&client, labels, Some(&newer)),
            Some(Relabelled::AlreadyHeld)
        );
        registry.close_all();
    }
}
