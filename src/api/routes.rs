//! GUI/API routes (docs/architecture.md, "API shapes"). Every route needs a user, and a
//! role the permission table (`api/permissions.rs`) allows, except a balancer's health
//! checks (`/healthz`, `/readyz`: `api/health.rs`), which reveal nothing. Errors are `{"error": "..."}`
//! with the status that says whose fault it was.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::api::request_checks;
use crate::api::{ApiCtx, ApiResponse};
use crate::config::FrontendRole;
use crate::datastore::{
    self, ArtifactName, ArtifactRequestDoc, Datastore, DatastoreError, Fault, FlowRequest,
    FlowState, FlowStatusDoc,
};
use crate::ids::{ClientId, FlowId};
use crate::limits::{
    FlowLimits, DEFAULT_RESULT_PAGE_ROWS, MAX_API_BODY_BYTES, MAX_EVENT_TABLE_BODY_BYTES,
    MAX_RESULT_PAGE_ROWS, REFUSED_API_BODY_DRAIN,
};
use crate::metrics::{metrics, FlowEvent};
use crate::runtime::offload::offload;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    /// A login with a wrong user or password (the form's 401).
    #[error("wrong user or password")]
    WrongCredentials,
    /// Too many failed logins, or password checks busy: 429 + Retry-After.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is above {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// This server's own failure (e.g. its config file cannot be written): 500.
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Datastore(#[from] DatastoreError),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::WrongCredentials => StatusCode::UNAUTHORIZED,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Datastore(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            Self::Datastore(e) => match e.fault() {
                Fault::Agent => StatusCode::BAD_REQUEST,
                Fault::Overload => StatusCode::SERVICE_UNAVAILABLE,
                Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl From<crate::api::auth::PasswordRefusal> for ApiError {
    fn from(e: crate::api::auth::PasswordRefusal) -> Self {
        use crate::api::auth::PasswordRefusal;
        match e {
            PasswordRefusal::Wrong => Self::WrongCredentials,
            PasswordRefusal::Throttled { retry_after } | PasswordRefusal::Busy { retry_after } => {
                Self::Throttled {
                    message: e.to_string(),
                    retry_after,
                }
            }
        }
    }
}

impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

pub(crate) type ApiResult = Result<ApiResponse, ApiError>;

pub async fn handle(ctx: &ApiCtx, req: hyper::Request<Incoming>) -> ApiResponse {
    // A balancer's health checks: no user, nothing revealed, not counted as API calls.
    if let Some(mut answer) = crate::api::health::answer(req.method(), req.uri().path()) {
        request_checks::add_security_headers(&mut answer);
        return answer;
    }
    metrics().api_requests.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let read = req.method() == Method::GET;
    let from_app = request_checks::from_app(req.headers());
    let result = dispatch(ctx, req).await;
    let m = metrics();
    if read {
        &m.api_read_latency
    } else {
        &m.api_write_latency
    }
    .observe(started.elapsed());
    let disk_full_retry_after = ctx.config.limits.disk_full_retry_after;
    let mut response =
        result.unwrap_or_else(|e| error_response(&e, from_app, disk_full_retry_after));
    request_checks::add_security_headers(&mut response);
    response
}

/// `{"error"}` with the status that says whose fault it was. A 401 invites a Basic prompt
/// only for requests that are not the GUI's own fetches (they show the login form); a full
/// disk's 503 carries `limits.disk_full_retry_after_s`, as agents get it.
fn error_response(
    e: &ApiError,
    from_app: bool,
    disk_full_retry_after: std::time::Duration,
) -> ApiResponse {
    let mut resp = json_response(e.status(), &json!({ "error": e.to_string() }));
    let retry_after = match e {
        ApiError::Unauthorized | ApiError::WrongCredentials => {
            metrics().api_unauthorized.fetch_add(1, Ordering::Relaxed);
            if !from_app {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"packhunt\""),
                );
            }
            None
        }
        ApiError::Throttled { retry_after, .. } => Some(*retry_after),
        ApiError::Datastore(d) if !d.is_not_found() && d.fault() == Fault::Overload => {
            Some(disk_full_retry_after)
        }
        _ => None,
    };
    if let Some(wait) = retry_after {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(wait.as_secs().max(1)),
        );
    }
    resp
}

