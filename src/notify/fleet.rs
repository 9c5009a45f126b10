//! Reaching an agent wherever it is connected: this frontend's shards through the mesh,
//! the other frontends through the replication stream. The API and hunts reach agents
//! only through this.
//!
//! Targeting (the master): a notice about one client (new work, cancelled flows, new
//! labels) goes to the minion presence says holds it, or to no minion when the client is
//! on the master (whose own shards hear every notice), instead of to every minion: one
//! message per notice, not one per minion. The task is on the shared datastore first, and
//! a stream opening reports itself (presence) before it reads the client's queued tasks,
//! so the only way a targeted notice can miss its agent is a move whose report has not
//! reached the master yet: the notice goes to the old frontend while the new one already
//! read the queue. The safe fallbacks:
//! - presence knows no frontend for the client (it left, or is between frontends; a
//!   minion's link is down or its snapshot has not arrived): every minion, as before;
//! - a notice goes to one place only if it is remembered (`SentLog`, for
//!   `FLEET_RESEND_WINDOW`); when presence then reports the client at another frontend,
//!   the remembered notices are sent there again: a task only if it is still queued on
//!   the datastore (read on the blocking pool), a cancel and the latest labels as they
//!   were. A notice that cannot be remembered (the log at its bound) goes to every minion;
//! - the named minion is not linked when the message goes out: every minion
//!   (replication/master.rs); a minion that relinks rescans all its agents' queues anyway.
//!
//! Duplicates are harmless: a shard pushes a flow once per stream.
//! Counted in `packhunt_fleet_notices_routed_total{to}`,
//! `packhunt_fleet_notices_broadcast_total{reason}`, `packhunt_fleet_notices_resent_total`
//! and, per message on the links, `packhunt_replication_messages_sent_total{kind,to}`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::datastore::{Datastore, DatastoreError};
use crate::ids::{ClientId, FlowId};
use crate::limits::{
    FLEET_RESEND_SWEEP_INTERVAL, FLEET_RESEND_WINDOW, MAX_FLEET_RESEND_CLIENTS_COUNT,
    MAX_FLEET_RESEND_NOTICES_PER_CLIENT_COUNT,
};
use crate::metrics::{metrics, BroadcastReason, NoticeRoute};
use crate::notify::mesh::{CancelledFlows, Notifier};
use crate::notify::presence::{MoveWatcher, Presence};
use crate::protocol::event_table::FleetTable;
use crate::replication::pb::{self, envelope::Kind};
use crate::replication::queue::{Destination, Outbox};

/// Reaches an agent wherever it is connected.
pub struct FleetNotifier {
    local: Rc<Notifier>,
    /// The way to the minions (none without minions, and on a minion).
    minions: Option<Minions>,
}

/// The master's way to its minions: the replication queue, with presence to pick the one
/// minion a notice is for and the log of what went where.
struct Minions {
    outbox: Outbox,
    presence: Rc<Presence>,
    resends: Rc<Resends>,
}

/// What went toward one frontend, to be sent again where its client turns up; presence
/// tells it of arrivals.
struct Resends {
    log: RefCell<SentLog>,
    outbox: Outbox,
    /// Where a task is checked to be still queued before it is sent again.
    datastore: Datastore,
}

impl FleetNotifier {
    /// `replication` is the queue to the minions, when this frontend is a master with
    /// minions; `presence` says where each client is.
    pub fn new(
        local: Rc<Notifier>,
        replication: Option<Outbox>,
        presence: Rc<Presence>,
        datastore: Datastore,
    ) -> Self {
        let minions = replication.map(|outbox| {
            let log = SentLog::new(presence.this_name(), FLEET_RESEND_WINDOW);
            let resends = Rc::new(Resends {
                log: RefCell::new(log),
                outbox: outbox.clone(),
                datastore,
            });
            presence.watch_moves(resends.clone());
            Minions {
                outbox,
                presence,
                resends,
            }
        });
        Self { local, minions }
    }

