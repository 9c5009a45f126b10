//! `/api/v1/hunts...` and `/api/v1/clients/{id}/labels` (labels are what hunt
//! conditions select on). Shapes: docs/architecture.md, "API shapes"; a hunt's results page lists
//! each row with the client and flow it came from.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::routes::{
    bytes_response, json_response, parse_number, requested_artifacts, shown, ApiError, ApiResult,
};
use super::ApiCtx;
use crate::datastore::hunt::{self, HuntCondition, HuntDoc, HuntState};
use crate::datastore::{self, ArtifactName, Datastore, DatastoreError};
use crate::hunts::{HuntError, HuntStats, Hunts, ResultsPage};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::{
    DEFAULT_RESULT_PAGE_ROWS, MAX_LABELS_PER_CLIENT_COUNT, MAX_RESULT_PAGE_BYTES,
    MAX_RESULT_PAGE_ROWS,
};
use crate::runtime::offload::offload;

impl From<HuntError> for ApiError {
    fn from(e: HuntError) -> Self {
        match e {
            HuntError::NotFound(id) => ApiError::NotFound(format!("no hunt {id}")),
            e @ HuntError::WrongState { .. } => ApiError::Conflict(e.to_string()),
            HuntError::Datastore(e) => ApiError::Datastore(e),
        }
    }
}

fn hunts(ctx: &ApiCtx) -> Result<&Hunts, ApiError> {
    ctx.hunts.as_deref().ok_or_else(|| {
        ApiError::Unavailable("hunts are not available on this frontend (see its log)".into())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HuntBody {
    artifacts: Vec<String>,
    #[serde(default)]
    parameters: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    condition: HuntCondition,
    /// Wall-clock ms after which the hunt recruits no one; 0 or absent: never.
    #[serde(default)]
    expires_ms: u64,
    /// The participants' flow limits (absent: the config's defaults; 0: none).
    #[serde(default)]
    timeout_s: Option<u64>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_upload_bytes: Option<u64>,
}

pub async fn create(ctx: &ApiCtx, body: &[u8]) -> ApiResult {
    let hunts = hunts(ctx)?;
    let body: HuntBody =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let artifacts = requested_artifacts(&body.artifacts, &body.parameters)?;
    check_labels(&body.condition.labels)?;
    let now = crate::clock::now_ms();
    if body.expires_ms != 0 && body.expires_ms <= now {
        return Err(ApiError::BadRequest("expires_ms is in the past".into()));
    }
    let doc = HuntDoc {
        hunt_id: HuntId::random(),
        artifacts,
        condition: body.condition,
        create_time_ms: now,
        expires_ms: body.expires_ms,
        state: HuntState::Paused,
        start_time_ms: None,
        stop_time_ms: None,
        limits: crate::api::routes::resolve_limits(
            (body.timeout_s, body.max_rows, body.max_upload_bytes),
            &ctx.config.limits.collection,
        ),
    };
    let (ds, written) = (ctx.datastore.clone(), doc.clone());
    offload(move || hunt::write_hunt(&ds, &written)).await?;
    let id = doc.hunt_id.clone();
    hunts.add(doc);
    let mut response = json_response(StatusCode::OK, &json!({ "hunt_id": id.as_str() }));
    response
        .extensions_mut()
        .insert(crate::api::audit::AuditTarget(id.to_string()));
    Ok(response)
}

pub fn list(ctx: &ApiCtx) -> ApiResult {
    let items: Vec<serde_json::Value> = hunts(ctx)?
        .docs()
        .iter()
        .map(|(doc, stats)| hunt_json(doc, stats))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

pub fn get(ctx: &ApiCtx, id: &str) -> ApiResult {
    let id = HuntId::parse(id)?;
    let (doc, stats) = hunts(ctx)?
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no hunt {id}")))?;
    Ok(json_response(StatusCode::OK, &hunt_json(&doc, &stats)))
}

pub async fn start(ctx: &ApiCtx, id: &str) -> ApiResult {
    let id = HuntId::parse(id)?;
    let doc = hunts(ctx)?.start(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "hunt_id": id.as_str(), "state": doc.state.as_str() }),
    ))
}

/// The body of `POST /api/v1/hunts/{id}/stop`: empty, `{}` or `null` stops recruiting only.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopBody {
    #[serde(default)]
    cancel_flows: bool,
}

