//! The recruiter: checks connected agents against the running hunts and assigns the
//! matching ones, at most `hunt_recruitment_per_second` assignments per second for the
//! whole fleet. An agent whose facts are not known yet (no info.json: its ClientInfo has
//! not landed) is checked again later rather than judged on missing facts.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use glommio::sync::Semaphore;

use super::{HuntRun, Hunts};
use crate::datastore;
use crate::datastore::flow::FlowRequest;
use crate::datastore::hunt::{self, HuntDoc, HuntState};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::{
    HUNT_RECONCILE_BATCH_COUNT, HUNT_RECONCILE_INTERVAL, RECRUIT_BATCHES_IN_FLIGHT_COUNT,
    RECRUIT_BATCH_COUNT, RECRUIT_CHECK_BATCH_COUNT, RECRUIT_FACTS_RETRY_DELAY,
    RECRUIT_FINISH_ON_SHUTDOWN, RECRUIT_SYNC_INTERVAL, RECRUIT_TICK_INTERVAL,
};
use crate::metrics::{metrics, FlowEvent};
use crate::runtime::deadline::idle_within;
use crate::runtime::offload::offload;
use crate::runtime::shutdown::{has_fired, ShutdownSignal};

/// Recruits until the frontend begins to stop (`drain`, its first stop signal: the
/// agents are being moved and the hub stops soon), then lets what is being written finish.
pub async fn run(hunts: Rc<Hunts>, drain: ShutdownSignal) {
    let in_flight = Rc::new(Semaphore::new(RECRUIT_BATCHES_IN_FLIGHT_COUNT));
    let mut deferred: Vec<(Instant, ClientId)> = Vec::new();
    let mut last_reconcile = Instant::now();
    let mut last_sync = Instant::now();
    loop {
        if has_fired(&drain) {
            return finish(&hunts).await;
        }
        hunts.absorb_events();
        if !hunts.settling.get() && !hunts.to_settle.borrow().is_empty() {
            let hunts = hunts.clone();
            glommio::spawn_local(async move { hunts.settle_ended().await }).detach();
        }
        hunts.expire().await;
        let pending = if hunts.any_running() {
            hunts.pending() as i64
        } else {
            0
        };
        metrics()
            .hunt_pending_recruitment
            .store(pending, Ordering::Relaxed);
        let now = Instant::now();
        deferred.retain(|(due, client)| {
            if *due > now {
                return true;
            }
            hunts.enqueue(client.clone());
            false
        });
        recruit_due(&hunts, &in_flight, &mut deferred).await;
        // The sync runs beside the recruiter, one at a time: a slow disk delays
        // durability, not recruitment.
        if last_sync.elapsed() >= RECRUIT_SYNC_INTERVAL && !hunts.syncing.get() {
            last_sync = Instant::now();
            let hunts = hunts.clone();
            glommio::spawn_local(async move { sync_recruits(&hunts).await }).detach();
        }
        if last_reconcile.elapsed() >= HUNT_RECONCILE_INTERVAL {
            last_reconcile = Instant::now();
            reconcile(&hunts).await;
        }
        glommio::timer::sleep(RECRUIT_TICK_INTERVAL).await;
    }
}

/// Waits (up to RECRUIT_FINISH_ON_SHUTDOWN) for the recruit batches being written to be
/// recorded and told, and for the reads, syncs and settles under way, then makes the
/// recruits durable: a process that exits with a batch's blocking writes in flight
/// leaves flows written for participants never recorded.
async fn finish(hunts: &Hunts) {
    let busy = || {
        hunts.recruits_in_flight.get() > 0
            || hunts.reading.get()
            || hunts.syncing.get()
            || hunts.settling.get()
    };
    if !idle_within(RECRUIT_FINISH_ON_SHUTDOWN, RECRUIT_TICK_INTERVAL, busy).await {
        tracing::warn!(
            recruits = hunts.recruits_in_flight.get(),
            "hunt recruits still being written at shutdown: the next start settles them"
        );
        return;
    }
    sync_recruits(hunts).await;
}

/// An agent's facts as the conditions need them; None while unknown (no info.json yet).
pub(super) type Facts = Option<(String, Vec<String>)>;