    /// Tells the frontend holding `client_id` that it has new work: this one's shards
    /// always, the minion presence names over the replication stream (every minion when
    /// it names none), which pushes `frame` if it holds the agent.
    pub async fn notify(&self, client_id: &ClientId, flow_id: &FlowId, frame: Bytes) {
        if let Some(minions) = &self.minions {
            let notification = pb::Notification {
                client_id: client_id.to_string(),
                flow_id: flow_id.to_string(),
                frame: frame.clone(),
            };
            let notice = Notice::Task(flow_id.clone());
            minions.send(client_id, notice, Kind::Notification(notification));
        }
        self.local.notify(client_id, flow_id, Some(frame)).await;
    }

    /// `cancelled` flows were cancelled on disk: every frontend holding one's agent pushes
    /// it a Cancel frame (this one's shards directly, the minions over the replication
    /// stream, one envelope per destination). A full replication queue drops the envelope
    /// (counted in `packhunt_cancel_notices_dropped_total`): the flows stay closed on
    /// disk, so their agents are refused at their next upload.
    pub async fn cancel(&self, cancelled: Arc<CancelledFlows>) {
        if cancelled.flows.is_empty() {
            return;
        }
        if let Some(minions) = &self.minions {
            minions.cancel(&cancelled);
        }
        self.local.cancel(cancelled).await;
    }

    /// An operator changed `client_id`'s labels (on disk already): whichever frontend
    /// holds the agent sends it its new event table if its queries changed.
    pub async fn labels_changed(&self, client_id: &ClientId, labels: Vec<String>) {
        if let Some(minions) = &self.minions {
            let changed = pb::LabelsChanged {
                client_id: client_id.to_string(),
                labels: labels.clone(),
            };
            let notice = Notice::Labels(labels.clone().into());
            minions.send(client_id, notice, Kind::LabelsChanged(changed));
        }
        self.local.labels_changed(client_id, labels.into()).await;
    }

    /// The client event table changed (or is loaded at start): this frontend's shards get
    /// it, the minions are told to reload it from the datastore. Returns at once: the
    /// hand-off to the shards runs as its own task (it may wait on a full queue), so the
    /// API request that changed the table is never held up by it.
    pub fn event_table_changed(&self, table: Arc<FleetTable>) {
        if let Some(minions) = &self.minions {
            let changed = pb::EventTableChanged {
                version: table.version,
            };
            minions
                .outbox
                .offer(pb::envelope::Kind::EventTableChanged(changed));
        }
        let local = self.local.clone();
        glommio::spawn_local(async move { local.event_table(table).await }).detach();
    }
}

impl Minions {
    /// Where `notice` about `client_id` goes, remembered for a resend when it goes to one
    /// place; counted.
    fn route(&self, client_id: &ClientId, notice: Notice) -> Route {
        let holder = self.presence.frontend_of(client_id);
        let route = self
            .resends
            .log
            .borrow_mut()
            .route(client_id, holder, notice, Instant::now());
        let m = metrics();
        match &route {
            Route::ThisFrontend => m.fleet_notice_routed(NoticeRoute::ThisFrontend),
            Route::Minion(_) => m.fleet_notice_routed(NoticeRoute::OneMinion),
            Route::AllMinions(reason) => {
                m.fleet_notice_routed(NoticeRoute::AllMinions);
                m.fleet_notice_broadcast(*reason);
            }
        }
        route
    }

    /// Queues `kind`, a notice about `client_id`, for where `route` says; false if the
    /// queue was full (counted there).
    fn send(&self, client_id: &ClientId, notice: Notice, kind: Kind) -> bool {
        match self.route(client_id, notice) {
            Route::ThisFrontend => true,
            Route::Minion(name) => self.outbox.offer_to(kind, minion(&name)),
            Route::AllMinions(_) => self.outbox.offer(kind),
        }
    }

