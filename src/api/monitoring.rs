//! Reading a client's monitoring events: `GET /api/v1/clients/{id}/monitoring` (which
//! event artifacts and days are stored) and `GET /api/v1/clients/{id}/monitoring/
//! {artifact}?start_ms=&end_ms=&start_row=&rows=` (rows in a time range, paged). Both run
//! on the blocking pool; the rows are spliced into the answer as the agent sent them.
//!
//! Must not: write anything, or join datastore paths (`datastore::monitoring` reads).

use std::collections::BTreeMap;
use std::io::Write as _;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use crate::api::routes::{bytes_response, json_response, parse_number, shown, ApiError, ApiResult};
use crate::datastore::{monitoring, ArtifactName, ClientDir, Datastore};
use crate::ids::ClientId;
use crate::limits::DEFAULT_RESULT_PAGE_ROWS;

/// `GET /api/v1/clients/{id}/monitoring/{artifact}`: the answer is
/// `{"client_id","artifact","start_ms","end_ms","total_rows","start_row","items":[{"time_ms","row"}]}`.
pub fn rows(
    ds: &Datastore,
    client_id: &ClientId,
    artifact: &str,
    query: &BTreeMap<String, String>,
) -> ApiResult {
    let def =
        crate::artifacts::find_event(artifact).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let artifact = ArtifactName::parse(def.name)?;
    let start_ms = parse_number(query, "start_ms", 0)?;
    let end_ms = parse_number(query, "end_ms", u64::MAX)?;
    if start_ms > end_ms {
        return Err(ApiError::BadRequest(
            "`start_ms` must not be above `end_ms`".into(),
        ));
    }
    let start_row = parse_number(query, "start_row", 0)?;
    let max_rows = parse_number(query, "rows", DEFAULT_RESULT_PAGE_ROWS)?;
    let client = known_client(ds, client_id)?;
    let page = monitoring::read_range(&client, &artifact, start_ms, end_ms, start_row, max_rows)?;
    let rows_bytes: usize = page.items.iter().map(|(_, r)| r.len() + 32).sum();
    let mut out = Vec::with_capacity(256 + rows_bytes);
    // Ids and artifact names are validated (no characters JSON must escape).
    let _ = write!(
        out,
        "{{\"client_id\":\"{client_id}\",\"artifact\":\"{artifact}\",\"start_ms\":{start_ms},\
         \"end_ms\":{end_ms},\"total_rows\":{},\"start_row\":{start_row},\"items\":[",
        page.total_rows
    );
    for (i, (time_ms, row)) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{{\"time_ms\":{time_ms},\"row\":");
        out.extend_from_slice(row);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(out),
    ))
}

/// `GET /api/v1/clients/{id}/monitoring`: `{"client_id","artifacts":[{"name","days":
/// [{"day":"YYYY-MM-DD","rows":N}]}]}`, artifacts by name, days oldest first.
pub fn list(ds: &Datastore, client_id: &ClientId) -> ApiResult {
    let client = known_client(ds, client_id)?;
    let artifacts: Vec<serde_json::Value> = monitoring::list_monitoring(&client)?
        .into_iter()
        .map(|(name, days)| {
            let days: Vec<serde_json::Value> = days
                .into_iter()
                .map(|(day, rows)| json!({"day": day.to_string(), "rows": rows}))
                .collect();
            json!({"name": name.as_str(), "days": days})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"client_id": client_id.as_str(), "artifacts": artifacts}),
    ))
}

/// The client's folder; 404 for a client that never connected.
fn known_client(ds: &Datastore, client_id: &ClientId) -> Result<ClientDir, ApiError> {
    let client = ds.client(client_id);
    if !client.path().is_dir() {
        return Err(ApiError::NotFound(format!(
            "unknown client {}",
            shown(client_id.as_str())
        )));
    }
    Ok(client)
}
