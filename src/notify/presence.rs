//! Which agents are connected, and to which frontend, as the API reports it. Fed by this
//! frontend's agent shards (presence queues) and, on the master, by every minion over
//! the replication stream. Owned by the hub executor; nothing here is shared.
//!
//! One client id has at most one location: the latest report wins, and a disconnect
//! removes the entry only if it names the location that is current, so a late
//! disconnect of an older stream (same shard, another shard or another frontend) never
//! hides the newer one.
//!
//! A report that moves a connected client to another shard or frontend means the older
//! stream may still be open: a reconnect whose old connection is not yet seen dead, or a
//! clone (two machines with one key). Whoever sees both places reports the older one as
//! displaced (see `notify::clones`): a frontend for its own shards, the master for two
//! frontends. (Two streams on one shard are the shard registry's to settle.)
//!
//! What a minion reports about an agent (its facts, its flows' states) is believed only
//! for agents presence has connected to that minion: anything else is refused, counted
//! per minion (`packhunt_fleet_minion_messages_refused_total`) and logged.
//!
//! The master's client index hears through here what it needs beside presence (an
//! [`Observer`]): agents' facts from this frontend's shards and from minions, agents that
//! left (their last seen time), and minions' snapshots (after which facts that crossed a
//! lossy link are re-read from the datastore).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::config::FrontendRole;
use crate::datastore::{ClientInfoDoc, FlowState};
use crate::ids::{ClientId, FlowId};
use crate::metrics::MinionRefusal;
use crate::notify::clones::{Displaced, DisplacedSender};
use crate::notify::mesh::{ShardEvent, ShardEventReceiver};
use crate::replication::pb;

/// Index into `Presence::frontends`; 0 is this frontend.
type FrontendIdx = u16;
const THIS_FRONTEND: FrontendIdx = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    frontend: FrontendIdx,
    shard: u32,
    session: u64,
}

/// A frontend as `GET /api/v1/frontends` shows it.
#[derive(Debug, Clone)]
pub struct FrontendView {
    pub name: Rc<str>,
    pub role: FrontendRole,
    pub up: bool,
    pub connected_clients: usize,
    /// Flows whose agent finished (or failed) them while connected here, since this
    /// process started: which frontends carry the work.
    pub flows_finished: u64,
    pub flows_failed: u64,
    /// When the replication link to it last came up or went down (None: not since this
    /// process started): how long a minion has been up or down, for the dashboard.
    pub link_changed: Option<std::time::SystemTime>,
}

/// What else wants to hear about agents as presence does (the master's client index).
/// Called on the hub executor, with no borrow of presence held; must not block.
pub trait Observer {
    /// An agent's facts as its frontend recorded them in `info.json`. From this
    /// frontend's shards the labels are those read with them from `labels.json`; from
    /// another frontend there are none (labels are the master's).
    fn facts(&self, doc: ClientInfoDoc, from: FactsFrom);
    /// These agents are no longer connected anywhere this frontend knows of.
    fn left(&self, clients: &[ClientId]);
    /// A frontend resent these connected agents (a snapshot): facts it sent may have been
    /// lost on the link, so they are to be read again from the datastore.
    fn resync(&self, clients: Vec<ClientId>);
}

/// Told when a client's task stream is reported at another frontend than the one presence
/// had it at (or after none): the fleet notifier sends there what it sent to the old
/// place. Called on the hub executor, with no borrow of presence held; must not block.
pub trait MoveWatcher {
    fn moved(&self, client_id: &ClientId, frontend: &Rc<str>);
}

/// Where an agent's facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsFrom {
    ThisFrontend,
    OtherFrontend,
}

pub struct Presence {
    live: RefCell<HashMap<ClientId, Location>>,
    observer: RefCell<Option<Rc<dyn Observer>>>,
    frontends: RefCell<Vec<FrontendView>>,
    /// When tapped (the master, for hunts): agents that connected and flows that ended,
    /// in arrival order, until drained.
    tapped: std::cell::Cell<bool>,
    arrivals: RefCell<Vec<ClientId>>,
    flow_ends: RefCell<Vec<FlowEnd>>,
    /// Where displaced streams are reported (none until the hub subscribes).
    displaced: RefCell<Option<DisplacedSender>>,
    /// Told of clients that turned up at another frontend (the master's fleet notifier).
    move_watcher: RefCell<Option<Rc<dyn MoveWatcher>>>,
}