async fn dispatch(ctx: &ApiCtx, req: hyper::Request<Incoming>) -> ApiResult {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // The GUI's page and assets load without a session (the login form is among them),
    // and the session routes are how a browser gets one.
    if ctx.role == FrontendRole::Master {
        if let Some(answer) = crate::api::assets::serve(&method, &path, req.headers()) {
            return Ok(answer);
        }
    }
    // Users added, removed or changed since the last look count from this request on.
    ctx.auth.refresh_users().await;
    if ctx.role == FrontendRole::Master && segments.as_slice() == ["api", "v1", "session"] {
        return crate::api::login::route(ctx, req).await;
    }
    let principal = match crate::api::auth::authenticate(ctx, &req).await {
        Ok(principal) => principal,
        Err(e) => return refused(req, e).await,
    };
    if ctx.role == FrontendRole::Minion && segments.as_slice() == ["api", "v1", "events", "watch"] {
        return Err(crate::api::watch::on_a_minion(ctx));
    }
    if ctx.role == FrontendRole::Minion && segments.as_slice() != ["metrics"] {
        let e = ApiError::NotFound("a minion serves only /metrics; use the master's API".into());
        return refused(req, e).await;
    }
    let own = crate::api::auth::own_origin(ctx, &req);
    let has_body = crate::api::auth::has_body(&req);
    if let Err(refusal) = request_checks::check_state_change(&method, req.headers(), has_body, &own)
    {
        return refused(req, crate::api::auth::refused(refusal)).await;
    }
    let body_cap = body_cap_bytes(&segments);
    let call = ApiCall {
        principal,
        peer: req
            .extensions()
            .get::<crate::api::auth::PeerAddress>()
            .map(|p| p.0),
        query: parse_query(req.uri().query().unwrap_or("")),
        headers: req.headers().clone(),
        via: CallVia::Http,
        method: method.clone(),
        path: path.clone(),
        body: if method == Method::GET || method == Method::HEAD {
            Bytes::new()
        } else {
            // Read before any answer: over HTTP/2 an answer sent before the client
            // finished sending makes h2 reset the stream, which some clients (curl 7.88
            // on a busy box) report as a failed request although the change was made.
            read_body_in_time(req, body_cap).await?
        },
    };
    route(ctx, &call).await
}

/// The largest body a route takes: the API's general cap, smaller for documents that are
/// smaller by nature.
pub(crate) fn body_cap_bytes(segments: &[&str]) -> usize {
    match segments {
        ["api", "v1", "events", "client_table"] => MAX_EVENT_TABLE_BODY_BYTES,
        _ => MAX_API_BODY_BYTES,
    }
}

/// One authenticated API request, whatever carried it (HTTP/JSON or the gRPC API): who
/// asks, from where, and what. The body has been read (within its route's cap).
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub principal: crate::api::auth::Principal,
    /// The remote address of the connection, when known.
    pub peer: Option<std::net::IpAddr>,
    pub method: Method,
    /// The URL path (`/api/v1/...`), not decoded beyond what routing needs.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Request headers a route reads (`Range` for downloads); empty for gRPC calls.
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub via: CallVia,
}

/// What carried an API call (the audit trail records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallVia {
    /// HTTP/JSON: a script with Basic credentials or the GUI with its session.
    Http,
    /// The gRPC API, with an API client certificate.
    Grpc,
}

impl ApiCall {
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_matches('/').split('/').collect()
    }
}

/// Routes an authenticated call: the one entry the HTTP API and the gRPC API share, so
/// both offer the same routes under the same permissions.
pub async fn route(ctx: &ApiCtx, call: &ApiCall) -> ApiResult {
    let _counted = CallInFlight::new(ctx);
    let result = match crate::api::permissions::check(call) {
        Ok(()) => route_to_handler(ctx, call).await,
        Err(refused) => Err(refused),
    };
    // The one audit hook: every change (and every refused attempt at one), whatever
    // carried it.
    crate::api::audit::record_call(ctx, call, &result);
    result
}

/// Counts a call in `ApiCtx::calls_in_flight` while it is routed (dropped on any end,
/// including a client that goes away mid-call).
struct CallInFlight<'a>(&'a std::cell::Cell<usize>);