/// `POST /api/v1/hunts/{id}/stop`, body optional: `{"cancel_flows":true}` also cancels
/// the participants' unfinished flows, in the background (api/cancel.rs); the answer says
/// how many (`cancelling`). With `cancel_flows` a hunt already stopped or expired is not a
/// conflict: its unfinished flows are cancelled all the same.
pub async fn stop(ctx: &ApiCtx, id: &str, body: &[u8]) -> ApiResult {
    let id = HuntId::parse(id)?;
    // No body, `{}` and `null` all stop recruiting only, as before the body had a meaning.
    let body: StopBody = if body.iter().all(u8::is_ascii_whitespace) {
        StopBody::default()
    } else {
        serde_json::from_slice::<Option<StopBody>>(body)
            .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
            .unwrap_or_default()
    };
    let hunts = hunts(ctx)?;
    let doc = match hunts.stop(&id).await {
        Ok(doc) => doc,
        Err(HuntError::WrongState { .. }) if body.cancel_flows => hunts
            .get(&id)
            .map(|(doc, _)| doc)
            .ok_or_else(|| ApiError::NotFound(format!("no hunt {id}")))?,
        Err(e) => return Err(e.into()),
    };
    if !body.cancel_flows {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "hunt_id": id.as_str(), "state": doc.state.as_str() }),
        ));
    }
    hunts.settle_recruits().await;
    let flows = hunts.unended_participants(&id).unwrap_or_default();
    let cancelling = flows.len();
    crate::api::cancel::cancel_in_background(
        ctx.datastore.clone(),
        ctx.fleet.clone(),
        ctx.presence.clone(),
        id.clone(),
        flows,
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({ "hunt_id": id.as_str(), "state": doc.state.as_str(), "cancelling": cancelling }),
    ))
}

pub(crate) fn hunt_json(doc: &HuntDoc, stats: &HuntStats) -> serde_json::Value {
    json!({
        "hunt_id": doc.hunt_id.as_str(),
        "state": doc.state.as_str(),
        "artifacts": doc.artifacts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        "condition": { "labels": doc.condition.labels, "os": doc.condition.os },
        "create_time_ms": doc.create_time_ms,
        "start_time_ms": doc.start_time_ms,
        "stop_time_ms": doc.stop_time_ms,
        "expires_ms": doc.expires_ms,
        "scheduled": stats.scheduled,
        "completed": stats.completed,
        "errors": stats.errors,
        "cancelled": stats.cancelled,
        "total_rows": stats.total_rows,
        "pending_recruitment": stats.pending_recruitment,
    })
}