/// A flow that finished, failed or was cancelled, wherever its agent was.
#[derive(Debug, Clone)]
pub struct FlowEnd {
    pub flow_id: FlowId,
    /// Invariant: terminal (finished, error or cancelled).
    pub state: FlowState,
    pub total_rows: u64,
    /// The client its reporter named (a shard, or a minion for a client connected to
    /// it); None when the master read the end itself (its API's cancel, status.json). A
    /// hunt counts an end only if this is the flow's own client, so that a minion cannot
    /// end another client's flow by naming it beside one of its own agents.
    pub client_id: Option<ClientId>,
}

impl Presence {
    /// `this` is this frontend's name; `others` the frontends it expects to hear from
    /// (the master lists its configured minions, down until they link).
    pub fn new(this: &str, role: FrontendRole, others: &[(String, FrontendRole)]) -> Self {
        let own = FrontendView::new(Rc::from(this), role, true);
        let mut frontends = vec![own];
        frontends.extend(
            others
                .iter()
                .map(|(name, role)| FrontendView::new(Rc::from(name.as_str()), *role, false)),
        );
        Self {
            live: RefCell::new(HashMap::new()),
            observer: RefCell::new(None),
            frontends: RefCell::new(frontends),
            tapped: std::cell::Cell::new(false),
            arrivals: RefCell::new(Vec::new()),
            flow_ends: RefCell::new(Vec::new()),
            displaced: RefCell::new(None),
            move_watcher: RefCell::new(None),
        }
    }

    /// From now on tell `watcher` when a client turns up at another frontend.
    pub fn watch_moves(&self, watcher: Rc<dyn MoveWatcher>) {
        *self.move_watcher.borrow_mut() = Some(watcher);
    }

    /// From now on report displaced streams to `sender`.
    pub fn report_displaced(&self, sender: DisplacedSender) {
        *self.displaced.borrow_mut() = Some(sender);
    }

    /// This frontend's name.
    pub fn this_name(&self) -> Rc<str> {
        self.frontends.borrow()[THIS_FRONTEND as usize].name.clone()
    }

    /// Whether presence has `client_id` connected to frontend `from`. A minion's word
    /// about an agent counts only then; otherwise the message is counted as `why`, logged
    /// and refused.
    fn vouched_by(&self, from: &str, client_id: &ClientId, why: MinionRefusal) -> bool {
        let frontend = self.frontend_index(from);
        let at = self.live.borrow().get(client_id).map(|l| l.frontend);
        if at == Some(frontend) {
            return true;
        }
        crate::metrics::metrics().minion_refused(from, why);
        let connected_at = at.map(|i| self.frontends.borrow()[i as usize].name.clone());
        tracing::warn!(
            minion = from,
            client = %client_id,
            connected_at = connected_at.as_deref().unwrap_or("nowhere"),
            kind = why.as_str(),
            "refused from a minion: the client is not connected to it"
        );
        false
    }

    /// From now on tell `observer` about facts, departures and snapshots.
    pub fn observe(&self, observer: Rc<dyn Observer>) {
        *self.observer.borrow_mut() = Some(observer);
    }

    fn observer(&self) -> Option<Rc<dyn Observer>> {
        self.observer.borrow().clone()
    }

    /// From now on keep arrivals and flow ends for `drain_arrivals`/`drain_flow_ends`.
    pub fn tap(&self) {
        self.tapped.set(true);
    }

    pub fn drain_arrivals(&self) -> Vec<ClientId> {
        std::mem::take(&mut *self.arrivals.borrow_mut())
    }

    pub fn drain_flow_ends(&self) -> Vec<FlowEnd> {
        std::mem::take(&mut *self.flow_ends.borrow_mut())
    }

    fn flow_ended(
        &self,
        client_id: Option<&ClientId>,
        flow_id: &str,
        state: FlowState,
        total_rows: u64,
    ) {
        if !self.tapped.get() || !state.is_terminal() {
            return;
        }
        if let Ok(flow_id) = FlowId::parse(flow_id) {
            self.flow_ends.borrow_mut().push(FlowEnd {
                flow_id,
                state,
                total_rows,
                client_id: client_id.cloned(),
            });
        }
    }

    /// The master's API cancelled `flow_id` (status.json says so): its end reaches the
    /// hunts like any other, counted once per flow there whatever arrives later.
    pub fn flow_cancelled(&self, flow_id: &FlowId, total_rows: u64) {
        self.flow_ended(None, flow_id.as_str(), FlowState::Cancelled, total_rows);
    }