/// Finds the facts of the next batch of candidates: from memory where the master holds
/// them (the client index: a whole fleet's hunt then reads no info.json at all), else
/// read in the background, so that the recruiter spends its tokens while the disk works
/// (reading in line stalled it for up to 230 ms on a busy box, and a stall longer than
/// the bucket's burst loses rate).
fn prefetch_facts(hunts: &Rc<Hunts>) {
    if hunts.reading.get() || hunts.checked.borrow().len() >= RECRUIT_CHECK_BATCH_COUNT {
        return;
    }
    let mut batch: Vec<ClientId> = {
        let mut candidates = hunts.candidates.borrow_mut();
        let n = candidates.len().min(RECRUIT_CHECK_BATCH_COUNT);
        candidates.drain(..n).collect()
    };
    let n = batch.len();
    if let Some(known) = &hunts.known_facts {
        let mut checked = hunts.checked.borrow_mut();
        batch.retain(|c| match known(c) {
            Some(facts) => {
                checked.push_back((c.clone(), Some(facts)));
                false
            }
            None => true,
        });
    }
    let (from_memory, to_read) = (n - batch.len(), batch.len());
    metrics()
        .hunt_facts_from_memory
        .fetch_add(from_memory as u64, Ordering::Relaxed);
    metrics()
        .hunt_facts_read
        .fetch_add(to_read as u64, Ordering::Relaxed);
    if batch.is_empty() {
        return;
    }
    hunts.reading.set(true);
    let hunts = hunts.clone();
    glommio::spawn_local(async move {
        let ds = hunts.datastore.clone();
        let read = offload(move || {
            let facts = batch.into_iter().map(|c| {
                let facts = match datastore::read_client_info(&ds.client(&c)) {
                    Ok(info) => Some((info.os, info.labels)),
                    Err(e) => {
                        if !e.is_not_found() {
                            tracing::warn!(client = %c, "hunt recruitment: cannot read the client's facts: {e}");
                        }
                        None
                    }
                };
                (c, facts)
            });
            facts.collect::<Vec<_>>()
        })
        .await;
        hunts.checked.borrow_mut().extend(read);
        hunts.reading.set(false);
    })
    .detach();
}

/// A recruit whose flow is still to be written: the hunt it joined and its request
/// (stamped when its token was taken).
type Recruit = (HuntId, FlowRequest);

/// Checks candidates whose facts are in while the budget lasts, then writes the recruits'
/// flows in batches.
async fn recruit_due(
    hunts: &Rc<Hunts>,
    in_flight: &Rc<Semaphore>,
    deferred: &mut Vec<(Instant, ClientId)>,
) {
    if !hunts.any_running() {
        return;
    }
    prefetch_facts(hunts);
    let mut recruits: Vec<Recruit> = Vec::new();
    while hunts.budget.available() >= 1 {
        let Some((client, facts)) = hunts.checked.borrow_mut().pop_front() else {
            break;
        };
        let Some((os, labels)) = facts else {
            hunts.queued.borrow_mut().remove(&client);
            deferred.push((Instant::now() + RECRUIT_FACTS_RETRY_DELAY, client));
            continue;
        };
        if !assign(hunts, &client, &os, &labels, &mut recruits) {
            // Out of budget: it waits for the next tokens, first in line.
            hunts
                .checked
                .borrow_mut()
                .push_front((client, Some((os, labels))));
            break;
        }
        hunts.queued.borrow_mut().remove(&client);
        prefetch_facts(hunts);
    }
    // Counted until recorded, so a stop with cancel_flows can wait for them.
    let in_flight_now = hunts.recruits_in_flight.get() + recruits.len();
    hunts.recruits_in_flight.set(in_flight_now);
    while !recruits.is_empty() {
        let rest = recruits.split_off(recruits.len().min(RECRUIT_BATCH_COUNT));
        let batch = std::mem::replace(&mut recruits, rest);
        let permit = in_flight.acquire_static_permit(1).await;
        let hunts = hunts.clone();
        glommio::spawn_local(async move {
            let _permit = permit;
            let count = batch.len();
            recruit_batch(&hunts, batch).await;
            let left = hunts.recruits_in_flight.get().saturating_sub(count);
            hunts.recruits_in_flight.set(left);
        })
        .detach();
    }
}

