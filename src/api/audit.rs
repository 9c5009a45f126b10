//! The API's side of the audit trail (docs/security/audit.md): what a change through the
//! API is recorded as (`record_call`, the one hook in `routes::route`), failed and
//! successful logins, and `GET /api/v1/audit` (administrators).
//!
//! Must not: write files (the `audit` module's writer does), or block the executor.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::json;

use crate::api::auth::PasswordRefusal;
use crate::api::routes::{
    json_response, parse_number, shown, ApiCall, ApiError, ApiResult, CallVia,
};
use crate::api::ApiCtx;
use crate::audit::{action, outcome, via, AuditEntry, AuditRange};
use crate::config::Role;
use crate::limits::{
    DEFAULT_AUDIT_PAGE_ROWS, DEFAULT_AUDIT_QUERY_SPAN, MAX_AUDIT_PAGE_ROWS,
    MAX_AUDIT_QUERY_DAYS_COUNT,
};
use crate::runtime::offload::offload;

/// Put in a response's extensions by a handler whose change made something new (a
/// collection's `C.x/F.y`, a hunt's id): the audit entry names it as the target.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// Records `call` unless it only reads (GET, HEAD): who, from where, what, on what, and
/// how it ended (`ok` for 2xx, `refused` for 4xx, `failed` for 5xx; the error's message
/// as detail).
pub fn record_call(ctx: &ApiCtx, call: &ApiCall, result: &ApiResult) {
    if call.method == Method::GET || call.method == Method::HEAD {
        return;
    }
    let (name, mut target) = action_of(call);
    let (status, detail) = match result {
        Ok(response) => {
            if let Some(made) = response.extensions().get::<AuditTarget>() {
                target = made.0.clone();
            }
            (response.status(), None)
        }
        Err(e) => (e.status(), Some(e.to_string())),
    };
    let carried_by = match call.via {
        CallVia::Http => via::HTTP,
        CallVia::Grpc => via::GRPC,
    };
    let entry = AuditEntry::now(
        &call.principal.user,
        carried_by,
        name,
        &target,
        outcome_of(status),
    )
    .with_remote(call.peer)
    .with_detail(detail);
    ctx.audit.record(entry);
}

fn outcome_of(status: StatusCode) -> &'static str {
    if status.is_success() {
        outcome::OK
    } else if status.is_server_error() {
        outcome::FAILED
    } else {
        outcome::REFUSED
    }
}

/// The action a change is recorded as, and its target as the path names it.
fn action_of(call: &ApiCall) -> (&'static str, String) {
    let segments = call.segments();
    match (&call.method, segments.as_slice()) {
        (&Method::POST, ["api", "v1", "clients", id, "collections"]) => {
            (action::COLLECTION_CREATE, shown(id))
        }
        (&Method::POST, ["api", "v1", "clients", id, "collections", flow, "cancel"]) => (
            action::COLLECTION_CANCEL,
            format!("{}/{}", shown(id), shown(flow)),
        ),
        (&Method::POST, ["api", "v1", "clients", id, "labels"]) => {
            (action::LABELS_CHANGE, shown(id))
        }
        (&Method::POST, ["api", "v1", "hunts"]) => (action::HUNT_CREATE, String::new()),
        (&Method::POST, ["api", "v1", "hunts", id, "start"]) => (action::HUNT_START, shown(id)),
        (&Method::POST, ["api", "v1", "hunts", id, "stop"]) => (action::HUNT_STOP, shown(id)),
        (&Method::PUT, ["api", "v1", "events", "client_table"]) => {
            (action::EVENT_TABLE_PUT, "client_table".into())
        }
        (&Method::POST, ["api", "v1", "users"]) => (action::USER_ADD, body_name(&call.body)),
        (&Method::PUT, ["api", "v1", "users", name]) => (user_change(&call.body), shown(name)),
        (&Method::DELETE, ["api", "v1", "users", name]) => (action::USER_REMOVE, shown(name)),
        _ => (
            action::API_CALL,
            format!("{} {}", call.method, shown(&call.path)),
        ),
    }
}

/// `user.passwd` for a change of the password alone, else `user.change`.
fn user_change(body: &[u8]) -> &'static str {
    let fields: Option<BTreeMap<String, serde_json::Value>> = serde_json::from_slice(body).ok();
    match fields {
        Some(f) if f.contains_key("password") && !f.contains_key("role") => action::USER_PASSWD,
        _ => action::USER_CHANGE,
    }
}

/// The `name` of a JSON body, if it has one (never the password).
fn body_name(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    serde_json::from_slice::<Named>(body)
        .map(|n| shown(&n.name))
        .unwrap_or_default()
}

/// A login or Basic check that did not pass (wrong password, throttled, checks busy):
/// `login.failed` for the name tried, refused, with the reason.
pub fn login_failed(ctx: &ApiCtx, user: &str, from: Option<IpAddr>, refusal: &PasswordRefusal) {
    let entry = AuditEntry::now(
        user,
        via::HTTP,
        action::LOGIN_FAILED,
        user,
        outcome::REFUSED,
    )
    .with_remote(from)
    .with_detail(Some(refusal));
    ctx.audit.record(entry);
}