    /// An event from one of this frontend's shards.
    pub fn apply(&self, event: ShardEvent) {
        match event {
            ShardEvent::Connected {
                client_id,
                shard,
                session,
            } => self.connect(
                client_id,
                Location {
                    frontend: THIS_FRONTEND,
                    shard: shard as u32,
                    session,
                },
            ),
            ShardEvent::Disconnected {
                client_id,
                shard,
                session,
            } => self.disconnect(
                &client_id,
                Location {
                    frontend: THIS_FRONTEND,
                    shard: shard as u32,
                    session,
                },
            ),
            ShardEvent::FlowState {
                client_id,
                flow_id,
                state,
                total_rows,
            } => {
                self.count_flow(THIS_FRONTEND, state);
                self.flow_ended(Some(&client_id), flow_id.as_str(), state, total_rows);
            }
            ShardEvent::Facts(doc) => {
                if let Some(observer) = self.observer() {
                    observer.facts(*doc, FactsFrom::ThisFrontend);
                }
            }
        }
    }

    /// An agent's facts reported by frontend `from`. A malformed id is dropped and counted;
    /// facts longer than an agent may send are cut as the shard would have.
    pub fn apply_remote_facts(&self, from: &str, facts: pb::ClientFacts) {
        let Ok(client_id) = ClientId::parse(&facts.client_id) else {
            crate::replication::drop_malformed(from, format_args!("facts of a malformed id"));
            return;
        };
        if !self.vouched_by(from, &client_id, MinionRefusal::Facts) {
            return;
        }
        let Some(observer) = self.observer() else {
            return;
        };
        let cut = |s: String| -> String {
            s.chars()
                .take(crate::limits::MAX_CLIENT_FACT_CHARS)
                .collect()
        };
        observer.facts(
            ClientInfoDoc {
                client_id,
                hostname: cut(facts.hostname),
                os: cut(facts.os),
                labels: Vec::new(),
                first_seen_ms: facts.first_seen_ms,
                last_seen_ms: facts.last_seen_ms,
                version: cut(facts.version),
            },
            FactsFrom::OtherFrontend,
        );
    }

    /// A flow state change reported by frontend `from`. A state this build cannot read is
    /// dropped and counted: guessing one would miscount the flow or end a hunt's wait.
    pub fn apply_remote_flow(&self, from: &str, event: &pb::FlowState) {
        let state = match crate::replication::flow_state_from_wire(event.state) {
            Ok(state) => state,
            Err(e) => {
                let flow_id = &event.flow_id;
                crate::replication::drop_malformed(from, format_args!("flow {flow_id}: {e}"));
                return;
            }
        };
        let Ok(client_id) = ClientId::parse(&event.client_id) else {
            let flow_id = &event.flow_id;
            crate::replication::drop_malformed(from, format_args!("flow {flow_id}: bad client id"));
            return;
        };
        if !self.vouched_by(from, &client_id, MinionRefusal::FlowState) {
            return;
        }
        let frontend = self.frontend_index(from);
        self.count_flow(frontend, state);
        self.flow_ended(Some(&client_id), &event.flow_id, state, event.total_rows);
    }

    fn count_flow(&self, frontend: FrontendIdx, state: FlowState) {
        let mut frontends = self.frontends.borrow_mut();
        let view = &mut frontends[frontend as usize];
        match state {
            FlowState::Finished => view.flows_finished += 1,
            FlowState::Error => view.flows_failed += 1,
            FlowState::Scheduled | FlowState::InProgress | FlowState::Cancelled => {}
        }
    }

    /// A presence delta from frontend `from`. Malformed ids are ignored (and logged).
    pub fn apply_remote(&self, from: &str, event: &pb::Presence) {
        let Ok(client_id) = ClientId::parse(&event.client_id) else {
            tracing::warn!(
                frontend = from,
                "presence for a malformed client id ignored"
            );
            return;
        };
        let location = Location {
            frontend: self.frontend_index(from),
            shard: event.shard,
            session: event.session,
        };
        if event.connected {
            self.connect(client_id, location);
        } else {
            self.disconnect(&client_id, location);
        }
    }

    /// A chunk of frontend `from`'s snapshot; the first chunk forgets what it said before.
    pub fn apply_snapshot(&self, from: &str, snapshot: &pb::PresenceSnapshot) {
        let frontend = self.frontend_index(from);
        if snapshot.first {
            self.forget(frontend);
        }
        for entry in &snapshot.entries {
            self.apply_remote(from, entry);
        }
        if let Some(observer) = self.observer() {
            let clients = snapshot
                .entries
                .iter()
                .filter(|e| e.connected)
                .filter_map(|e| ClientId::parse(&e.client_id).ok())
                .collect::<Vec<_>>();
            if !clients.is_empty() {
                observer.resync(clients);
            }
        }
    }