impl<'a> CallInFlight<'a> {
    fn new(ctx: &'a ApiCtx) -> Self {
        ctx.calls_in_flight.set(ctx.calls_in_flight.get() + 1);
        Self(&ctx.calls_in_flight)
    }
}

impl Drop for CallInFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

async fn route_to_handler(ctx: &ApiCtx, call: &ApiCall) -> ApiResult {
    let (method, query, body) = (&call.method, &call.query, &call.body);
    let segments = call.segments();
    match (method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => Ok(text_response(metrics().render())),
        (&Method::GET, ["api", "v1", "artifacts"]) => Ok(json_response(
            StatusCode::OK,
            &crate::artifacts::catalogue_json(),
        )),
        (&Method::GET, ["api", "v1", "frontends"]) => Ok(frontends(ctx)),
        (&Method::GET, ["api", "v1", "audit"]) => crate::api::audit::list(ctx, call).await,
        (&Method::GET, ["api", "v1", "clients"]) => crate::api::clients::list(ctx, query),
        (&Method::GET, ["api", "v1", "clients", id]) => {
            crate::api::clients::get(ctx, &ClientId::parse(id)?).await
        }
        (&Method::POST, ["api", "v1", "clients", id, "labels"]) => {
            let client_id = ClientId::parse(id)?;
            crate::api::hunts::change_labels(ctx, &client_id, body).await
        }
        (&Method::POST, ["api", "v1", "hunts"]) => crate::api::hunts::create(ctx, body).await,
        (&Method::GET, ["api", "v1", "events", "client_table"]) => crate::api::events::get(ctx),
        (&Method::GET, ["api", "v1", "events", "watch"]) => crate::api::watch::watch(ctx, query),
        (&Method::PUT, ["api", "v1", "events", "client_table"]) => {
            crate::api::events::put(ctx, body).await
        }
        (&Method::GET, ["api", "v1", "live", "dashboard"]) => crate::api::live::dashboard(ctx),
        (&Method::GET, ["api", "v1", "live", "hunts"]) => crate::api::live::hunts(ctx),
        (&Method::GET, ["api", "v1", "live", "hunts", id]) => crate::api::live::hunt(ctx, id),
        (&Method::GET, ["api", "v1", "live", "clients", id, "collections", flow]) => {
            crate::api::live::collection(ctx, id, flow).await
        }
        (&Method::GET, ["api", "v1", "hunts"]) => crate::api::hunts::list(ctx),
        (&Method::GET, ["api", "v1", "hunts", id]) => crate::api::hunts::get(ctx, id),
        (&Method::POST, ["api", "v1", "hunts", id, "start"]) => {
            crate::api::hunts::start(ctx, id).await
        }
        (&Method::POST, ["api", "v1", "hunts", id, "stop"]) => {
            crate::api::hunts::stop(ctx, id, body).await
        }
        (&Method::GET, ["api", "v1", "hunts", id, "export.zip"]) => {
            crate::api::export::hunt_zip(ctx, id).await
        }
        (&Method::GET, ["api", "v1", "hunts", id, "results"]) => {
            crate::api::hunts::results(ctx, id, query).await
        }
        (&Method::POST, ["api", "v1", "clients", id, "collections"]) => {
            let client_id = ClientId::parse(id)?;
            create_collection(ctx, &client_id, body).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections"]) => {
            let (ds, client) = (ctx.datastore.clone(), ClientId::parse(id)?);
            offload(move || list_collections(&ds, &client)).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections", flow]) => {
            let (ds, client, flow) = (
                ctx.datastore.clone(),
                ClientId::parse(id)?,
                FlowId::parse(flow)?,
            );
            offload(move || get_collection(&ds, &client, &flow)).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "monitoring"]) => {
            let (ds, client) = (ctx.datastore.clone(), ClientId::parse(id)?);
            offload(move || crate::api::monitoring::list(&ds, &client)).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "monitoring", artifact]) => {
            let (ds, client, artifact, query) = (
                ctx.datastore.clone(),
                ClientId::parse(id)?,
                artifact.to_string(),
                query.clone(),
            );
            offload(move || crate::api::monitoring::rows(&ds, &client, &artifact, &query)).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections", flow, "results"])
            if query.contains_key("format") =>
        {
            let (client, flow) = (ClientId::parse(id)?, FlowId::parse(flow)?);
            crate::api::export::results(ctx, client, flow, query).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections", flow, "export.zip"]) => {
            let (client, flow) = (ClientId::parse(id)?, FlowId::parse(flow)?);
            crate::api::export::collection_zip(ctx, client, flow).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections", flow, "uploads"]) => {
            let (client, flow) = (ClientId::parse(id)?, FlowId::parse(flow)?);
            crate::api::uploads::list(ctx, client, flow, query).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections", flow, "uploads", n]) => {
            let (client, flow) = (ClientId::parse(id)?, FlowId::parse(flow)?);
            crate::api::uploads::download(ctx, client, flow, n, &call.headers).await
        }
        (&Method::GET, ["api", "v1", "users"]) => crate::api::users::list(ctx).await,
        (&Method::POST, ["api", "v1", "users"]) => crate::api::users::add(ctx, call).await,
        (&Method::PUT, ["api", "v1", "users", name]) => {
            crate::api::users::update(ctx, call, name).await
        }
        (&Method::DELETE, ["api", "v1", "users", name]) => {
            crate::api::users::remove(ctx, call, name).await
        }
        (&Method::POST, ["api", "v1", "clients", id, "collections", flow, "cancel"]) => {
            let (client, flow) = (ClientId::parse(id)?, FlowId::parse(flow)?);
            crate::api::cancel::collection(ctx, client, flow).await
        }
        (&Method::GET, ["api", "v1", "clients", id, "collections", flow, "results"]) => {
            let (ds, client, flow, query) = (
                ctx.datastore.clone(),
                ClientId::parse(id)?,
                FlowId::parse(flow)?,
                query.clone(),
            );
            offload(move || results(&ds, &client, &flow, &query)).await
        }
        _ => Err(ApiError::NotFound(format!(
            "no route for {method} {}",
            shown(&call.path)
        ))),
    }
}

