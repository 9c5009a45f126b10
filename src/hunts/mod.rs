//! Hunts: one collection for every agent in the fleet that matches a condition,
//! including agents that connect later, on any frontend. Owned by the master's hub
//! executor: the master sees every agent arrive (its shards and every minion's presence
//! over the replication stream), so one recruiter with one token bucket
//! (`hunt_recruitment_per_second`) holds the rate for the whole fleet however many
//! frontends there are; minions only deliver the tasks (the notifications reach them like
//! any collection's).
//!
//! Recruiting an agent notes it in the hunt's recruiting journal, queues its flow (one
//! small queue entry naming the hunt: the flow's folder, request.json and status.json are
//! made from the hunt's document at the agent's first answer), then appends it to the
//! hunt's participants file, then notifies the fleet. Statistics come from flow-end events, each applied once per flow, and can be
//! recounted from disk: the master does so at start and re-checks unfinished flows
//! periodically, so a dropped event only delays a count.

mod recruit;
pub mod results;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use crate::datastore::flow::FlowRequest;
use crate::datastore::hunt::{self, HuntDoc, HuntState};
use crate::datastore::{self, ArtifactName, Datastore, DatastoreError, FlowState};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::HUNT_RESULTS_SETTLE_BATCH_COUNT;
use crate::notify::presence::{FlowEnd, Presence};
use crate::notify::FleetNotifier;
use crate::runtime::offload::offload;
use crate::runtime::rate::TokenBucket;

/// A hunt's numbers as `GET /api/v1/hunts/{id}` shows them. Each participant flow that
/// ended counts once, in one of completed, errors or cancelled; the rest of `scheduled`
/// are still running.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HuntStats {
    pub scheduled: u64,
    pub completed: u64,
    pub errors: u64,
    /// Flows cancelled (by a collection cancel or a stop with `cancel_flows`).
    pub cancelled: u64,
    pub total_rows: u64,
    pub pending_recruitment: u64,
}

/// One hunt in memory: its document and what it has recruited.
struct HuntRun {
    doc: HuntDoc,
    participants: HashSet<ClientId>,
    /// Recruitment order, for reading results.
    flows: Vec<(ClientId, FlowId)>,
    /// Flows whose end was counted (each once).
    ended: HashSet<FlowId>,
    completed: u64,
    errors: u64,
    cancelled: u64,
    total_rows: u64,
    /// Rows per participant and artifact, for results pages.
    results: results::ResultsIndex,
}

impl HuntRun {
    fn new(doc: HuntDoc) -> Self {
        Self {
            results: results::ResultsIndex::new(
                doc.artifacts.iter().map(|a| a.name.clone()).collect(),
            ),
            doc,
            participants: HashSet::new(),
            flows: Vec::new(),
            ended: HashSet::new(),
            completed: 0,
            errors: 0,
            cancelled: 0,
            total_rows: 0,
        }
    }

    /// A participant joins (recruitment order).
    fn add_participant(&mut self, client: ClientId, flow: FlowId) {
        self.results.push(&flow);
        self.participants.insert(client.clone());
        self.flows.push((client, flow));
    }

    /// Counts a flow's end the first time one is heard for it: a later end of the same
    /// flow (a finish racing its cancel, a re-read from disk) changes nothing.
    fn count_end(&mut self, end: &FlowEnd) {
        if !end.state.is_terminal() || !self.ended.insert(end.flow_id.clone()) {
            return;
        }
        match end.state {
            FlowState::Error => self.errors += 1,
            FlowState::Cancelled => self.cancelled += 1,
            _ => self.completed += 1,
        }
        self.total_rows += end.total_rows;
    }
}

/// An agent's OS and labels as the master already holds them in memory (the client
/// index); None when it does not (not loaded yet, unreadable), and the recruiter reads
/// the agent's info.json instead.
pub type KnownFacts = Rc<dyn Fn(&ClientId) -> Option<(String, Vec<String>)>>;