    /// The link to `name` is up (it will send a snapshot) or down (what it reported is
    /// stale: its agents are reported again by whichever frontend they reach next).
    pub fn set_link(&self, name: &str, up: bool) {
        let frontend = self.frontend_index(name);
        if !up {
            self.forget(frontend);
        }
        let mut frontends = self.frontends.borrow_mut();
        let view = &mut frontends[frontend as usize];
        view.up = up;
        view.link_changed = Some(std::time::SystemTime::now());
    }

    fn connect(&self, client_id: ClientId, location: Location) {
        let mut frontends = self.frontends.borrow_mut();
        if self.tapped.get() {
            self.arrivals.borrow_mut().push(client_id.clone());
        }
        let old = self.live.borrow_mut().insert(client_id.clone(), location);
        if let Some(old) = old {
            frontends[old.frontend as usize].connected_clients -= 1;
        }
        frontends[location.frontend as usize].connected_clients += 1;
        let is_master = frontends[THIS_FRONTEND as usize].role == FrontendRole::Master;
        let moved = (old.map(|o| o.frontend) != Some(location.frontend))
            .then(|| self.move_watcher.borrow().clone())
            .flatten()
            .map(|watcher| {
                let at = frontends[location.frontend as usize].name.clone();
                (watcher, client_id.clone(), at)
            });
        if let Some(old) = old.filter(|old| displaces(*old, location, is_master)) {
            let notice = Displaced {
                client_id,
                frontend: frontends[old.frontend as usize].name.clone(),
                local: old.frontend == THIS_FRONTEND,
                shard: old.shard,
                session: old.session,
            };
            drop(frontends);
            self.report(notice);
        } else {
            drop(frontends);
        }
        if let Some((watcher, client_id, at)) = moved {
            watcher.moved(&client_id, &at);
        }
    }