/// Recruits `client` into every running hunt it matches and is not in yet, a token each;
/// the flows to write go to `recruits`. False when the budget ran out first (it may have
/// joined some of them).
fn assign(
    hunts: &Rc<Hunts>,
    client: &ClientId,
    os: &str,
    labels: &[String],
    recruits: &mut Vec<Recruit>,
) -> bool {
    let wanting: Vec<HuntDoc> = hunts
        .runs
        .borrow()
        .values()
        .filter(|r| {
            r.doc.state == HuntState::Running
                && !r.participants.contains(client)
                && r.doc.condition.matches(os, labels)
        })
        .map(|r| r.doc.clone())
        .collect();
    for doc in wanting {
        // Joined now, before its flow is written: no second recruitment races it.
        let joined = match hunts.runs.borrow_mut().get_mut(&doc.hunt_id) {
            Some(run) if run.doc.state == HuntState::Running => {
                run.participants.insert(client.clone())
            }
            _ => false,
        };
        if !joined {
            continue;
        }
        if !hunts.budget.try_take() {
            if let Some(run) = hunts.runs.borrow_mut().get_mut(&doc.hunt_id) {
                run.participants.remove(client);
            }
            return false;
        }
        let now_us = crate::clock::now_us();
        let request = FlowRequest {
            flow_id: FlowId::random(),
            client_id: client.clone(),
            artifacts: doc.artifacts.clone(),
            create_time_ms: now_us / 1000,
            create_time_us: now_us,
            hunt_id: Some(doc.hunt_id.to_string()),
            limits: doc.limits,
        };
        recruits.push((doc.hunt_id.clone(), request));
    }
    true
}

/// Writes the recruits' flows, records them, and tells the fleet. A recruit whose flow
/// could not be written leaves its hunt and is checked again later.
async fn recruit_batch(hunts: &Hunts, batch: Vec<Recruit>) {
    let ds = hunts.datastore.clone();
    let outcomes = offload(move || write_recruits(&ds, batch)).await;
    for (hunt_id, request, written) in outcomes {
        let client_id = request.client_id.clone();
        if let Err(e) = written {
            tracing::warn!(hunt = %hunt_id, client = %client_id, "hunt recruitment failed, will retry: {e}");
            if let Some(run) = hunts.runs.borrow_mut().get_mut(&hunt_id) {
                run.participants.remove(&client_id);
            }
            hunts.enqueue(client_id);
            continue;
        }
        let flow_id = request.flow_id.clone();
        let frame = crate::protocol::tasks::task_frame(request.into_task());
        record(hunts, &hunt_id, &client_id, &flow_id);
        metrics().flow(FlowEvent::Scheduled);
        metrics().hunt_recruited.fetch_add(1, Ordering::Relaxed);
        hunts.fleet.notify(&client_id, &flow_id, frame).await;
        hunts.unsynced.set(hunts.unsynced.get() + 1);
    }
}

