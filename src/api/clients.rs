//! `GET /api/v1/clients` and `GET /api/v1/clients/{id}`, answered from the master's
//! client index (`crate::clients`): no datastore scan per request. Shapes:
//! docs/architecture.md, "API shapes"; grammar and consistency: docs/gui/client-index.md.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::json;

use crate::api::routes::{json_response, parse_number, ApiError, ApiResult};
use crate::api::ApiCtx;
use crate::clients::{feed, ClientIndex, ClientView, Query};
use crate::ids::ClientId;
use crate::limits::MAX_CLIENT_LIST_PAGE_COUNT;
use crate::metrics::ClientIndexRefresh;

/// Items per page when the request names no `limit`.
const DEFAULT_CLIENT_PAGE_COUNT: u64 = 100;

/// `?search=&start=&limit=&connected=` (`offset` is the older name of `start`) ->
/// `{"items","total","start","complete"}`.
pub fn list(ctx: &ApiCtx, query: &BTreeMap<String, String>) -> ApiResult {
    let index = served(ctx)?;
    let connected = match query.get("connected").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`connected` must be true or false".into(),
            ))
        }
    };
    let search = query.get("search").map(String::as_str).unwrap_or("");
    let parsed =
        Query::parse(search, connected).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = parse_number(query, "limit", DEFAULT_CLIENT_PAGE_COUNT)?
        .min(MAX_CLIENT_LIST_PAGE_COUNT as u64) as usize;
    let start = match query.get("start") {
        Some(_) => parse_number(query, "start", 0)?,
        None => parse_number(query, "offset", 0)?,
    };
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    let page = index.search(&parsed, start, limit);
    let now_ms = crate::clock::now_ms();
    let items: Vec<serde_json::Value> = page.items.iter().map(|v| item(v, now_ms)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "items": items,
            "total": page.total,
            "start": page.start,
            "complete": page.complete,
        }),
    ))
}

/// One client's item; 404 unless the index lists it. While the index is still loading,
/// a client it has not reached yet is read from the datastore (one document, not a scan)
/// and added to the index on the way.
pub async fn get(ctx: &ApiCtx, client_id: &ClientId) -> ApiResult {
    let index = served(ctx)?;
    let view = match index.get(client_id) {
        Some(view) => Some(view),
        None if !index.is_complete() => {
            let reads = feed::read(ctx.datastore.clone(), vec![client_id.clone()]).await;
            index.disk_reads(reads, ClientIndexRefresh::Load);
            index.get(client_id)
        }
        None => None,
    };
    match view {
        Some(view) => Ok(json_response(
            StatusCode::OK,
            &item(&view, crate::clock::now_ms()),
        )),
        None => Err(ApiError::NotFound(format!("unknown client {client_id}"))),
    }
}

fn served(ctx: &ApiCtx) -> Result<&ClientIndex, ApiError> {
    ctx.clients
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("the client index is served by the master".into()))
}

/// The API's client item. A connected client is being seen now, whatever was recorded.
fn item(v: &ClientView, now_ms: u64) -> serde_json::Value {
    let connected = v.frontend.is_some();
    let last_seen_ms = if connected {
        v.last_seen_ms.max(now_ms)
    } else {
        v.last_seen_ms
    };
    json!({
        "client_id": v.client_id.as_str(),
        "hostname": v.hostname,
        "os": v.os,
        "version": v.version,
        "labels": v.labels,
        "first_seen_ms": v.first_seen_ms,
        "last_seen_ms": last_seen_ms,
        "connected": connected,
        "frontend": v.frontend.as_deref(),
    })
}