    /// Queues a displaced stream for the hub's dispatcher; dropped and counted when full.
    fn report(&self, notice: Displaced) {
        if let Some(sender) = self.displaced.borrow_mut().as_mut() {
            if sender.try_send(notice).is_err() {
                crate::metrics::metrics()
                    .fleet_displaced_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn disconnect(&self, client_id: &ClientId, location: Location) {
        let mut live = self.live.borrow_mut();
        if live.get(client_id) == Some(&location) {
            live.remove(client_id);
            self.frontends.borrow_mut()[location.frontend as usize].connected_clients -= 1;
            drop(live);
            if let Some(observer) = self.observer() {
                observer.left(std::slice::from_ref(client_id));
            }
        }
    }

    fn forget(&self, frontend: FrontendIdx) {
        let mut gone = Vec::new();
        self.live.borrow_mut().retain(|id, l| {
            let keep = l.frontend != frontend;
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        self.frontends.borrow_mut()[frontend as usize].connected_clients = 0;
        if let (Some(observer), false) = (self.observer(), gone.is_empty()) {
            observer.left(&gone);
        }
    }

    /// The index of frontend `name`, added (as a minion) on first sight.
    fn frontend_index(&self, name: &str) -> FrontendIdx {
        let mut frontends = self.frontends.borrow_mut();
        if let Some(i) = frontends.iter().position(|f| &*f.name == name) {
            return i as FrontendIdx;
        }
        frontends.push(FrontendView::new(
            Rc::from(name),
            FrontendRole::Minion,
            true,
        ));
        (frontends.len() - 1) as FrontendIdx
    }

    pub fn is_connected(&self, client_id: &ClientId) -> bool {
        self.live.borrow().contains_key(client_id)
    }

    /// The frontend a connected client's task stream is on.
    pub fn frontend_of(&self, client_id: &ClientId) -> Option<Rc<str>> {
        self.frontend_of_str(client_id.as_str())
    }

    /// [`Self::frontend_of`] for an id spelled in a caller's buffer (the client index keeps
    /// ids as numbers and joins without allocating).
    pub fn frontend_of_str(&self, client_id: &str) -> Option<Rc<str>> {
        let location = *self.live.borrow().get(client_id)?;
        Some(
            self.frontends.borrow()[location.frontend as usize]
                .name
                .clone(),
        )
    }

    /// Every connected client, sorted by id.
    pub fn connected_ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.live.borrow().keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn connected_count(&self) -> usize {
        self.live.borrow().len()
    }

    pub fn frontends(&self) -> Vec<FrontendView> {
        self.frontends.borrow().clone()
    }

    /// This frontend's own agents, as snapshot entries for the replication link.
    pub fn local_entries(&self) -> Vec<pb::Presence> {
        self.live
            .borrow()
            .iter()
            .filter(|(_, l)| l.frontend == THIS_FRONTEND)
            .map(|(id, l)| pb::Presence {
                client_id: id.to_string(),
                connected: true,
                shard: l.shard,
                session: l.session,
            })
            .collect()
    }
}

/// Whether a client's new location leaves its `old` stream to be checked by this
/// frontend: one of its own shards other than the new one, or (on the master only, which
/// alone sees every frontend) a stream on another frontend than the new one. Two streams
/// on one shard are the registry's; two on one minion are that minion's.
fn displaces(old: Location, new: Location, is_master: bool) -> bool {
    if old.frontend == new.frontend {
        old.frontend == THIS_FRONTEND && old.shard != new.shard
    } else {
        is_master
    }
}

/// The replication form of a shard's event.
pub fn to_wire(event: &ShardEvent) -> pb::envelope::Kind {
    use pb::envelope::Kind;
    match event {
        ShardEvent::Connected {
            client_id,
            shard,
            session,
        } => Kind::Presence(pb::Presence {
            client_id: client_id.to_string(),
            connected: true,
            shard: *shard as u32,
            session: *session,
        }),
        ShardEvent::Disconnected {
            client_id,
            shard,
            session,
        } => Kind::Presence(pb::Presence {
            client_id: client_id.to_string(),
            connected: false,
            shard: *shard as u32,
            session: *session,
        }),
        ShardEvent::FlowState {
            client_id,
            flow_id,
            state,
            total_rows,
        } => Kind::FlowState(pb::FlowState {
            client_id: client_id.to_string(),
            flow_id: flow_id.to_string(),
            state: pb::FlowStateKind::from(*state).into(),
            total_rows: *total_rows,
        }),
        ShardEvent::Facts(doc) => Kind::ClientFacts(pb::ClientFacts {
            client_id: doc.client_id.to_string(),
            hostname: doc.hostname.clone(),
            os: doc.os.clone(),
            version: doc.version.clone(),
            first_seen_ms: doc.first_seen_ms,
            last_seen_ms: doc.last_seen_ms,
        }),
    }
}

/// Applies one shard's events for as long as the shard runs; on a minion each is also
/// queued for the master.
pub async fn follow(
    presence: Rc<Presence>,
    events: ShardEventReceiver,
    forward: Option<crate::replication::queue::Outbox>,
) {
    while let Some(batch) = events.recv().await {
        for event in batch {
            if let Some(outbox) = &forward {
                outbox.offer(to_wire(&event));
            }
            presence.apply(event);
        }
    }
}

impl FrontendView {
    fn new(name: Rc<str>, role: FrontendRole, up: bool) -> Self {
        Self {
            name,
            role,
            up,
            connected_clients: 0,
            flows_finished: 0,
            flows_failed: 0,
            link_changed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ClientId {
        ClientId::parse(&format!("C.{:016x}", n)).unwrap()
    }

    fn wire(n: u8, connected: bool, session: u64) -> pb::Presence {
        pb::Presence {
            client_id: id(n).to_string(),
            connected,
            shard: 0,
            session,
        }
    }

    #[test]
    fn late_disconnect_of_old_session_keeps_new_one() {
        let p = Presence::new("m:1", FrontendRole::Master, &[]);
        let c = id(1);
        p.apply(ShardEvent::Connected {
            client_id: c.clone(),
            shard: 0,
            session: 1,
        });
        p.apply(ShardEvent::Connected {
            client_id: c.clone(),
            shard: 1,
            session: 7,
        });
        p.apply(ShardEvent::Disconnected {
            client_id: c.clone(),
            shard: 0,
            session: 1,
        });
        assert!(p.is_connected(&c));
        p.apply(ShardEvent::Disconnected {
            client_id: c.clone(),
            shard: 1,
            session: 7,
        });
        assert!(!p.is_connected(&c));
        assert_eq!(p.frontends()[0].connected_clients, 0);
    }

    #[test]
    fn an_agent_that_moved_frontends_is_not_hidden_by_the_old_frontends_disconnect() {
        let p = Presence::new(
            "master:1",
            FrontendRole::Master,
            &[
                ("minion:2".into(), FrontendRole::Minion),
                ("minion:3".into(), FrontendRole::Minion),
            ],
        );
        p.apply_remote("minion:2", &wire(1, true, 5));
        p.apply_remote("minion:3", &wire(1, true, 5));
        p.apply_remote("minion:2", &wire(1, false, 5));
        assert_eq!(p.frontend_of(&id(1)).as_deref(), Some("minion:3"));
        let counts: Vec<usize> = p.frontends().iter().map(|f| f.connected_clients).collect();
        assert_eq!(counts, vec![0, 0, 1]);
    }

    #[test]
    fn link_down_forgets_that_frontends_agents_and_a_snapshot_replaces_them() {
        let p = Presence::new(
            "master:1",
            FrontendRole::Master,
            &[("minion:2".into(), FrontendRole::Minion)],
        );
        assert!(
            !p.frontends()[1].up,
            "configured minions are down until they link"
        );
        p.set_link("minion:2", true);
        p.apply(ShardEvent::Connected {
            client_id: id(9),
            shard: 0,
            session: 1,
        });
        p.apply_remote("minion:2", &wire(1, true, 1));
        p.apply_remote("minion:2", &wire(2, true, 1));
        p.set_link("minion:2", false);
        assert_eq!(
            p.connected_ids(),
            vec![id(9)],
            "the master's own agent stays"
        );
        assert!(!p.frontends()[1].up);

        p.set_link("minion:2", true);
        p.apply_remote("minion:2", &wire(3, true, 1)); // a delta before the snapshot
        let first = pb::PresenceSnapshot {
            entries: vec![wire(2, true, 1)],
            first: true,
            last: false,
        };
        let last = pb::PresenceSnapshot {
            entries: vec![wire(4, true, 1)],
            first: false,
            last: true,
        };
        p.apply_snapshot("minion:2", &first);
        p.apply_snapshot("minion:2", &last);
        assert_eq!(p.connected_ids(), vec![id(2), id(4), id(9)]);
        assert_eq!(p.frontends()[1].connected_clients, 2);
        assert_eq!(
            p.local_entries().len(),
            1,
            "only this frontend's own agents are snapshotted"
        );
    }

    #[test]
    fn an_unconfigured_frontend_is_listed_when_it_reports() {
        let p = Presence::new("master:1", FrontendRole::Master, &[]);
        p.apply_remote("minion:7", &wire(1, true, 1));
        let names: Vec<String> = p.frontends().iter().map(|f| f.name.to_string()).collect();
        assert_eq!(names, vec!["master:1", "minion:7"]);
    }

    /// Records what presence tells its observer.
    #[derive(Default)]
    struct Heard {
        facts: RefCell<Vec<(String, FactsFrom)>>,
        left: RefCell<Vec<ClientId>>,
        resynced: RefCell<Vec<ClientId>>,
    }

    impl Observer for Heard {
        fn facts(&self, doc: ClientInfoDoc, from: FactsFrom) {
            self.facts.borrow_mut().push((doc.hostname, from));
        }
        fn left(&self, clients: &[ClientId]) {
            self.left.borrow_mut().extend_from_slice(clients);
        }
        fn resync(&self, clients: Vec<ClientId>) {
            self.resynced.borrow_mut().extend(clients);
        }
    }

    // Goal: the client index hears facts from shards and minions (a minion's cut to the
    // agent's limit, a malformed one dropped), departures (one by one, and all of a
    // frontend whose link dropped) and the clients of a snapshot. Method: a recording
    // observer.
    #[test]
    fn the_observer_hears_facts_departures_and_snapshots() {
        let p = Presence::new("master:1", FrontendRole::Master, &[]);
        let heard = Rc::new(Heard::default());
        p.observe(heard.clone());
        let doc = ClientInfoDoc {
            client_id: id(1),
            hostname: "web".into(),
            os: "linux".into(),
            labels: vec![],
            first_seen_ms: 1,
            last_seen_ms: 2,
            version: "1".into(),
        };
        let sent = match to_wire(&ShardEvent::Facts(Box::new(doc.clone()))) {
            pb::envelope::Kind::ClientFacts(facts) => facts,
            other => panic!("facts go as ClientFacts, not {other:?}"),
        };
        assert_eq!((sent.hostname.as_str(), sent.last_seen_ms), ("web", 2));
        p.apply(ShardEvent::Facts(Box::new(doc)));
        p.apply_remote("minion:2", &wire(1, true, 1));
        let long = pb::ClientFacts {
            hostname: "h".repeat(10_000),
            ..sent.clone()
        };
        p.apply_remote_facts("minion:2", long);
        let malformed = pb::ClientFacts {
            client_id: "../etc".into(),
            ..sent
        };
        p.apply_remote_facts("minion:2", malformed);
        let facts = heard.facts.borrow();
        assert_eq!(facts.len(), 2, "the malformed one is dropped");
        assert_eq!(facts[0], ("web".to_string(), FactsFrom::ThisFrontend));
        assert_eq!(facts[1].0.len(), crate::limits::MAX_CLIENT_FACT_CHARS);
        assert_eq!(facts[1].1, FactsFrom::OtherFrontend);

        p.apply(ShardEvent::Connected {
            client_id: id(1),
            shard: 0,
            session: 1,
        });
        p.apply(ShardEvent::Disconnected {
            client_id: id(1),
            shard: 0,
            session: 1,
        });
        let snapshot = pb::PresenceSnapshot {
            entries: vec![wire(2, true, 1), wire(3, true, 1)],
            first: true,
            last: true,
        };
        p.apply_snapshot("minion:2", &snapshot);
        assert_eq!(*heard.resynced.borrow(), vec![id(2), id(3)]);
        p.set_link("minion:2", false);
        let mut left = heard.left.borrow().clone();
        left.sort();
        assert_eq!(left, vec![id(1), id(2), id(3)]);
    }

    // Goal: a flow state from the wire is counted for its frontend, and one this build
    // cannot read is refused and counted instead of being guessed or panicking.
    #[test]
    fn remote_flow_states_count_and_unknown_ones_are_refused() {
        let p = Presence::new("master:1", FrontendRole::Master, &[]);
        p.tap();
        let flow_id = FlowId::parse("F.0123456789ABCDEF").expect("a valid flow id");
        let event = |state: i32| pb::FlowState {
            client_id: id(1).to_string(),
            flow_id: flow_id.to_string(),
            state,
            total_rows: 3,
        };
        p.apply_remote("minion:2", &wire(1, true, 1));
        p.apply_remote_flow("minion:2", &event(pb::FlowStateKind::Finished.into()));
        let malformed = &crate::metrics::metrics().replication_malformed;
        let before = malformed.load(std::sync::atomic::Ordering::Relaxed);
        p.apply_remote_flow("minion:2", &event(pb::FlowStateKind::Unspecified.into()));
        p.apply_remote_flow("minion:2", &event(99));
        let after = malformed.load(std::sync::atomic::Ordering::Relaxed);
        assert!(after >= before + 2, "both refusals counted");
        let minion = &p.frontends()[1];
        assert_eq!(
            (minion.role, minion.flows_finished),
            (FrontendRole::Minion, 1)
        );
        assert_eq!(minion.flows_failed, 0);
        let ends = p.drain_flow_ends();
        assert_eq!(ends.len(), 1, "only the readable state ended a flow");
        assert_eq!(
            (ends[0].state, ends[0].total_rows),
            (FlowState::Finished, 3)
        );
        p.apply_remote_flow("minion:2", &event(pb::FlowStateKind::Cancelled.into()));
        let ends = p.drain_flow_ends();
        assert_eq!(ends.len(), 1, "a cancel ends the flow too");
        assert_eq!(ends[0].state, FlowState::Cancelled);
    }

    // Goal: a minion's facts and flow states count only for clients connected to that
    // minion; for one connected to the master or another minion, or to nobody, they
    // change nothing and are counted against the sender. Method: a recording observer and
    // the per-minion counter.
    #[test]
    fn a_minion_cannot_speak_for_clients_it_does_not_hold() {
        use crate::metrics::{metrics, MinionRefusal};
        let (liar, honest) = ("liar:9", "honest:8");
        let p = Presence::new("master:1", FrontendRole::Master, &[]);
        p.tap();
        let heard = Rc::new(Heard::default());
        p.observe(heard.clone());
        p.apply(ShardEvent::Connected {
            client_id: id(1),
            shard: 0,
            session: 1,
        });
        p.apply_remote(honest, &wire(2, true, 1));
        p.apply_remote(liar, &wire(3, true, 1));
        let facts = |n: u8| pb::ClientFacts {
            client_id: id(n).to_string(),
            hostname: "forged".into(),
            ..Default::default()
        };
        let flow = |n: u8| pb::FlowState {
            client_id: id(n).to_string(),
            flow_id: "F.0123456789ABCDEF".into(),
            state: pb::FlowStateKind::Finished.into(),
            total_rows: 1,
        };
        let count = |why| metrics().minion_refused_count(liar, why);
        let (facts_before, flows_before) =
            (count(MinionRefusal::Facts), count(MinionRefusal::FlowState));
        for victim in [1, 2, 4] {
            p.apply_remote_facts(liar, facts(victim));
            p.apply_remote_flow(liar, &flow(victim));
        }
        assert!(
            heard.facts.borrow().is_empty(),
            "no forged facts reached the index"
        );
        assert!(
            p.drain_flow_ends().is_empty(),
            "no forged flow end reached the hunts"
        );
        assert_eq!(count(MinionRefusal::Facts), facts_before + 3);
        assert_eq!(count(MinionRefusal::FlowState), flows_before + 3);
        p.apply_remote_facts(liar, facts(3));
        p.apply_remote_flow(liar, &flow(3));
        assert_eq!(
            heard.facts.borrow().len(),
            1,
            "its own client's facts count"
        );
        assert_eq!(
            p.drain_flow_ends().len(),
            1,
            "its own client's flow ends count"
        );
        assert_eq!(p.frontend_of(&id(1)).as_deref(), Some("master:1"));
    }

    /// Records the moves presence reports.
    #[derive(Default)]
    struct Moves(RefCell<Vec<(ClientId, String)>>);

    impl MoveWatcher for Moves {
        fn moved(&self, client_id: &ClientId, frontend: &Rc<str>) {
            self.0
                .borrow_mut()
                .push((client_id.clone(), frontend.to_string()));
        }
    }

    // Goal: the fleet notifier hears of a client reported at another frontend than before
    // (or after none), never of a new stream on the frontend it was at. Method: a
    // recording watcher; shard events for this frontend, wire deltas and a snapshot for a
    // minion.
    #[test]
    fn moves_to_another_frontend_are_reported() {
        let p = Presence::new("master:1", FrontendRole::Master, &[]);
        let heard = Rc::new(Moves::default());
        p.watch_moves(heard.clone());
        p.apply_remote("minion:2", &wire(1, true, 1));
        p.apply_remote("minion:2", &wire(1, true, 2));
        p.apply(ShardEvent::Connected {
            client_id: id(1),
            shard: 1,
            session: 3,
        });
        p.apply(ShardEvent::Connected {
            client_id: id(1),
            shard: 0,
            session: 4,
        });
        p.apply_remote("minion:2", &wire(1, false, 2));
        p.set_link("minion:2", true);
        let snapshot = pb::PresenceSnapshot {
            entries: vec![wire(2, true, 1)],
            first: true,
            last: true,
        };
        p.apply_snapshot("minion:2", &snapshot);
        let heard: Vec<(ClientId, String)> = heard.0.borrow().clone();
        assert_eq!(
            heard,
            vec![
                (id(1), "minion:2".to_string()),
                (id(1), "master:1".to_string()),
                (id(2), "minion:2".to_string()),
            ]
        );
    }

    // Goal: a client seen at a second place is reported for the older place's owner to
    // check: another shard of this frontend (local), another frontend (master only);
    // never a second stream on the same shard, nor anything a minion's presence sees.
    #[test]
    fn a_client_at_a_second_place_reports_the_older_one() {
        let p = Presence::new("master:1", FrontendRole::Master, &[]);
        let (tx, mut rx) = crate::notify::clones::channel();
        p.report_displaced(tx);
        let at = |shard: usize, session: u64| ShardEvent::Connected {
            client_id: id(1),
            shard,
            session,
        };
        p.apply(at(0, 1));
        p.apply(at(0, 2));
        assert!(
            rx.try_recv().is_err(),
            "same shard: the registry's to settle"
        );
        p.apply(at(1, 3));
        let local = rx.try_recv().expect("another shard");
        assert_eq!((local.local, local.shard, local.session), (true, 0, 2));
        p.apply_remote("minion:2", &wire(1, true, 9));
        let local = rx.try_recv().expect("moved to a minion");
        assert_eq!((local.local, local.shard, local.session), (true, 1, 3));
        p.apply(at(0, 4));
        let remote = rx.try_recv().expect("back from the minion");
        assert_eq!(
            (remote.local, &*remote.frontend, remote.session),
            (false, "minion:2", 9)
        );

        let minion = Presence::new("minion:2", FrontendRole::Minion, &[]);
        let (tx, mut rx) = crate::notify::clones::channel();
        minion.report_displaced(tx);
        minion.apply(at(0, 1));
        minion.apply(at(1, 2));
        let local = rx.try_recv().expect("a minion settles its own shards");
        assert_eq!((local.local, local.shard), (true, 0));
    }
}
