//! Between the JSON API's documents and the proto's messages. Answers: the JSON the
//! routes wrote (docs/architecture.md, "API shapes") into typed messages, keeping free-form
//! parts (rows, parameters' defaults) as JSON text. Requests: the proto's fields into the
//! JSON bodies the routes read. Every status of the JSON API maps onto one gRPC code.

use std::collections::HashMap;

use http::StatusCode;
use serde_json::{json, Map, Value};
use tonic::{Code, Status};

use super::pb;

/// The gRPC code for an HTTP answer's status.
pub fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        200..=299 => Code::Ok,
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        413 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        500 => Code::Internal,
        _ => Code::Unknown,
    }
}

/// The status for an error answer: its code, and the `{"error"}` message as the JSON
/// API said it.
pub fn error_status(status: StatusCode, body: &[u8]) -> Status {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("the API answered {status}"));
    Status::new(code_of(status), message)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn texts(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn items(v: &Value) -> &[Value] {
    v.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub fn client(v: &Value) -> pb::Client {
    pb::Client {
        client_id: text(v, "client_id"),
        hostname: text(v, "hostname"),
        os: text(v, "os"),
        version: text(v, "version"),
        labels: texts(v, "labels"),
        first_seen_ms: number(v, "first_seen_ms"),
        last_seen_ms: number(v, "last_seen_ms"),
        connected: v.get("connected").and_then(Value::as_bool).unwrap_or(false),
        frontend: text(v, "frontend"),
    }
}

pub fn clients(v: &Value) -> pb::ListClientsResponse {
    pb::ListClientsResponse {
        items: items(v).iter().map(client).collect(),
        total: number(v, "total"),
        start: number(v, "start"),
        complete: v.get("complete").and_then(Value::as_bool).unwrap_or(false),
    }
}

pub fn collection(v: &Value) -> pb::Collection {
    let artifacts = v
        .get("artifacts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|a| pb::ArtifactRows {
                    name: text(a, "name"),
                    rows: number(a, "rows"),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::Collection {
        flow_id: text(v, "flow_id"),
        state: text(v, "state"),
        total_rows: number(v, "total_rows"),
        total_bytes: number(v, "total_bytes"),
        artifacts,
        errors: texts(v, "errors"),
        create_time_ms: number(v, "create_time_ms"),
        start_time_ms: number(v, "start_time_ms"),
        finish_time_ms: number(v, "finish_time_ms"),
        ended_by: text(v, "ended_by"),
        uploaded_files: number(v, "uploaded_files"),
        uploaded_bytes: number(v, "uploaded_bytes"),
        json: v.to_string(),
    }
}

pub fn collections(v: &Value) -> pb::ListCollectionsResponse {
    pb::ListCollectionsResponse {
        items: items(v).iter().map(collection).collect(),
    }
}

fn condition(v: Option<&Value>) -> pb::HuntCondition {
    let v = v.unwrap_or(&Value::Null);
    pb::HuntCondition {
        labels: texts(v, "labels"),
        os: text(v, "os"),
    }
}

pub fn hunt(v: &Value) -> pb::Hunt {
    pb::Hunt {
        hunt_id: text(v, "hunt_id"),
        state: text(v, "state"),
        artifacts: texts(v, "artifacts"),
        condition: Some(condition(v.get("condition"))),
        create_time_ms: number(v, "create_time_ms"),
        start_time_ms: number(v, "start_time_ms"),
        stop_time_ms: number(v, "stop_time_ms"),
        expires_ms: number(v, "expires_ms"),
        scheduled: number(v, "scheduled"),
        completed: number(v, "completed"),
        errors: number(v, "errors"),
        cancelled: number(v, "cancelled"),
        total_rows: number(v, "total_rows"),
        pending_recruitment: number(v, "pending_recruitment"),
        json: v.to_string(),
    }
}

pub fn hunts(v: &Value) -> pb::ListHuntsResponse {
    pb::ListHuntsResponse {
        items: items(v).iter().map(hunt).collect(),
    }
}

pub fn hunt_state(v: &Value) -> pb::HuntStateResponse {
    pb::HuntStateResponse {
        hunt_id: text(v, "hunt_id"),
        state: text(v, "state"),
        cancelling: number(v, "cancelling"),
    }
}

pub fn artifacts(v: &Value) -> pb::ListArtifactsResponse {
    let artifact = |a: &Value| pb::Artifact {
        name: text(a, "name"),
        description: text(a, "description"),
        kind: text(a, "kind"),
        parameters: a
            .get("parameters")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| pb::ArtifactParameter {
                        name: text(p, "name"),
                        description: text(p, "description"),
                        default_json: p.get("default").unwrap_or(&Value::Null).to_string(),
                        r#type: text(p, "type"),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    pb::ListArtifactsResponse {
        items: items(v).iter().map(artifact).collect(),
    }
}

fn table_entries(v: Option<&Value>) -> Vec<pb::EventTableEntry> {
    v.and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| pb::EventTableEntry {
                    name: text(e, "name"),
                    parameters: e
                        .get("parameters")
                        .and_then(Value::as_object)
                        .map(|ps| {
                            ps.iter()
                                .map(|(k, v)| {
                                    let value = match v {
                                        Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    };
                                    (k.clone(), value)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn event_table(v: &Value) -> pb::EventTable {
    let by_label = v
        .get("by_label")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(label, entries)| {
                    let entries = pb::EventTableEntries {
                        entries: table_entries(Some(entries)),
                    };
                    (label.clone(), entries)
                })
                .collect()
        })
        .unwrap_or_default();
    pb::EventTable {
        version: number(v, "version"),
        all: table_entries(v.get("all")),
        by_label,
    }
}

fn entries_json(entries: &[pb::EventTableEntry]) -> Value {
    entries
        .iter()
        .map(|e| json!({ "name": e.name, "parameters": e.parameters }))
        .collect()
}

/// The PUT body of the client event table.
pub fn event_table_body(request: &pb::SetEventTableRequest) -> Value {
    let by_label: Map<String, Value> = request
        .by_label
        .iter()
        .map(|(label, entries)| (label.clone(), entries_json(&entries.entries)))
        .collect();
    json!({ "all": entries_json(&request.all), "by_label": by_label })
}

/// One line of a watch: an event, or the server's `{"end"}`.
pub fn event(v: &Value) -> pb::Event {
    pb::Event {
        client_id: text(v, "client_id"),
        artifact: text(v, "artifact"),
        time_ms: number(v, "time_ms"),
        row_json: v.get("row").map(Value::to_string).unwrap_or_default(),
        seq: number(v, "seq"),
        frontend: text(v, "frontend"),
        event_id: text(v, "event_id"),
        end: text(v, "end"),
    }
}

/// A collection's or hunt's `parameters`: from the map of strings or the JSON text,
/// never both.
pub fn parameters(map: &HashMap<String, pb::Parameters>, json_text: &str) -> Result<Value, Status> {
    match (map.is_empty(), json_text.trim().is_empty()) {
        (true, true) => Ok(json!({})),
        (false, true) => Ok(map
            .iter()
            .map(|(artifact, p)| (artifact.clone(), json!(p.values)))
            .collect::<Map<String, Value>>()
            .into()),
        (true, false) => match serde_json::from_str::<Value>(json_text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(Status::invalid_argument(
                "parameters_json must be a JSON object: artifact -> parameter -> value",
            )),
            Err(e) => Err(Status::invalid_argument(format!("parameters_json: {e}"))),
        },
        (false, false) => Err(Status::invalid_argument(
            "set either parameters or parameters_json, not both",
        )),
    }
}

/// Adds a request's own limits (if it set any) to a collection or hunt body.
pub fn add_limits(body: &mut Value, limits: Option<&pb::FlowLimits>) {
    if let (Some(limits), Some(object)) = (limits, body.as_object_mut()) {
        object.insert("timeout_s".into(), limits.timeout_s.into());
        object.insert("max_rows".into(), limits.max_rows.into());
        object.insert("max_upload_bytes".into(), limits.max_upload_bytes.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes() {
        for (status, code) in [
            (200, Code::Ok),
            (400, Code::InvalidArgument),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::FailedPrecondition),
            (413, Code::ResourceExhausted),
            (429, Code::ResourceExhausted),
            (503, Code::Unavailable),
            (500, Code::Internal),
        ] {
            assert_eq!(code_of(StatusCode::from_u16(status).unwrap()), code);
        }
        let s = error_status(
            StatusCode::FORBIDDEN,
            br#"{"error":"user `x` may only read"}"#,
        );
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "user `x` may only read");
    }

    #[test]
    fn parameters_come_from_one_form() {
        let mut map = HashMap::new();
        map.insert(
            "A".to_string(),
            pb::Parameters {
                values: [("p".to_string(), "1".to_string())].into(),
            },
        );
        assert_eq!(parameters(&map, "").unwrap(), json!({"A": {"p": "1"}}));
        assert_eq!(
            parameters(&HashMap::new(), r#"{"A":{"p":1}}"#).unwrap(),
            json!({"A": {"p": 1}})
        );
        assert_eq!(parameters(&HashMap::new(), " ").unwrap(), json!({}));
        for bad in ["[1]", "{"] {
            let e = parameters(&HashMap::new(), bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
        }
        assert!(parameters(&map, "{}").is_err());
    }
}
