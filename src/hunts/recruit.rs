//! The recruiter: checks connected agents against the running hunts and assigns the
//! matching ones, at most `hunt_recruitment_per_second` assignments per second for the
//! whole fleet. An agent whose facts are not known yet (no info.json: its ClientInfo has
//! not landed) is checked again later rather than judged on missing facts.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use glommio::sync::Semaphore;

use super::{flow_end, HuntRun, Hunts};
use crate::datastore::flow::FlowRequest;
use crate::datastore::hunt::{self, HuntDoc, HuntState};
use crate::datastore::{self, DatastoreError};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::metrics::{metrics, FlowEvent};
use crate::shard::ctx::ShutdownSignal;
use crate::shard::offload::offload;

/// How often the recruiter wakes: a tenth of the bucket's burst at 100/s.
const TICK: Duration = Duration::from_millis(10);
/// Recruitments writing their flow at once (each is a few file writes and fsyncs).
const RECRUITS_IN_FLIGHT: u64 = 64;
/// How long an agent without known facts waits before it is checked again.
const FACTS_RETRY: Duration = Duration::from_secs(1);
/// How often unfinished participant flows are re-read from disk (a flow-end event may
/// have been dropped on the way), and how many per pass.
const RECONCILE_EVERY: Duration = Duration::from_secs(15);
const RECONCILE_BATCH: usize = 2_000;

pub async fn run(hunts: Rc<Hunts>, shutdown: ShutdownSignal) {
    let in_flight = Rc::new(Semaphore::new(RECRUITS_IN_FLIGHT));
    let mut deferred: Vec<(Instant, ClientId)> = Vec::new();
    let mut last_reconcile = Instant::now();
    loop {
        if shutdown.clone().now_or_never().is_some() {
            return;
        }
        hunts.absorb_events();
        hunts.expire().await;
        let pending = if hunts.any_running() { hunts.candidates.borrow().len() as i64 } else { 0 };
        metrics().hunt_pending_recruitment.store(pending, Ordering::Relaxed);
        let now = Instant::now();
        deferred.retain(|(due, client)| {
            if *due > now {
                return true;
            }
            hunts.enqueue(client.clone());
            false
        });
        recruit_due(&hunts, &in_flight, &mut deferred).await;
        if last_reconcile.elapsed() >= RECONCILE_EVERY {
            last_reconcile = Instant::now();
            reconcile(&hunts).await;
        }
        glommio::timer::sleep(TICK).await;
    }
}

/// Checks candidates while the budget lasts.
async fn recruit_due(hunts: &Rc<Hunts>, in_flight: &Rc<Semaphore>, deferred: &mut Vec<(Instant, ClientId)>) {
    while hunts.any_running() && hunts.budget.available() >= 1 {
        let Some(client) = hunts.candidates.borrow_mut().pop_front() else { return };
        let wanting: Vec<HuntDoc> = hunts
            .runs
            .borrow()
            .values()
            .filter(|r| r.doc.state == HuntState::Running && !r.participants.contains(&client))
            .map(|r| r.doc.clone())
            .collect();
        if wanting.is_empty() {
            hunts.queued.borrow_mut().remove(&client);
            continue;
        }
        let dir = hunts.datastore.client(&client);
        let info = match offload(move || datastore::read_client_info(&dir)).await {
            Ok(info) => info,
            Err(e) => {
                if !e.is_not_found() {
                    tracing::warn!(client = %client, "hunt recruitment: cannot read the client's facts: {e}");
                }
                hunts.queued.borrow_mut().remove(&client);
                deferred.push((Instant::now() + FACTS_RETRY, client));
                continue;
            }
        };
        let mut out_of_budget = false;
        for doc in wanting.into_iter().filter(|d| d.condition.matches(&info.os, &info.labels)) {
            // Joined now, before its flow is written: no second recruitment races it.
            let joined = match hunts.runs.borrow_mut().get_mut(&doc.hunt_id) {
                Some(run) if run.doc.state == HuntState::Running => run.participants.insert(client.clone()),
                _ => false,
            };
            if !joined {
                continue;
            }
            if !hunts.budget.try_take() {
                if let Some(run) = hunts.runs.borrow_mut().get_mut(&doc.hunt_id) {
                    run.participants.remove(&client);
                }
                out_of_budget = true;
                break;
            }
            let permit = in_flight.acquire_static_permit(1).await;
            let (hunts, client) = (hunts.clone(), client.clone());
            glommio::spawn_local(async move {
                let _permit = permit;
                recruit(&hunts, &doc, client).await;
            })
            .detach();
        }
        if out_of_budget {
            // The rest of its hunts wait for the next tokens.
            hunts.candidates.borrow_mut().push_front(client);
            return;
        }
        hunts.queued.borrow_mut().remove(&client);
    }
}

