//! `GET /api/v1/events/watch?artifact=A[&client_id=C]`: live client events as
//! `application/x-ndjson`, one line per event, for as long as the request lasts
//! (docs/events/watch.md). The watchers themselves are `events::watch`; this file maps
//! HTTP onto them and renders the lines:
//!
//! `{"client_id":"C.…","artifact":"A","time_ms":T,"row":{…},"seq":N,"frontend":"host:port","event_id":"C.…:A:N:I"}`
//!
//! and, when the server ends the stream before the client does, one last line
//! `{"end":"<reason>"}`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, StatusCode};
use serde_json::json;

use super::routes::{shown, ApiError, ApiResult};
use super::{ApiBody, ApiCtx};
use crate::datastore::ArtifactName;
use crate::events::watch::{Delivery, WatchNext};
use crate::ids::ClientId;
use crate::metrics::metrics;

pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Starts a watcher and answers with its stream. An unknown or collection artifact is
/// 400; a full house of watchers 503.
pub fn watch(ctx: &ApiCtx, query: &BTreeMap<String, String>) -> ApiResult {
    let Some(hub) = &ctx.watch else {
        return Err(on_a_minion(ctx));
    };
    let raw = query.get("artifact").map(String::as_str).unwrap_or("");
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "`artifact` is required: the event artifact to watch, e.g. \
             artifact=Generic.Client.Stats"
                .into(),
        ));
    }
    crate::artifacts::find_event(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let artifact = ArtifactName::parse(raw)?;
    let client_id = match query.get("client_id") {
        None => None,
        Some(id) => Some(
            ClientId::parse(id)
                .map_err(|e| ApiError::BadRequest(format!("`client_id` {}: {e}", shown(id))))?,
        ),
    };
    let watcher = hub
        .watch(artifact, client_id)
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let limits = *hub.limits();
    let lines = watcher.map(move |next| match next {
        WatchNext::Batch(delivery) => event_lines(&delivery),
        WatchNext::End(reason) => end_line(&reason.message(&limits)),
    });
    let response = hyper::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-store")
        .body(ApiBody::Streamed(Box::pin(lines)))
        .expect("static response parts are valid");
    Ok(response)
}

/// What a minion answers: live watch is the master's.
pub fn on_a_minion(ctx: &ApiCtx) -> ApiError {
    ApiError::NotFound(format!(
        "live watch is served by the master, at https://{}:{}/api/v1/events/watch; this \
         minion forwards its agents' events of watched artifacts there",
        ctx.config.frontend.master.host,
        ctx.config.gui.address.port()
    ))
}

/// One line per row of the batch; rows are spliced in as stored (ingest checked each is
/// one JSON object), never re-encoded.
fn event_lines(delivery: &Delivery) -> Bytes {
    let batch = &delivery.batch;
    let quoted = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let head = format!(
        "{{\"client_id\":{},\"artifact\":{},\"time_ms\":",
        quoted(batch.client_id.as_str()),
        quoted(batch.artifact.as_str())
    );
    let tail = format!(
        ",\"seq\":{},\"frontend\":{},\"event_id\":",
        batch.seq,
        quoted(&delivery.frontend)
    );
    let per_row = head.len() + tail.len() + 96;
    let mut out = Vec::with_capacity(batch.jsonl.len() + batch.time_ms.len() * per_row);
    let mut rows = 0u64;
    for (i, (time_ms, row)) in batch.rows().enumerate() {
        out.extend_from_slice(head.as_bytes());
        let _ = write!(out, "{time_ms},\"row\":");
        out.extend_from_slice(row);
        out.extend_from_slice(tail.as_bytes());
        out.extend_from_slice(quoted(&batch.event_id(i)).as_bytes());
        out.extend_from_slice(b"}\n");
        rows += 1;
    }
    metrics()
        .events_watch_delivered
        .fetch_add(rows, Ordering::Relaxed);
    Bytes::from(out)
}

fn end_line(reason: &str) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "end": reason })).expect("JSON values serialise");
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::IngestedBatch;
    use std::sync::Arc;

    // Goal: each row becomes one JSON line with its fields, the row as stored; the end
    // line is JSON too.
    #[test]
    fn lines_carry_every_field() {
        let batch = IngestedBatch {
            client_id: ClientId::parse("C.00000000000000aa").unwrap(),
            artifact: ArtifactName::parse("Generic.Client.Stats").unwrap(),
            seq: 42,
            time_ms: vec![1_000, 2_000],
            jsonl: Bytes::from_static(b"{\"cpu\":1.5}\n{\"cpu\":2,\"s\":\"a\\\"b\"}\n"),
            labels: Arc::from(Vec::<String>::new()),
        };
        let delivery = Delivery {
            batch: Arc::new(batch),
            frontend: Arc::from("127.0.0.1:8000"),
        };
        let text = String::from_utf8(event_lines(&delivery).to_vec()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            json!({"client_id": "C.00000000000000aa", "artifact": "Generic.Client.Stats",
                   "time_ms": 2000, "row": {"cpu": 2, "s": "a\"b"}, "seq": 42,
                   "frontend": "127.0.0.1:8000",
                   "event_id": "C.00000000000000aa:Generic.Client.Stats:42:1"})
        );
        assert_eq!(lines[0]["row"], json!({"cpu": 1.5}));
        assert!(text.ends_with('\n'));
        let end: serde_json::Value = serde_json::from_slice(&end_line("gone \"now\"")).unwrap();
        assert_eq!(end, json!({"end": "gone \"now\""}));
    }
}