pub struct Hunts {
    datastore: Datastore,
    known_facts: Option<KnownFacts>,
    fleet: Rc<FleetNotifier>,
    presence: Rc<Presence>,
    runs: RefCell<BTreeMap<HuntId, HuntRun>>,
    flow_hunt: RefCell<HashMap<FlowId, HuntId>>,
    /// Connected agents not yet checked against the running hunts, each once.
    candidates: RefCell<VecDeque<ClientId>>,
    queued: RefCell<HashSet<ClientId>>,
    budget: TokenBucket,
    /// Recruits written since the last syncfs.
    unsynced: Cell<u64>,
    syncing: Cell<bool>,
    /// Candidates whose facts were read, in order, and whether a read is under way.
    checked: RefCell<VecDeque<(ClientId, recruit::Facts)>>,
    reading: Cell<bool>,
    /// Recruits taken from the budget whose flows are not yet written and recorded.
    recruits_in_flight: Cell<usize>,
    /// Ended hunt flows whose per-artifact rows are still to be read for the results
    /// index, and whether a read is under way.
    to_settle: RefCell<Vec<(HuntId, ClientId, FlowId)>>,
    settling: Cell<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum HuntError {
    #[error("no hunt {0}")]
    NotFound(HuntId),
    #[error("hunt {hunt} is {state}: it cannot be {action}")]
    WrongState {
        hunt: HuntId,
        state: &'static str,
        action: &'static str,
    },
    #[error("{0}")]
    Datastore(#[from] DatastoreError),
}

impl Hunts {
    /// Loads every hunt from disk (recounting its statistics) and taps presence for
    /// arrivals and flow ends. Blocking file work runs on the blocking pool.
    pub async fn load(
        datastore: Datastore,
        fleet: Rc<FleetNotifier>,
        presence: Rc<Presence>,
        known_facts: Option<KnownFacts>,
        recruitment_per_second: u32,
    ) -> Result<Rc<Self>, DatastoreError> {
        presence.tap();
        let ds = datastore.clone();
        let (loaded, joined) = offload(move || recount_all(&ds)).await?;
        let rate = u64::from(recruitment_per_second);
        // A quarter second of burst: the rate holds over short windows, and a stall of the
        // hub (a busy box) shorter than that is caught up rather than lost.
        let budget = TokenBucket::new(rate, (rate / 4).max(1));
        let hunts = Rc::new(Self {
            datastore,
            known_facts,
            fleet,
            presence,
            runs: RefCell::new(BTreeMap::new()),
            flow_hunt: RefCell::new(HashMap::new()),
            candidates: RefCell::new(VecDeque::new()),
            queued: RefCell::new(HashSet::new()),
            budget,
            unsynced: Cell::new(0),
            syncing: Cell::new(false),
            checked: RefCell::new(VecDeque::new()),
            reading: Cell::new(false),
            recruits_in_flight: Cell::new(0),
            to_settle: RefCell::new(Vec::new()),
            settling: Cell::new(false),
        });
        for run in loaded {
            let running = run.doc.state == HuntState::Running;
            hunts.insert(run);
            if running {
                hunts.enqueue_connected();
            }
        }
        for request in joined {
            let (client, flow) = (request.client_id.clone(), request.flow_id.clone());
            let frame = crate::protocol::tasks::task_frame(request.into_task());
            hunts.fleet.notify(&client, &flow, frame).await;
        }
        Ok(hunts)
    }

    fn insert(&self, run: HuntRun) {
        let mut flow_hunt = self.flow_hunt.borrow_mut();
        for (_, flow) in &run.flows {
            flow_hunt.insert(flow.clone(), run.doc.hunt_id.clone());
        }
        self.runs.borrow_mut().insert(run.doc.hunt_id.clone(), run);
    }

    /// Registers a new (paused) hunt after its document was written.
    pub fn add(&self, doc: HuntDoc) {
        self.insert(HuntRun::new(doc));
    }

    pub fn docs(&self) -> Vec<(HuntDoc, HuntStats)> {
        let pending = self.pending();
        self.runs
            .borrow()
            .values()
            .map(|r| (r.doc.clone(), stats(r, pending)))
            .collect()
    }

    pub fn get(&self, id: &HuntId) -> Option<(HuntDoc, HuntStats)> {
        let pending = self.pending();
        self.runs
            .borrow()
            .get(id)
            .map(|r| (r.doc.clone(), stats(r, pending)))
    }

    /// Connected agents not yet checked against the running hunts.
    pub fn pending(&self) -> u64 {
        (self.candidates.borrow().len() + self.checked.borrow().len()) as u64
    }

    /// The participants in recruitment order.
    pub fn participants(&self, id: &HuntId) -> Option<Vec<(ClientId, FlowId)>> {
        self.runs.borrow().get(id).map(|r| r.flows.clone())
    }

    /// The participants whose end has not been counted, in recruitment order: what a stop
    /// with `cancel_flows` cancels (one that ended meanwhile is left as it is).
    pub fn unended_participants(&self, id: &HuntId) -> Option<Vec<(ClientId, FlowId)>> {
        self.runs.borrow().get(id).map(|r| {
            r.flows
                .iter()
                .filter(|(_, f)| !r.ended.contains(f))
                .cloned()
                .collect()
        })
    }

    /// Waits until the recruits being written when a hunt stopped are recorded (at most
    /// `CANCEL_RECRUITS_SETTLE_WAIT`), so that a stop with `cancel_flows` sees every
    /// participant. A stopped hunt recruits no one new, so this ends.
    pub async fn settle_recruits(&self) {
        let started = std::time::Instant::now();
        while self.recruits_in_flight.get() > 0 {
            if started.elapsed() >= crate::limits::CANCEL_RECRUITS_SETTLE_WAIT {
                let left = self.recruits_in_flight.get();
                tracing::warn!(left, "recruits still being written after a hunt stopped; their flows are not cancelled");
                return;
            }
            glommio::timer::sleep(crate::limits::RECRUIT_TICK_INTERVAL).await;
        }
    }

    /// Paused → running: every connected agent becomes a candidate.
    pub async fn start(&self, id: &HuntId) -> Result<HuntDoc, HuntError> {
        let idle = !self.any_running();
        let doc = self
            .transition(
                id,
                "started",
                |s| s == HuntState::Paused,
                HuntState::Running,
            )
            .await?;
        if idle {
            // The burst is for catching up after a stall, not for the first quarter second.
            self.budget.drain();
        }
        self.enqueue_connected();
        Ok(doc)
    }

    /// Running or paused → stopped: recruits no one from now on.
    pub async fn stop(&self, id: &HuntId) -> Result<HuntDoc, HuntError> {
        self.transition(
            id,
            "stopped",
            |s| matches!(s, HuntState::Running | HuntState::Paused),
            HuntState::Stopped,
        )
        .await
    }

    async fn transition(
        &self,
        id: &HuntId,
        action: &'static str,
        allowed: impl Fn(HuntState) -> bool,
        to: HuntState,
    ) -> Result<HuntDoc, HuntError> {
        let mut doc = {
            let runs = self.runs.borrow();
            let run = runs
                .get(id)
                .ok_or_else(|| HuntError::NotFound(id.clone()))?;
            if !allowed(run.doc.state) {
                return Err(HuntError::WrongState {
                    hunt: id.clone(),
                    state: run.doc.state.as_str(),
                    action,
                });
            }
            run.doc.clone()
        };
        let now = crate::clock::now_ms();
        doc.state = to;
        match to {
            HuntState::Running => doc.start_time_ms = Some(now),
            _ => doc.stop_time_ms = Some(now),
        }
        let (ds, written) = (self.datastore.clone(), doc.clone());
        offload(move || hunt::write_hunt(&ds, &written)).await?;
        if let Some(run) = self.runs.borrow_mut().get_mut(id) {
            run.doc = doc.clone();
        }
        Ok(doc)
    }

    fn any_running(&self) -> bool {
        self.runs
            .borrow()
            .values()
            .any(|r| r.doc.state == HuntState::Running)
    }

    fn enqueue_connected(&self) {
        for client in self.presence.connected_ids() {
            self.enqueue(client);
        }
    }

    /// Checks `client` against the running hunts again (its labels changed).
    pub fn reconsider(&self, client: &ClientId) {
        if self.any_running() {
            self.enqueue(client.clone());
        }
    }

    fn enqueue(&self, client: ClientId) {
        if self.queued.borrow_mut().insert(client.clone()) {
            self.candidates.borrow_mut().push_back(client);
        }
    }

    /// Applies what presence collected since the last call.
    fn absorb_events(&self) {
        let arrivals = self.presence.drain_arrivals();
        if self.any_running() {
            arrivals.into_iter().for_each(|c| self.enqueue(c));
        }
        let ends = self.presence.drain_flow_ends();
        let flow_hunt = self.flow_hunt.borrow();
        let mut runs = self.runs.borrow_mut();
        let mut to_settle = self.to_settle.borrow_mut();
        for end in ends {
            let Some(hunt_id) = flow_hunt.get(&end.flow_id) else {
                continue;
            };
            if let Some(run) = runs.get_mut(hunt_id) {
                let owner = run.results.client_of(&end.flow_id, &run.flows);
                if let (Some(named), Some(owner)) = (&end.client_id, &owner) {
                    if named != owner {
                        // Another client's flow named beside a reporter's own agent.
                        tracing::warn!(flow = %end.flow_id, client = %named, "flow end for another client's flow ignored");
                        continue;
                    }
                }
                run.count_end(&end);
                if let Some(client) = owner {
                    to_settle.push((hunt_id.clone(), client, end.flow_id.clone()));
                }
            }
        }
    }

    /// Reads the per-artifact rows of ended flows (status.json) into the results
    /// indexes, a batch per call; one call at a time.
    async fn settle_ended(&self) {
        let batch: Vec<(HuntId, ClientId, FlowId)> = {
            let mut queue = self.to_settle.borrow_mut();
            let n = queue.len().min(HUNT_RESULTS_SETTLE_BATCH_COUNT);
            queue.drain(..n).collect()
        };
        if batch.is_empty() || self.settling.replace(true) {
            self.to_settle.borrow_mut().extend(batch);
            return;
        }
        let ds = self.datastore.clone();
        let read = offload(move || {
            batch
                .into_iter()
                .filter_map(|(h, c, f)| {
                    let status = datastore::read_status(&ds.client(&c), &f).ok()?;
                    status
                        .state
                        .is_terminal()
                        .then_some((h, f, status.artifacts))
                })
                .collect::<Vec<_>>()
        })
        .await;
        let mut runs = self.runs.borrow_mut();
        for (hunt, flow, rows) in read {
            if let Some(run) = runs.get_mut(&hunt) {
                run.results.settle(&flow, &rows);
            }
        }
        self.settling.set(false);
    }

    /// The page `start_row .. start_row + rows` of `artifact`'s rows over the hunt's
    /// participants, in recruitment order: the total and which rows of which flows to
    /// read. `live` reads the current row counts of flows whose rows may still grow
    /// (`(client, flow)` → rows, on the blocking pool). None for an unknown hunt or an
    /// artifact it did not collect.
    pub async fn results_page<F>(
        &self,
        id: &HuntId,
        artifact: &ArtifactName,
        start_row: u64,
        rows: u64,
        live: F,
    ) -> Result<Option<ResultsPage>, DatastoreError>
    where
        F: Fn(&ClientId, &FlowId) -> Result<u64, DatastoreError> + Send + 'static,
    {
        let unsettled: Vec<(usize, ClientId, FlowId)> = {
            let runs = self.runs.borrow();
            let Some(run) = runs.get(id) else {
                return Ok(None);
            };
            run.results
                .unsettled()
                .into_iter()
                .map(|p| (p, run.flows[p].0.clone(), run.flows[p].1.clone()))
                .collect()
        };
        let counted = if unsettled.is_empty() {
            Vec::new()
        } else {
            offload(move || {
                unsettled
                    .into_iter()
                    .map(|(p, c, f)| live(&c, &f).map(|n| (p, n)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
        };
        let runs = self.runs.borrow();
        let Some(run) = runs.get(id) else {
            return Ok(None);
        };
        let Some((total, segments)) = run.results.plan(artifact, &counted, start_row, rows) else {
            return Ok(None);
        };
        let segments = segments
            .into_iter()
            .map(|s| {
                let (client, flow) = run.flows[s.position].clone();
                (client, flow, s.skip, s.take)
            })
            .collect();
        Ok(Some(ResultsPage { total, segments }))
    }

    /// Running hunts past their expiry recruit no one: mark them expired on disk.
    async fn expire(&self) {
        let now = crate::clock::now_ms();
        let expired: Vec<HuntId> = self
            .runs
            .borrow()
            .values()
            .filter(|r| {
                r.doc.state == HuntState::Running
                    && r.doc.expires_ms != 0
                    && r.doc.expires_ms <= now
            })
            .map(|r| r.doc.hunt_id.clone())
            .collect();
        for id in expired {
            if let Err(e) = self
                .transition(
                    &id,
                    "expired",
                    |s| s == HuntState::Running,
                    HuntState::Expired,
                )
                .await
            {
                tracing::warn!(hunt = %id, "cannot mark the hunt expired: {e}");
            }
        }
    }
}

fn stats(run: &HuntRun, pending: u64) -> HuntStats {
    HuntStats {
        scheduled: run.flows.len() as u64,
        completed: run.completed,
        errors: run.errors,
        cancelled: run.cancelled,
        total_rows: run.total_rows,
        pending_recruitment: if run.doc.state == HuntState::Running {
            pending
        } else {
            0
        },
    }
}

/// Every hunt on disk with its participants, the ends of their flows and their rows
/// per artifact (status.json); and the flows that joined a hunt while it loaded (see
/// [`settle_recruiting`]), whose agents are still to be told.
fn recount_all(datastore: &Datastore) -> Result<(Vec<HuntRun>, Vec<FlowRequest>), DatastoreError> {
    let mut runs = Vec::new();
    let mut joined = Vec::new();
    for doc in hunt::list_hunts(datastore)? {
        hunt::end_torn_participants(datastore, &doc.hunt_id)?;
        let participants = hunt::read_participants(datastore, &doc.hunt_id)?;
        let mut run = HuntRun::new(doc);
        for (client, flow) in participants {
            run.add_participant(client.clone(), flow.clone());
            if let Ok(status) = datastore::read_status(&datastore.client(&client), &flow) {
                run.apply_status(&flow, &status);
            }
        }
        joined.extend(settle_recruiting(datastore, &mut run));
        runs.push(run);
    }
    Ok((runs, joined))
}

/// Settles the flows a master wrote for recruits whose participant line it never
/// appended (it died in between; they are in the hunt's recruiting journal). A whole
/// flow (request and status) of a running hunt whose client is no participant yet joins
/// the hunt now, and its request is returned so its agent can be told; any other is
/// taken back, as if never scheduled. Then the journal is emptied; a write that fails
/// (a full disk) keeps it for the next start, and the hunt loads regardless.
fn settle_recruiting(datastore: &Datastore, run: &mut HuntRun) -> Vec<FlowRequest> {
    let hunt_id = run.doc.hunt_id.clone();
    let journal = match hunt::read_recruiting(datastore, &hunt_id) {
        Ok(journal) => journal,
        Err(e) => {
            tracing::warn!(hunt = %hunt_id, "cannot read the recruiting journal: {e}");
            return Vec::new();
        }
    };
    // Most hunts have nothing to settle: no set of their participants is built for them.
    if journal.is_empty() {
        return Vec::new();
    }
    let recorded: HashSet<FlowId> = run.flows.iter().map(|(_, f)| f.clone()).collect();
    let mut joined = Vec::new();
    let mut settled = true;
    for (client, flow) in journal {
        if recorded.contains(&flow) {
            continue;
        }
        let dir = datastore.client(&client);
        let request = datastore::flow::queued_request(&dir, &flow)
            .ok()
            .filter(|r| r.hunt_id.as_deref() == Some(hunt_id.as_str()));
        let status = datastore::read_status(&dir, &flow).ok();
        // Whole: queued as a recruit (answered or not), or a flow with its status.
        let whole =
            request.filter(|_| status.is_some() || datastore::flow::has_recruit_entry(&dir, &flow));
        match whole {
            Some(request)
                if run.doc.state == HuntState::Running && !run.participants.contains(&client) =>
            {
                // A flow's queue entry is the last of its writes: it may be missing.
                let rejoined = if status
                    .as_ref()
                    .is_some_and(|s| s.state == FlowState::Scheduled)
                {
                    datastore::enqueue_task(&dir, &flow)
                } else {
                    Ok(())
                }
                .and_then(|()| {
                    hunt::append_participants(
                        datastore,
                        &hunt_id,
                        &[(client.clone(), flow.clone())],
                    )
                });
                if let Err(e) = rejoined {
                    tracing::warn!(hunt = %hunt_id, client = %client, flow = %flow, "a flow recruited before a stop cannot join its hunt yet: {e}");
                    settled = false;
                    continue;
                }
                tracing::info!(hunt = %hunt_id, client = %client, flow = %flow, "a flow recruited before a stop joins its hunt");
                run.add_participant(client, flow.clone());
                if let Some(status) = &status {
                    run.apply_status(&flow, status);
                }
                joined.push(request);
            }
            _ => {
                tracing::info!(hunt = %hunt_id, client = %client, flow = %flow, "a flow recruited before a stop is taken back");
                datastore::unschedule(&dir, &flow);
            }
        }
    }
    if settled {
        if let Err(e) = hunt::clear_recruiting(datastore, &hunt_id) {
            tracing::warn!(hunt = %hunt_id, "cannot empty the recruiting journal: {e}");
        }
    }
    joined
}

impl HuntRun {
    /// Counts the flow's end and settles its rows if status.json says it ended.
    fn apply_status(&mut self, flow: &FlowId, status: &datastore::FlowStatusDoc) {
        if let Some(end) = end_of(flow, status) {
            self.count_end(&end);
        }
        if status.state.is_terminal() {
            self.results.settle(flow, &status.artifacts);
        }
    }
}

/// The end a status.json records, if the flow ended.
fn end_of(flow: &FlowId, status: &datastore::FlowStatusDoc) -> Option<FlowEnd> {
    status.state.is_terminal().then(|| FlowEnd {
        flow_id: flow.clone(),
        state: status.state,
        total_rows: status.total_rows,
        client_id: None,
    })
}

/// A hunt results page to read: rows `skip .. skip + take` of each listed flow, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsPage {
    pub total: u64,
    pub segments: Vec<(ClientId, FlowId, u64, u64)>,
}

pub use recruit::run as run_recruiter;

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: each participant counts once, in the bucket of the first end heard for it: a
    // finish reported after a cancel (or a re-read from disk) changes nothing.
    #[test]
    fn a_flow_end_counts_once_and_a_late_finish_does_not_undo_a_cancel() {
        let doc = HuntDoc {
            hunt_id: HuntId::random(),
            artifacts: Vec::new(),
            condition: Default::default(),
            create_time_ms: 1,
            expires_ms: 0,
            state: HuntState::Stopped,
            start_time_ms: None,
            stop_time_ms: None,
            limits: Default::default(),
        };
        let mut run = HuntRun::new(doc);
        let (a, b) = (FlowId::random(), FlowId::random());
        let end = |flow: &FlowId, state, total_rows| FlowEnd {
            flow_id: flow.clone(),
            state,
            total_rows,
            client_id: None,
        };
        run.count_end(&end(&a, FlowState::Cancelled, 2));
        run.count_end(&end(&a, FlowState::Finished, 5));
        run.count_end(&end(&b, FlowState::InProgress, 1));
        run.count_end(&end(&b, FlowState::Error, 1));
        run.count_end(&end(&b, FlowState::Cancelled, 1));
        assert_eq!(
            (run.completed, run.errors, run.cancelled, run.total_rows),
            (0, 1, 1, 3)
        );
    }

    fn recruit(ds: &Datastore, hunt: &HuntDoc, n: u64) -> FlowRequest {
        let client = ClientId::parse(&format!("C.{n:016x}")).unwrap();
        std::fs::create_dir_all(ds.client(&client).path()).unwrap();
        FlowRequest {
            flow_id: FlowId::random(),
            client_id: client,
            artifacts: hunt.artifacts.clone(),
            create_time_ms: 1,
            create_time_us: 1_000,
            hunt_id: Some(hunt.hunt_id.to_string()),
            limits: hunt.limits,
        }
    }

    // Goal: the flows a master queued for recruits whose participant line it never
    // appended (it died in between) are settled at the next load: a queued one of a
    // running hunt joins it (counted, still queued for its agent, and returned to be
    // told), also when its agent already answered on another frontend; one whose queue
    // entry was never completed (a temp file, or an entry created and never written) is
    // taken back without a trace; a recruit already
    // recorded is left as it is; a stopped hunt takes back even a whole one. The journal
    // is then empty.
    #[test]
    fn a_load_settles_the_flows_a_stopped_master_left_unrecorded() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let doc = |state| HuntDoc {
            hunt_id: HuntId::random(),
            artifacts: Vec::new(),
            condition: Default::default(),
            create_time_ms: 1,
            expires_ms: 0,
            state,
            start_time_ms: Some(1),
            stop_time_ms: None,
            limits: Default::default(),
        };
        let (running, stopped) = (doc(HuntState::Running), doc(HuntState::Stopped));
        hunt::write_hunt(&ds, &running).unwrap();
        hunt::write_hunt(&ds, &stopped).unwrap();
        let (recorded, whole, answered, half, empty) = (
            recruit(&ds, &running, 1),
            recruit(&ds, &running, 2),
            recruit(&ds, &running, 5),
            recruit(&ds, &running, 3),
            recruit(&ds, &running, 6),
        );
        let of_stopped = recruit(&ds, &stopped, 4);
        let pair = |r: &FlowRequest| (r.client_id.clone(), r.flow_id.clone());
        hunt::append_recruiting(
            &ds,
            &running.hunt_id,
            &[
                pair(&recorded),
                pair(&whole),
                pair(&answered),
                pair(&half),
                pair(&empty),
            ],
        )
        .unwrap();
        hunt::append_recruiting(&ds, &stopped.hunt_id, &[pair(&of_stopped)]).unwrap();
        for r in [&recorded, &whole, &answered, &of_stopped] {
            datastore::flow::write_hunt_recruit(&ds.client(&r.client_id), r).unwrap();
        }
        hunt::append_participants(&ds, &running.hunt_id, &[pair(&recorded)]).unwrap();
        // The answered one's agent got it from the queue and answered on another frontend.
        let (_, status) =
            datastore::flow::open_documents(&ds.client(&answered.client_id), &answered.flow_id)
                .unwrap();
        assert_eq!(status.state, FlowState::Scheduled);
        // The half-written one: its queue entry's write never finished.
        let half_dir = ds.client(&half.client_id);
        std::fs::create_dir_all(half_dir.tasks_dir()).unwrap();
        let tmp = crate::datastore::path::temp_sibling(&half_dir.task_path(&half.flow_id)).unwrap();
        std::fs::write(&tmp, b"{").unwrap();
        // The empty one: created in place, and the process died before its write.
        let empty_dir = ds.client(&empty.client_id);
        std::fs::create_dir_all(empty_dir.tasks_dir()).unwrap();
        std::fs::write(empty_dir.task_path(&empty.flow_id), b"").unwrap();

        let (runs, joined) = recount_all(&ds).unwrap();
        assert_eq!(
            joined,
            vec![whole.clone(), answered.clone()],
            "the queued ones are to be told"
        );
        let run = runs
            .iter()
            .find(|r| r.doc.hunt_id == running.hunt_id)
            .unwrap();
        assert_eq!(
            run.flows,
            vec![pair(&recorded), pair(&whole), pair(&answered)]
        );
        assert_eq!(
            hunt::read_participants(&ds, &running.hunt_id).unwrap(),
            vec![pair(&recorded), pair(&whole), pair(&answered)],
            "they are on disk as participants"
        );
        for r in [&whole, &answered] {
            assert_eq!(
                datastore::pending_tasks(&ds.client(&r.client_id)).unwrap(),
                vec![r.flow_id.clone()],
                "and still queued for their agents"
            );
        }
        assert!(!tmp.exists(), "the half-written entry is gone");
        assert!(datastore::pending_tasks(&half_dir).unwrap().is_empty());
        assert!(
            datastore::pending_tasks(&empty_dir).unwrap().is_empty(),
            "the empty entry is taken back"
        );
        assert!(
            datastore::pending_tasks(&ds.client(&of_stopped.client_id))
                .unwrap()
                .is_empty(),
            "a stopped hunt recruits no one, even at a load"
        );
        assert!(hunt::read_participants(&ds, &stopped.hunt_id)
            .unwrap()
            .is_empty());
        for h in [&running, &stopped] {
            assert!(hunt::read_recruiting(&ds, &h.hunt_id).unwrap().is_empty());
        }
        // A second load finds nothing more to settle and counts the same.
        let (runs, joined) = recount_all(&ds).unwrap();
        assert!(joined.is_empty());
        let run = runs
            .iter()
            .find(|r| r.doc.hunt_id == running.hunt_id)
            .unwrap();
        assert_eq!(run.flows.len(), 3);
    }
}