/// Writes the agent's flow for the hunt, records it, and tells the fleet.
async fn recruit(hunts: &Hunts, doc: &HuntDoc, client_id: ClientId) {
    let now_us = crate::clock::now_us();
    let request = FlowRequest {
        flow_id: FlowId::random(),
        client_id: client_id.clone(),
        artifacts: doc.artifacts.clone(),
        create_time_ms: now_us / 1000,
        create_time_us: now_us,
        hunt_id: Some(doc.hunt_id.to_string()),
    };
    let flow_id = request.flow_id.clone();
    let frame = crate::sessions::tasks::frame_for(request.clone());
    let (ds, hunt_id, client) = (hunts.datastore.clone(), doc.hunt_id.clone(), hunts.datastore.client(&client_id));
    // The flow first, then the participant line: a participant always has its flow.
    let written = offload(move || {
        datastore::write_scheduled(&client, &request)?;
        hunt::append_participant(&ds, &hunt_id, &request.client_id, &request.flow_id)
    })
    .await;
    if let Err(e) = written {
        tracing::warn!(hunt = %doc.hunt_id, client = %client_id, "hunt recruitment failed, will retry: {e}");
        if let Some(run) = hunts.runs.borrow_mut().get_mut(&doc.hunt_id) {
            run.participants.remove(&client_id);
        }
        hunts.enqueue(client_id);
        return;
    }
    record(hunts, &doc.hunt_id, &client_id, &flow_id);
    metrics().flow(FlowEvent::Scheduled);
    metrics().hunt_recruited.fetch_add(1, Ordering::Relaxed);
    hunts.fleet.notify(&client_id, &flow_id, frame).await;
    let client = hunts.datastore.client(&client_id);
    if let Err(e) = offload(move || datastore::sync_scheduled(&client, &flow_id)).await {
        tracing::warn!(hunt = %doc.hunt_id, "syncing a hunt flow: {e}");
    }
}

fn record(hunts: &Hunts, hunt_id: &HuntId, client: &ClientId, flow: &FlowId) {
    if let Some(run) = hunts.runs.borrow_mut().get_mut(hunt_id) {
        run.flows.push((client.clone(), flow.clone()));
    }
    hunts.flow_hunt.borrow_mut().insert(flow.clone(), hunt_id.clone());
}

/// Re-reads unfinished participant flows from disk and counts the ones that ended.
async fn reconcile(hunts: &Hunts) {
    let unfinished: Vec<(HuntId, ClientId, FlowId)> = hunts
        .runs
        .borrow()
        .values()
        .flat_map(|r: &HuntRun| r.flows.iter().filter(|(_, f)| !r.ended.contains(f)).map(|(c, f)| (r.doc.hunt_id.clone(), c.clone(), f.clone())))
        .take(RECONCILE_BATCH)
        .collect();
    if unfinished.is_empty() {
        return;
    }
    let ds = hunts.datastore.clone();
    let ends = offload(move || {
        Ok::<_, DatastoreError>(unfinished.into_iter().filter_map(|(h, c, f)| flow_end(&ds, &c, &f).map(|e| (h, e))).collect::<Vec<_>>())
    })
    .await;
    if let Ok(ends) = ends {
        let mut runs = hunts.runs.borrow_mut();
        for (hunt, end) in ends {
            if let Some(run) = runs.get_mut(&hunt) {
                run.count_end(&end);
            }
        }
    }
}