/// Answers `e` once the request's body (if any) has been read and thrown away, within
/// `REFUSED_API_BODY_DRAIN` and `MAX_API_BODY_BYTES`: over HTTP/2 an answer sent before
/// the body was read ends in a stream reset, which some clients report instead of the
/// answer.
async fn refused(req: hyper::Request<Incoming>, e: ApiError) -> ApiResult {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let _ =
            crate::runtime::deadline::with_deadline(REFUSED_API_BODY_DRAIN, read_body(req)).await;
    }
    Err(e)
}

/// `read_body_capped` within `GUI_REQUEST_BODY_DEADLINE`: a body trickled byte by byte
/// must not hold its connection forever (408 instead).
async fn read_body_in_time(
    req: hyper::Request<Incoming>,
    max_bytes: usize,
) -> Result<Bytes, ApiError> {
    let deadline = crate::limits::GUI_REQUEST_BODY_DEADLINE;
    crate::runtime::deadline::with_deadline(deadline, read_body_capped(req, max_bytes))
        .await
        .unwrap_or_else(|| {
            Err(ApiError::BadRequest(format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            )))
        })
}

async fn read_body(req: hyper::Request<Incoming>) -> Result<Bytes, ApiError> {
    read_body_capped(req, MAX_API_BODY_BYTES).await
}

/// Reads a body of at most `max_bytes` (413 above) for routes whose documents are
/// smaller than the API's general cap.
pub(crate) async fn read_body_capped(
    req: hyper::Request<Incoming>,
    max_bytes: usize,
) -> Result<Bytes, ApiError> {
    let limited = Limited::new(req.into_body(), max_bytes);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge { max_bytes })
        }
        Err(e) => Err(ApiError::BadRequest(format!("reading body: {e}"))),
    }
}