/// Rows of one artifact over the hunt's flows in recruitment order:
/// `{"total_rows","start_row","rows":[{"client_id","flow_id","row":{…}}]}`.
pub async fn results(ctx: &ApiCtx, id: &str, query: &BTreeMap<String, String>) -> ApiResult {
    let id = HuntId::parse(id)?;
    let hunts = hunts(ctx)?;
    let (doc, _) = hunts
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no hunt {id}")))?;
    let artifact = match query.get("artifact") {
        Some(a) => a.clone(),
        None => doc
            .artifacts
            .first()
            .map(|a| a.name.to_string())
            .unwrap_or_default(),
    };
    if !doc.artifacts.iter().any(|a| a.name.as_str() == artifact) {
        return Err(ApiError::BadRequest(format!(
            "hunt {id} did not collect `{}`",
            shown(&artifact)
        )));
    }
    let artifact = ArtifactName::parse(&artifact)?;
    let start_row = parse_number(query, "start_row", 0)?;
    let wanted = parse_number(query, "rows", DEFAULT_RESULT_PAGE_ROWS)?.min(MAX_RESULT_PAGE_ROWS);
    // Rows of flows that may still grow are counted live; ended flows come from the
    // results index, so a page reads only the flows it shows.
    let ds = ctx.datastore.clone();
    let counted = artifact.clone();
    let live = move |client: &ClientId, flow: &FlowId| {
        let paths = ds.client(client).flow(flow).result_paths(&counted);
        Ok(datastore::summary(&paths)?.rows)
    };
    let page = hunts
        .results_page(&id, &artifact, start_row, wanted, live)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no hunt {id}")))?;
    let ds = ctx.datastore.clone();
    let out = offload(move || read_page(&ds, &artifact, page)).await?;
    let (total, rows) = out;
    // Rows go out as the agent sent them: spliced in, not re-encoded.
    let mut body =
        Vec::with_capacity(64 + rows.iter().map(|(_, _, r)| r.len() + 64).sum::<usize>());
    body.extend_from_slice(
        format!("{{\"total_rows\":{total},\"start_row\":{start_row},\"rows\":[").as_bytes(),
    );
    for (i, (client, flow, row)) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!("{{\"client_id\":\"{client}\",\"flow_id\":\"{flow}\",\"row\":").as_bytes(),
        );
        body.extend_from_slice(row);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}

/// One row of a hunt results page, with the client and flow it came from.
type PageRow = (ClientId, FlowId, Vec<u8>);

/// Reads the rows a results page names, in order; stops early once the page holds
/// `MAX_RESULT_PAGE_BYTES` (the caller asks again from where it stopped).
fn read_page(
    ds: &Datastore,
    artifact: &ArtifactName,
    page: ResultsPage,
) -> Result<(u64, Vec<PageRow>), DatastoreError> {
    let (mut out, mut bytes) = (Vec::new(), 0u64);
    for (client, flow, skip, take) in page.segments {
        if bytes >= MAX_RESULT_PAGE_BYTES {
            break;
        }
        let paths = ds.client(&client).flow(&flow).result_paths(artifact);
        let (_, rows) = datastore::read_rows(&paths, skip, take)?;
        let short = (rows.len() as u64) < take;
        for row in rows {
            bytes += row.len() as u64;
            out.push((client.clone(), flow.clone(), row));
        }
        if short {
            break;
        }
    }
    Ok((page.total, out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /api/v1/clients/{id}/labels` `{"add":[…],"remove":[…]}` → `{"labels":[…]}`.
pub async fn change_labels(ctx: &ApiCtx, client_id: &ClientId, body: &[u8]) -> ApiResult {
    let body: LabelsBody =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    check_labels(&body.add)?;
    let client = ctx.datastore.client(client_id);
    let labels = offload(move || {
        if !client.path().exists() {
            return Err(ApiError::NotFound(format!(
                "client {} has never connected",
                client.id()
            )));
        }
        let mut after: std::collections::BTreeSet<String> = datastore::read_client_info(&client)?
            .labels
            .into_iter()
            .collect();
        after.extend(body.add.iter().cloned());
        body.remove.iter().for_each(|l| {
            after.remove(l);
        });
        if after.len() > MAX_LABELS_PER_CLIENT_COUNT {
            return Err(ApiError::BadRequest(format!(
                "a client may carry at most {MAX_LABELS_PER_CLIENT_COUNT} labels"
            )));
        }
        Ok(datastore::client_info::change_labels(
            &client,
            &body.add,
            &body.remove,
        )?)
    })
    .await?;
    if let Some(index) = &ctx.clients {
        index.set_labels(client_id, &labels);
    }
    // A label can make a connected agent match a running hunt, and change its table.
    if let Some(hunts) = &ctx.hunts {
        hunts.reconsider(client_id);
    }
    ctx.fleet.labels_changed(client_id, labels.clone()).await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "client_id": client_id.as_str(), "labels": labels }),
    ))
}

/// Labels follow one rule wherever they appear (`datastore::Label`).
fn check_labels(labels: &[String]) -> Result<(), ApiError> {
    for label in labels {
        datastore::Label::parse(label).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    Ok(())
}
