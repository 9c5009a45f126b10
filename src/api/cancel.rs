//! Cancelling flows: `POST .../collections/{flow}/cancel`, and the participants of a hunt
//! stopped with `{"cancel_flows":true}` (docs/files/cancel.md).
//!
//! A cancel closes the flow on disk first (status.json `cancelled`, `ended_by` cancel,
//! the rows that arrived kept; the task queue entry removed), then tells every frontend
//! through the fleet notifier, whose shards push a Cancel frame to the agent if they hold
//! it, and hands the flow's end to presence so hunts count it once. Disk first: whatever
//! is lost on the way (a full queue, a link down), the flow stays closed, its agent's next
//! upload is refused and an agent that connects later is not given the task.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use crate::api::routes::{json_response, ApiError, ApiResult};
use crate::api::ApiCtx;
use crate::datastore::flow::{self, CancelOutcome};
use crate::datastore::{Datastore, DatastoreError};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::CANCEL_BATCH_COUNT;
use crate::metrics::metrics;
use crate::notify::mesh::CancelledFlows;
use crate::notify::presence::Presence;
use crate::notify::FleetNotifier;
use crate::runtime::offload::offload;

/// `POST /api/v1/clients/{id}/collections/{flow}/cancel` → `{"flow_id","state":"cancelled"}`;
/// 404 for a flow this client does not have, 409 for one that has ended.
pub async fn collection(ctx: &ApiCtx, client: ClientId, flow_id: FlowId) -> ApiResult {
    let (ds, id, now) = (
        ctx.datastore.clone(),
        flow_id.clone(),
        crate::clock::now_ms(),
    );
    let outcome = offload(move || flow::cancel(&ds.client(&client), &id, now).map(|o| (client, o)))
        .await
        .map_err(|e| match e.is_not_found() {
            true => ApiError::NotFound(format!("no collection {flow_id} for this client")),
            false => ApiError::Datastore(e),
        })?;
    let (client, outcome) = outcome;
    let status = match outcome {
        CancelOutcome::Cancelled(status) => status,
        // Finished, failed or cancelled alike: to the caller all are past cancelling, and
        // GET on the flow says which.
        CancelOutcome::AlreadyEnded(_) => {
            metrics().cancel_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::Conflict(format!(
                "flow {flow_id} is already finished"
            )));
        }
    };
    metrics().cancel_flows.fetch_add(1, Ordering::Relaxed);
    ctx.presence
        .flow_cancelled(&status.flow_id, status.total_rows);
    let cancelled = CancelledFlows {
        flows: vec![(client, flow_id.clone())],
        reason: "cancelled by an operator".into(),
    };
    ctx.fleet.cancel(Arc::new(cancelled)).await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "flow_id": flow_id.as_str(), "state": "cancelled" }),
    ))
}

/// Cancels `flows` (a stopped hunt's participants) in the background, in batches of
/// `CANCEL_BATCH_COUNT` on the blocking pool, one batch at a time; each batch's cancelled
/// flows then go to the fleet as one message. A flow that has ended meanwhile is left
/// alone. Returns at once: the caller answers with how many are being cancelled.
pub(crate) fn cancel_in_background(
    datastore: Datastore,
    fleet: Rc<FleetNotifier>,
    presence: Rc<Presence>,
    hunt: HuntId,
    flows: Vec<(ClientId, FlowId)>,
) {
    let pending = &metrics().cancel_hunt_flows_pending;
    pending.fetch_add(flows.len() as i64, Ordering::Relaxed);
    glommio::spawn_local(async move {
        let reason = format!("hunt {hunt} stopped");
        let mut flows = flows;
        while !flows.is_empty() {
            let rest = flows.split_off(flows.len().min(CANCEL_BATCH_COUNT));
            let batch = std::mem::replace(&mut flows, rest);
            let count = batch.len() as i64;
            let ds = datastore.clone();
            let outcomes = offload(move || cancel_batch(&ds, batch)).await;
            let cancelled = tally(&hunt, outcomes, &presence);
            let cancelled = CancelledFlows {
                flows: cancelled,
                reason: reason.clone(),
            };
            fleet.cancel(Arc::new(cancelled)).await;
            metrics()
                .cancel_hunt_flows_pending
                .fetch_sub(count, Ordering::Relaxed);
        }
    })
    .detach();
}

/// One flow's cancel, as a batch reports it.
type Outcome = (ClientId, FlowId, Result<CancelOutcome, DatastoreError>);

/// Blocking: cancels each flow of `batch`.
fn cancel_batch(ds: &Datastore, batch: Vec<(ClientId, FlowId)>) -> Vec<Outcome> {
    batch
        .into_iter()
        .map(|(client, flow_id)| {
            let outcome = flow::cancel(&ds.client(&client), &flow_id, crate::clock::now_ms());
            (client, flow_id, outcome)
        })
        .collect()
}

/// Counts a batch's outcomes and hands each cancelled flow's end to presence; returns the
/// flows whose agents are to be told.
fn tally(hunt: &HuntId, outcomes: Vec<Outcome>, presence: &Presence) -> Vec<(ClientId, FlowId)> {
    let m = metrics();
    let mut cancelled = Vec::with_capacity(outcomes.len());
    for (client, flow_id, outcome) in outcomes {
        match outcome {
            Ok(CancelOutcome::Cancelled(status)) => {
                m.cancel_flows.fetch_add(1, Ordering::Relaxed);
                presence.flow_cancelled(&flow_id, status.total_rows);
                cancelled.push((client, flow_id));
            }
            Ok(CancelOutcome::AlreadyEnded(_)) => {
                m.cancel_refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                m.cancel_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(hunt = %hunt, client = %client, flow = %flow_id, "cannot cancel the flow: {e}");
            }
        }
    }
    cancelled
}