/// The journal first, then the recruits' queue entries (their flows' folders come with
/// the agents' first answers: `datastore::flow::write_hunt_recruit`), then the participant
/// lines (one append per hunt each): a participant always has its queued flow, and one
/// queued for a participant line that never came (the process died between) is in the
/// journal for the next start to settle. Runs on the blocking pool.
///
/// Each recruit's outcome carries its error as text: one failed append fails every
/// recruit of that hunt in the batch.
fn write_recruits(
    ds: &datastore::Datastore,
    batch: Vec<Recruit>,
) -> Vec<(HuntId, FlowRequest, Result<(), String>)> {
    let mut journal: BTreeMap<HuntId, Vec<(ClientId, FlowId)>> = BTreeMap::new();
    for (hunt_id, request) in &batch {
        journal
            .entry(hunt_id.clone())
            .or_default()
            .push((request.client_id.clone(), request.flow_id.clone()));
    }
    let unjournaled: BTreeMap<HuntId, String> = journal
        .iter()
        .filter_map(|(hunt_id, recruits)| {
            let e = hunt::append_recruiting(ds, hunt_id, recruits).err()?;
            Some((hunt_id.clone(), e.to_string()))
        })
        .collect();
    let mut outcomes: Vec<(HuntId, FlowRequest, Result<(), String>)> = batch
        .into_iter()
        .map(|(hunt_id, request)| {
            let written = match unjournaled.get(&hunt_id) {
                Some(reason) => Err(reason.clone()),
                None => {
                    datastore::flow::write_hunt_recruit(&ds.client(&request.client_id), &request)
                        .map_err(|e| e.to_string())
                }
            };
            (hunt_id, request, written)
        })
        .collect();
    let mut lines: BTreeMap<HuntId, Vec<(ClientId, FlowId)>> = BTreeMap::new();
    for (hunt_id, request, _) in outcomes.iter().filter(|(_, _, w)| w.is_ok()) {
        lines
            .entry(hunt_id.clone())
            .or_default()
            .push((request.client_id.clone(), request.flow_id.clone()));
    }
    for (hunt_id, participants) in lines {
        if let Err(e) = hunt::append_participants(ds, &hunt_id, &participants) {
            let reason = e.to_string();
            for (_, request, written) in outcomes
                .iter_mut()
                .filter(|(h, _, w)| *h == hunt_id && w.is_ok())
            {
                // Nobody was told of the flow yet: take it back, or the agent would run
                // it besides the flow its retried recruitment schedules.
                datastore::unschedule(&ds.client(&request.client_id), &request.flow_id);
                *written = Err(reason.clone());
            }
        }
    }
    outcomes
}

/// Makes the recruits written since the last call durable with one syncfs (per-flow
/// fsyncs, ~8 per recruit, held recruitment below its rate on a busy disk). A crash
/// before it loses at most that interval's recruits from the participants file; their
/// agents may already run the task, and the flows count again once recruited anew.
async fn sync_recruits(hunts: &Hunts) {
    if hunts.unsynced.get() == 0 || !hunts.datastore.fsync_documents() {
        hunts.unsynced.set(0);
        return;
    }
    hunts.unsynced.set(0);
    hunts.syncing.set(true);
    let root = hunts.datastore.root().to_path_buf();
    if let Err(e) = offload(move || datastore::atomic::sync_filesystem(&root)).await {
        tracing::warn!("syncing hunt recruits: {e}");
    }
    hunts.syncing.set(false);
}

fn record(hunts: &Hunts, hunt_id: &HuntId, client: &ClientId, flow: &FlowId) {
    if let Some(run) = hunts.runs.borrow_mut().get_mut(hunt_id) {
        run.add_participant(client.clone(), flow.clone());
    }
    hunts
        .flow_hunt
        .borrow_mut()
        .insert(flow.clone(), hunt_id.clone());
}

/// Re-reads unfinished participant flows from disk and counts the ones that ended (and
/// settles their rows in the results index).
async fn reconcile(hunts: &Hunts) {
    let unfinished: Vec<(HuntId, ClientId, FlowId)> = hunts
        .runs
        .borrow()
        .values()
        .flat_map(|r: &HuntRun| {
            r.flows
                .iter()
                .filter(|(_, f)| !r.ended.contains(f) || !r.results.is_settled(f))
                .map(|(c, f)| (r.doc.hunt_id.clone(), c.clone(), f.clone()))
        })
        .take(HUNT_RECONCILE_BATCH_COUNT)
        .collect();
    if unfinished.is_empty() {
        return;
    }
    let ds = hunts.datastore.clone();
    let statuses = offload(move || {
        unfinished
            .into_iter()
            .filter_map(|(h, c, f)| {
                let status = datastore::read_status(&ds.client(&c), &f).ok()?;
                Some((h, f, status))
            })
            .collect::<Vec<_>>()
    })
    .await;
    let mut runs = hunts.runs.borrow_mut();
    for (hunt, flow, status) in statuses {
        if let Some(run) = runs.get_mut(&hunt) {
            run.apply_status(&flow, &status);
        }
    }
}