fn frontends(ctx: &ApiCtx) -> ApiResponse {
    let items: Vec<serde_json::Value> = ctx
        .presence
        .frontends()
        .into_iter()
        .map(|f| {
            json!({
                "name": &*f.name,
                "role": f.role,
                "connected_clients": f.connected_clients,
                "up": f.up,
                "flows_finished": f.flows_finished,
                "flows_failed": f.flows_failed,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "items": items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionBody {
    artifacts: Vec<String>,
    #[serde(default)]
    parameters: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    timeout_s: Option<u64>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_upload_bytes: Option<u64>,
}

/// A collection's or hunt's own limits from its request body: a value absent takes the
/// config's default; 0 means no limit.
pub(crate) fn resolve_limits(
    (timeout_s, max_rows, max_upload_bytes): (Option<u64>, Option<u64>, Option<u64>),
    defaults: &FlowLimits,
) -> FlowLimits {
    FlowLimits {
        timeout_s: timeout_s.unwrap_or(defaults.timeout_s),
        max_rows: max_rows.unwrap_or(defaults.max_rows),
        max_upload_bytes: max_upload_bytes.unwrap_or(defaults.max_upload_bytes),
    }
}

/// The artifacts a collection or hunt asks for, checked against the catalogue (unknown
/// artifact or parameter: 400 naming it).
pub(crate) fn requested_artifacts(
    artifacts: &[String],
    parameters: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> Result<Vec<ArtifactRequestDoc>, ApiError> {
    let checked = crate::artifacts::validate_request(artifacts, parameters)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let docs = checked
        .into_iter()
        .map(|(name, parameters)| {
            Ok(ArtifactRequestDoc {
                name: ArtifactName::parse(&name)?,
                parameters,
            })
        })
        .collect::<Result<Vec<_>, DatastoreError>>()?;
    Ok(docs)
}

async fn create_collection(ctx: &ApiCtx, client_id: &ClientId, body: &[u8]) -> ApiResult {
    let body: CollectionBody =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let artifacts = requested_artifacts(&body.artifacts, &body.parameters)?;
    let client = ctx.datastore.client(client_id);
    let flow_id = FlowId::random();
    let now_us = crate::clock::now_us();
    let request = FlowRequest {
        flow_id: flow_id.clone(),
        client_id: client_id.clone(),
        artifacts,
        create_time_ms: now_us / 1000,
        create_time_us: now_us,
        hunt_id: None,
        limits: resolve_limits(
            (body.timeout_s, body.max_rows, body.max_upload_bytes),
            &ctx.config.limits.collection,
        ),
    };
    let frame = crate::protocol::tasks::task_frame(request.clone().into_task());
    // An agent that has just connected may not have a folder yet (its ClientInfo upload
    // makes it); its id is authenticated, so the collection makes the folder instead.
    let connected = ctx.presence.frontend_of(client_id).is_some();
    let written = offload({
        let client = client.clone();
        move || {
            if !client.path().exists() {
                if !connected {
                    return Err(ApiError::NotFound(format!(
                        "client {} has never connected",
                        client.id()
                    )));
                }
                datastore::atomic::ensure_dir(client.path(), client.fsync_documents())?;
            }
            datastore::write_scheduled(&client, &request)?;
            Ok(())
        }
    });
    written.await?;
    metrics().flow(FlowEvent::Scheduled);
    // Queued on disk first, so an agent that connects at any moment finds it; the agent is
    // told before the fsyncs, which then run while it works, and the caller hears back
    // only once the flow is durable.
    ctx.fleet.notify(client_id, &flow_id, frame).await;
    let flow = flow_id.clone();
    offload(move || datastore::sync_scheduled(&client, &flow)).await?;
    let mut response = json_response(StatusCode::OK, &json!({ "flow_id": flow_id.as_str() }));
    response
        .extensions_mut()
        .insert(crate::api::audit::AuditTarget(format!(
            "{client_id}/{flow_id}"
        )));
    Ok(response)
}

fn list_collections(ds: &Datastore, client_id: &ClientId) -> ApiResult {
    let client = ds.client(client_id);
    let mut items = Vec::new();
    for flow_id in datastore::list_flows(&client)? {
        if let Ok(doc) = live_status(ds, client_id, &flow_id) {
            items.push(status_json(&doc));
        }
    }
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

fn get_collection(ds: &Datastore, client_id: &ClientId, flow_id: &FlowId) -> ApiResult {
    let doc = live_status(ds, client_id, flow_id)?;
    Ok(json_response(StatusCode::OK, &status_json(&doc)))
}

/// status.json, with rows counted from the result sets while the flow is in progress.
pub(crate) fn live_status(
    ds: &Datastore,
    client_id: &ClientId,
    flow_id: &FlowId,
) -> Result<FlowStatusDoc, ApiError> {
    let client = ds.client(client_id);
    let dir = client.flow(flow_id);
    let mut doc = match datastore::read_status(&client, flow_id) {
        // A hunt recruit its agent has not answered yet: scheduled, from its queue entry.
        Err(e) if e.is_not_found() => match datastore::flow::queued_request(&client, flow_id) {
            Ok(request) => return Ok(FlowStatusDoc::scheduled(&request)),
            Err(_) => return Err(e.into()),
        },
        other => other?,
    };
    if doc.state == FlowState::InProgress {
        let request = datastore::flow::queued_request(&client, flow_id)?;
        doc.artifacts.clear();
        let (mut rows, mut bytes) = (0, 0);
        for a in &request.artifacts {
            let s = datastore::summary(&dir.result_paths(&a.name))?;
            rows += s.rows;
            bytes += s.bytes;
            doc.artifacts.push(datastore::ArtifactRowsDoc {
                name: a.name.clone(),
                rows: s.rows,
            });
        }
        doc.total_rows = rows;
        doc.total_bytes = bytes;
        (doc.uploaded_files, doc.uploaded_bytes) = datastore::uploads::totals(&dir)?;
    }
    Ok(doc)
}

fn status_json(doc: &FlowStatusDoc) -> serde_json::Value {
    serde_json::to_value(doc).expect("status documents serialise")
}

fn results(
    ds: &Datastore,
    client_id: &ClientId,
    flow_id: &FlowId,
    query: &BTreeMap<String, String>,
) -> ApiResult {
    let client = ds.client(client_id);
    let dir = client.flow(flow_id);
    let request = datastore::flow::queued_request(&client, flow_id)?;
    let artifact = match query.get("artifact") {
        Some(a) => a.clone(),
        None => request
            .artifacts
            .first()
            .map(|a| a.name.to_string())
            .unwrap_or_default(),
    };
    if !request
        .artifacts
        .iter()
        .any(|a| a.name.as_str() == artifact)
    {
        return Err(ApiError::BadRequest(format!(
            "flow {flow_id} did not collect `{}`",
            shown(&artifact)
        )));
    }
    let start_row = parse_number(query, "start_row", 0)?;
    let rows = parse_number(query, "rows", DEFAULT_RESULT_PAGE_ROWS)?.min(MAX_RESULT_PAGE_ROWS);
    let (total, page) = datastore::read_rows(
        &dir.result_paths(&ArtifactName::parse(&artifact)?),
        start_row,
        rows,
    )?;
    // Rows go out as the agent sent them: spliced in, not re-encoded.
    let mut out = Vec::with_capacity(64 + page.iter().map(|r| r.len() + 1).sum::<usize>());
    out.extend_from_slice(
        format!("{{\"total_rows\":{total},\"start_row\":{start_row},\"rows\":[").as_bytes(),
    );
    for (i, row) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(row);
    }
    out.extend_from_slice(b"]}");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(out),
    ))
}

pub(crate) fn parse_number(
    query: &BTreeMap<String, String>,
    key: &str,
    default: u64,
) -> Result<u64, ApiError> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("`{key}` must be a non-negative integer"))),
    }
}

/// `a=1&b=x%20y` -> map; later keys win.
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || {
            std::str::from_utf8(bytes.get(i + 1..i + 3)?)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match (bytes[i], hex()) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> ApiResponse {
    bytes_response(
        status,
        "application/json",
        Bytes::from(serde_json::to_vec(value).expect("JSON values serialise")),
    )
}

fn text_response(text: String) -> ApiResponse {
    bytes_response(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(text),
    )
}

pub(crate) fn bytes_response(status: StatusCode, content_type: &str, body: Bytes) -> ApiResponse {
    hyper::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(crate::api::ApiBody::whole(body))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("search=label%3Aprod&limit=5&x=a+b&bad=%zz&tail=%4");
        assert_eq!(q["search"], "label:prod");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["tail"], "%4");
    }
}

#[cfg(test)]
pub(crate) mod decoder_props;