/// A failed Basic check: the user name is the one the header carries (empty if it
/// carries none that decodes).
pub fn basic_failed(ctx: &ApiCtx, header: &str, from: Option<IpAddr>, refusal: &PasswordRefusal) {
    login_failed(ctx, &basic_user(header).unwrap_or_default(), from, refusal);
}

fn basic_user(header: &str) -> Option<String> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.0.to_string())
}

/// A browser session opened (`login`) or ended (`logout`) by `user`.
pub fn session(ctx: &ApiCtx, name: &'static str, user: &str, from: Option<IpAddr>) {
    let entry = AuditEntry::now(user, via::HTTP, name, user, outcome::OK).with_remote(from);
    ctx.audit.record(entry);
}

/// `GET /api/v1/audit?start_ms=&end_ms=&start_row=&rows=` →
/// `{"items":[entry...],"total":N,"start_row","start_ms","end_ms","malformed_lines"}`,
/// newest first, entries with `start_ms <= time_ms < end_ms` (default: the last day).
pub async fn list(ctx: &ApiCtx, call: &ApiCall) -> ApiResult {
    // The permission table says administrators only; this holds until it does.
    if call.principal.role != Role::Administrator {
        return Err(ApiError::Forbidden(format!(
            "user `{}` may not read the audit trail (administrators only)",
            shown(&call.principal.user)
        )));
    }
    let query = Query::parse(&call.query)?;
    let ds = ctx.datastore.clone();
    let page =
        offload(move || crate::audit::read_page(&ds, query.range, query.start_row, query.rows))
            .await
            .map_err(|e| {
                tracing::error!("audit: {e}");
                ApiError::Unavailable(format!("cannot read the audit trail: {e}"))
            })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "items": page.items,
            "total": page.total,
            "start_row": query.start_row,
            "start_ms": query.range.start_ms,
            "end_ms": query.range.end_ms,
            "malformed_lines": page.malformed_lines,
        }),
    ))
}

/// `GET /api/v1/audit`'s query, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Query {
    range: AuditRange,
    start_row: u64,
    rows: u64,
}

impl Query {
    const KEYS: [&'static str; 4] = ["start_ms", "end_ms", "start_row", "rows"];

    fn parse(query: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        if let Some(unknown) = query.keys().find(|k| !Self::KEYS.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{}` (known: {})",
                shown(unknown),
                Self::KEYS.join(", ")
            )));
        }
        // Up to now included.
        let end_ms = parse_number(query, "end_ms", crate::clock::now_ms() + 1)?;
        let span_ms = DEFAULT_AUDIT_QUERY_SPAN.as_millis() as u64;
        let start_ms = parse_number(query, "start_ms", end_ms.saturating_sub(span_ms))?;
        if start_ms > end_ms {
            return Err(ApiError::BadRequest(format!(
                "`start_ms` ({start_ms}) must not be above `end_ms` ({end_ms})"
            )));
        }
        let range = AuditRange { start_ms, end_ms };
        if range.days_count() > MAX_AUDIT_QUERY_DAYS_COUNT {
            return Err(ApiError::BadRequest(format!(
                "the range spans {} days; at most {MAX_AUDIT_QUERY_DAYS_COUNT} are read at once",
                range.days_count()
            )));
        }
        let start_row = parse_number(query, "start_row", 0)?;
        let rows = parse_number(query, "rows", DEFAULT_AUDIT_PAGE_ROWS)?;
        if rows > MAX_AUDIT_PAGE_ROWS {
            return Err(ApiError::BadRequest(format!(
                "`rows` must be at most {MAX_AUDIT_PAGE_ROWS}"
            )));
        }
        Ok(Self {
            range,
            start_row,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<Query, ApiError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Query::parse(&map)
    }

    // Goal: the audit query's defaults and every refusal are what the docs say.
    #[test]
    fn query_defaults_and_refusals() {
        let q = query(&[]).unwrap();
        assert_eq!(q.range.end_ms - q.range.start_ms, 24 * 3600 * 1000);
        assert_eq!((q.start_row, q.rows), (0, DEFAULT_AUDIT_PAGE_ROWS));
        let q = query(&[("start_ms", "5"), ("end_ms", "10"), ("rows", "7")]).unwrap();
        assert_eq!((q.range.start_ms, q.range.end_ms, q.rows), (5, 10, 7));
        for bad in [
            vec![("start_ms", "x")],
            vec![("start_ms", "-1")],
            vec![("start_ms", "11"), ("end_ms", "10")],
            vec![("rows", "1001")],
            vec![("start_ms", "0"), ("end_ms", "99999999999999")],
            vec![("nope", "1")],
        ] {
            let e = query(&bad).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn basic_user_is_the_name_before_the_colon() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("mallory:pw:with:colons")
        );
        assert_eq!(basic_user(&header).as_deref(), Some("mallory"));
        assert_eq!(basic_user("Bearer x"), None);
    }
}