    /// One CancelFlows envelope per destination: the minions holding the flows' clients,
    /// and every minion for those presence does not place.
    fn cancel(&self, cancelled: &CancelledFlows) {
        let reason: Arc<str> = Arc::from(cancelled.reason.as_str());
        // None: every minion. A handful of destinations at most (the minions).
        let mut batches: Vec<(Option<Rc<str>>, Vec<pb::CancelledFlow>)> = Vec::new();
        for (client, flow) in &cancelled.flows {
            // A cancelled task must not be sent again after a move.
            self.resends.log.borrow_mut().forget_task(client, flow);
            let notice = Notice::Cancel {
                flow_id: flow.clone(),
                reason: reason.clone(),
            };
            let to = match self.route(client, notice) {
                Route::ThisFrontend => continue,
                Route::Minion(name) => Some(name),
                Route::AllMinions(_) => None,
            };
            let wire = pb::CancelledFlow {
                client_id: client.to_string(),
                flow_id: flow.to_string(),
            };
            match batches.iter_mut().find(|(dest, _)| *dest == to) {
                Some((_, flows)) => flows.push(wire),
                None => batches.push((to, vec![wire])),
            }
        }
        for (to, flows) in batches {
            let envelope = pb::CancelFlows {
                flows,
                reason: cancelled.reason.clone(),
            };
            let to = to.map_or(Destination::AllMinions, |name| minion(&name));
            if !self.outbox.offer_to(Kind::CancelFlows(envelope), to) {
                metrics()
                    .cancel_notices_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

fn minion(name: &Rc<str>) -> Destination {
    Destination::Minion(Arc::from(&**name))
}

impl MoveWatcher for Resends {
    fn moved(&self, client_id: &ClientId, frontend: &Rc<str>) {
        let again = self
            .log
            .borrow_mut()
            .arrived(client_id, frontend, Instant::now());
        if again.is_empty() {
            return;
        }
        let resend = resend(
            self.outbox.clone(),
            self.datastore.clone(),
            client_id.clone(),
            minion(frontend),
            again,
        );
        glommio::spawn_local(resend).detach();
    }
}

/// Sends `again` (notices that went elsewhere) to `to`, where `client_id` turned up: its
/// tasks still queued on the datastore with their frames, its cancels and latest labels.
async fn resend(
    outbox: Outbox,
    datastore: Datastore,
    client_id: ClientId,
    to: Destination,
    again: Vec<Notice>,
) {
    let mut tasks = Vec::new();
    let mut sent = 0u64;
    for notice in again {
        let kind = match notice {
            Notice::Task(flow_id) => {
                tasks.push(flow_id);
                continue;
            }
            Notice::Cancel { flow_id, reason } => Kind::CancelFlows(pb::CancelFlows {
                flows: vec![pb::CancelledFlow {
                    client_id: client_id.to_string(),
                    flow_id: flow_id.to_string(),
                }],
                reason: reason.to_string(),
            }),
            Notice::Labels(labels) => Kind::LabelsChanged(pb::LabelsChanged {
                client_id: client_id.to_string(),
                labels: labels.to_vec(),
            }),
        };
        sent += u64::from(outbox.offer_to(kind, to.clone()));
    }
    if !tasks.is_empty() {
        let (ds, client) = (datastore, client_id.clone());
        let listed = tasks.clone();
        let frames = crate::runtime::offload::offload(move || queued_frames(&ds, &client, &listed))
            .await
            .unwrap_or_else(|e| {
                // The minion's shard builds each frame from request.json itself (an empty
                // frame): a notice is not dropped for a read that failed here.
                tracing::warn!(client = %client_id, "resending tasks after a move: {e}");
                tasks.into_iter().map(|f| (f, Bytes::new())).collect()
            });
        for (flow_id, frame) in frames {
            let notification = pb::Notification {
                client_id: client_id.to_string(),
                flow_id: flow_id.to_string(),
                frame,
            };
            sent += u64::from(outbox.offer_to(Kind::Notification(notification), to.clone()));
        }
    }
    metrics()
        .fleet_notices_resent
        .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
}

/// Blocking: the task frames of those of `flows` still queued for `client_id` (an agent
/// that started one has it already).
fn queued_frames(
    datastore: &Datastore,
    client_id: &ClientId,
    flows: &[FlowId],
) -> Result<Vec<(FlowId, Bytes)>, DatastoreError> {
    let client = datastore.client(client_id);
    let queued = crate::datastore::flow::pending_tasks(&client)?;
    let mut frames = Vec::new();
    for flow_id in flows.iter().filter(|f| queued.contains(f)) {
        // A hunt recruit not answered yet has its queue entry, not a request.json.
        let request = crate::datastore::flow::queued_request(&client, flow_id)?;
        let frame = crate::protocol::tasks::task_frame(request.into_task());
        frames.push((flow_id.clone(), frame));
    }
    Ok(frames)
}

/// A notice about one client, as remembered to be sent again.
#[derive(Debug, Clone, PartialEq)]
enum Notice {
    Task(FlowId),
    Cancel { flow_id: FlowId, reason: Arc<str> },
    Labels(Arc<[String]>),
}

/// Where a notice goes.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    /// The client is on this frontend: its shards only.
    ThisFrontend,
    /// The minion of this name holds the client.
    Minion(Rc<str>),
    AllMinions(BroadcastReason),
}

/// Notices that went to one frontend, per client, for `window`: what is sent again when
/// presence reports the client elsewhere. Bounded in clients and in notices per client.
struct SentLog {
    this: Rc<str>,
    clients: HashMap<ClientId, Sent>,
    window: Duration,
    last_sweep: Instant,
}

struct Sent {
    /// Where presence had the client when the notices went out, or where it turned up
    /// since (they were sent there again).
    at: Rc<str>,
    /// Invariant: oldest first, at most `MAX_FLEET_RESEND_NOTICES_PER_CLIENT_COUNT`, at
    /// most one `Labels` (the latest).
    notices: Vec<(Instant, Notice)>,
}

impl SentLog {
    fn new(this: Rc<str>, window: Duration) -> Self {
        Self {
            this,
            clients: HashMap::new(),
            window,
            last_sweep: Instant::now(),
        }
    }

    /// Where `notice` about `client_id` goes, presence placing the client at `holder`.
    fn route(
        &mut self,
        client_id: &ClientId,
        holder: Option<Rc<str>>,
        notice: Notice,
        now: Instant,
    ) -> Route {
        let Some(holder) = holder else {
            return Route::AllMinions(BroadcastReason::HolderUnknown);
        };
        if !self.remember(client_id, &holder, notice, now) {
            return Route::AllMinions(BroadcastReason::RecordFull);
        }
        if holder == self.this {
            Route::ThisFrontend
        } else {
            Route::Minion(holder)
        }
    }

    /// Keeps `notice` as sent to `at`; false when there is no room for it.
    fn remember(
        &mut self,
        client_id: &ClientId,
        at: &Rc<str>,
        notice: Notice,
        now: Instant,
    ) -> bool {
        let since_sweep = now.saturating_duration_since(self.last_sweep);
        let full = self.clients.len() >= MAX_FLEET_RESEND_CLIENTS_COUNT
            && !self.clients.contains_key(client_id);
        if since_sweep >= self.window || (full && since_sweep >= FLEET_RESEND_SWEEP_INTERVAL) {
            self.sweep(now);
        }
        if self.clients.len() >= MAX_FLEET_RESEND_CLIENTS_COUNT
            && !self.clients.contains_key(client_id)
        {
            return false;
        }
        let window = self.window;
        let sent = self
            .clients
            .entry(client_id.clone())
            .or_insert_with(|| Sent {
                at: at.clone(),
                notices: Vec::new(),
            });
        sent.at = at.clone();
        sent.notices
            .retain(|(when, _)| now.saturating_duration_since(*when) < window);
        if matches!(notice, Notice::Labels(_)) {
            sent.notices
                .retain(|(_, n)| !matches!(n, Notice::Labels(_)));
        }
        if sent.notices.len() >= MAX_FLEET_RESEND_NOTICES_PER_CLIENT_COUNT {
            return false;
        }
        sent.notices.push((now, notice));
        debug_assert!(sent.notices.len() <= MAX_FLEET_RESEND_NOTICES_PER_CLIENT_COUNT);
        true
    }

    /// Presence reports `client_id` at frontend `at`: the notices to send there again
    /// (none if they went there, or if `at` is this frontend, whose shards hear every
    /// notice).
    fn arrived(&mut self, client_id: &ClientId, at: &Rc<str>, now: Instant) -> Vec<Notice> {
        let window = self.window;
        let Some(sent) = self.clients.get_mut(client_id) else {
            return Vec::new();
        };
        if sent.at == *at {
            return Vec::new();
        }
        sent.at = at.clone();
        sent.notices
            .retain(|(when, _)| now.saturating_duration_since(*when) < window);
        if sent.notices.is_empty() {
            self.clients.remove(client_id);
            return Vec::new();
        }
        if *at == self.this {
            return Vec::new();
        }
        sent.notices.iter().map(|(_, n)| n.clone()).collect()
    }

    /// `flow_id` was cancelled: its task is not to be sent again.
    fn forget_task(&mut self, client_id: &ClientId, flow_id: &FlowId) {
        if let Some(sent) = self.clients.get_mut(client_id) {
            sent.notices
                .retain(|(_, n)| !matches!(n, Notice::Task(f) if f == flow_id));
        }
    }

    /// Lets go of what is older than the window.
    fn sweep(&mut self, now: Instant) {
        let window = self.window;
        self.clients.retain(|_, sent| {
            sent.notices
                .retain(|(when, _)| now.saturating_duration_since(*when) < window);
            !sent.notices.is_empty()
        });
        self.last_sweep = now;
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

    fn client(n: u8) -> ClientId {
        ClientId::parse(&format!("C.{n:016x}")).expect("a valid client id")
    }

    fn flow(n: u8) -> FlowId {
        FlowId::parse(&format!("F.{n:016X}")).expect("a valid flow id")
    }

    fn log() -> SentLog {
        SentLog::new(Rc::from("master:1"), Duration::from_secs(60))
    }

    fn at(name: &str) -> Option<Rc<str>> {
        Some(Rc::from(name))
    }

    // Goal: a resend after a move builds the frames of the tasks still queued, a hunt
    // recruit's (a queue entry, no request.json yet) as well as a collection's, and
    // leaves out one the agent already took. Method: both kinds queued on a temp
    // datastore, a third flow not queued.
    #[test]
    fn a_resend_builds_the_frames_of_queued_collections_and_hunt_recruits() {
        use crate::datastore::flow::{write_hunt_recruit, ArtifactRequestDoc, FlowRequest};
        use crate::datastore::hunt::{write_hunt, HuntDoc, HuntState};
        use crate::datastore::ArtifactName;
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let (client_id, dir_of) = (client(1), |c: &ClientId| ds.client(c));
        let artifacts = vec![ArtifactRequestDoc {
            name: ArtifactName::parse("Generic.Client.Info").unwrap(),
            parameters: Default::default(),
        }];
        let hunt = HuntDoc {
            hunt_id: crate::ids::HuntId::random(),
            artifacts: artifacts.clone(),
            condition: Default::default(),
            create_time_ms: 1,
            expires_ms: 0,
            state: HuntState::Running,
            start_time_ms: Some(1),
            stop_time_ms: None,
            limits: Default::default(),
        };
        write_hunt(&ds, &hunt).unwrap();
        let request = |flow_id: FlowId, hunt_id: Option<String>| FlowRequest {
            flow_id,
            client_id: client_id.clone(),
            artifacts: artifacts.clone(),
            create_time_ms: 1,
            create_time_us: 1_000,
            hunt_id,
            limits: Default::default(),
        };
        let collection = request(flow(1), None);
        crate::datastore::write_scheduled(&dir_of(&client_id), &collection).unwrap();
        let recruit = request(flow(2), Some(hunt.hunt_id.to_string()));
        write_hunt_recruit(&dir_of(&client_id), &recruit).unwrap();

        let frames = queued_frames(&ds, &client_id, &[flow(1), flow(2), flow(3)]).unwrap();
        let flows: Vec<&FlowId> = frames.iter().map(|(f, _)| f).collect();
        assert_eq!(
            flows,
            [&flow(1), &flow(2)],
            "the one not queued is left out"
        );
        for (flow_id, frame) in &frames {
            let text = String::from_utf8_lossy(frame);
            assert!(text.contains(flow_id.as_str()), "{flow_id}: {text:?}");
        }
    }

    // Goal: a notice goes to the one frontend presence names (none for this frontend's
    // own agents), and to every minion when presence names none.
    #[test]
    fn a_notice_goes_where_presence_has_its_client() {
        let mut log = log();
        let now = Instant::now();
        assert_eq!(
            log.route(&client(1), at("minion:2"), Notice::Task(flow(1)), now),
            Route::Minion(Rc::from("minion:2"))
        );
        assert_eq!(
            log.route(&client(2), at("master:1"), Notice::Task(flow(2)), now),
            Route::ThisFrontend
        );
        assert_eq!(
            log.route(&client(3), None, Notice::Task(flow(3)), now),
            Route::AllMinions(BroadcastReason::HolderUnknown)
        );
        assert!(
            !log.clients.contains_key(&client(3)),
            "a broadcast needs no resend"
        );
    }

    // Goal: a client that turns up at another minion gets there what went to the old
    // place within the window (the latest labels once, no cancelled task); nothing when
    // it turns up where the notices went, or on this frontend (whose shards heard them).
    // Method: routes and arrivals at chosen instants.
    #[test]
    fn notices_follow_a_client_that_moved_within_the_window() {
        let mut log = log();
        let t0 = Instant::now();
        let (c, old, new) = (client(1), at("minion:2"), at("minion:3"));
        let labels = |l: &str| Notice::Labels(vec![l.to_string()].into());
        log.route(&c, old.clone(), Notice::Task(flow(1)), t0);
        log.route(&c, old.clone(), Notice::Task(flow(2)), t0);
        log.route(&c, old.clone(), labels("a"), t0);
        log.route(&c, old.clone(), labels("b"), t0);
        log.forget_task(&c, &flow(2));
        assert!(log.arrived(&c, old.as_ref().unwrap(), t0).is_empty());
        let again = log.arrived(&c, new.as_ref().unwrap(), t0 + Duration::from_secs(1));
        assert_eq!(again, vec![Notice::Task(flow(1)), labels("b")]);
        assert!(
            log.arrived(&c, new.as_ref().unwrap(), t0).is_empty(),
            "sent there already"
        );
        assert!(log.arrived(&c, &Rc::from("master:1"), t0).is_empty());
        let again = log.arrived(&c, old.as_ref().unwrap(), t0 + Duration::from_secs(2));
        assert_eq!(again.len(), 2, "and back again");
        let late = t0 + Duration::from_secs(61);
        assert!(log.arrived(&c, new.as_ref().unwrap(), late).is_empty());
        assert!(!log.clients.contains_key(&c), "expired notices are let go");
        assert!(log
            .arrived(&client(9), new.as_ref().unwrap(), t0)
            .is_empty());
    }

    // Goal: a notice that cannot be remembered goes to every minion, and room comes back
    // as notices expire. Method: one client past its per-client bound.
    #[test]
    fn a_notice_without_room_in_the_log_goes_to_every_minion() {
        let mut log = log();
        let t0 = Instant::now();
        let c = client(1);
        for n in 0..MAX_FLEET_RESEND_NOTICES_PER_CLIENT_COUNT {
            let route = log.route(&c, at("minion:2"), Notice::Task(flow(n as u8)), t0);
            assert_eq!(route, Route::Minion(Rc::from("minion:2")));
        }
        assert_eq!(
            log.route(&c, at("minion:2"), Notice::Task(flow(200)), t0),
            Route::AllMinions(BroadcastReason::RecordFull)
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            log.route(&c, at("minion:2"), Notice::Task(flow(201)), later),
            Route::Minion(Rc::from("minion:2"))
        );
        assert_eq!(log.clients[&c].notices.len(), 1);
    }

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
