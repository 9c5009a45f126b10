//! The `PackhuntApi` service: each RPC becomes the JSON API's request (method, path,
//! query, body), answered by `api::routes::route` on the priority executor (`bridge`),
//! and the JSON answer becomes the RPC's messages (`convert`). Who calls comes from the
//! verified certificate of the connection; how many calls run at once is bounded.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::Method;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::bridge::{AnswerBody, BridgeError, CallQueue};
use super::convert;
use super::pb::{self, packhunt_api_server::PackhuntApi};
use crate::api::auth::Principal;
use crate::api::routes::{ApiCall, CallVia};
use crate::config::api_client::{ApiClientIdentity, IdentityError};
use crate::limits::{
    GRPC_RESULT_PAGE_ROWS, GRPC_STREAM_CHUNKS_QUEUED_COUNT, MAX_GRPC_CALLS_IN_FLIGHT_COUNT,
    MAX_GRPC_STREAM_LINE_BYTES,
};
use crate::metrics::metrics;

/// What TLS established about a connection: the API client its verified certificate
/// names (or why it names none), and the peer's address.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub identity: Result<ApiClientIdentity, IdentityError>,
    pub remote: Option<SocketAddr>,
}

#[derive(Clone)]
pub struct ApiService {
    queue: CallQueue,
    in_flight: Arc<Semaphore>,
}

impl ApiService {
    pub fn new(queue: CallQueue) -> Self {
        Self {
            queue,
            in_flight: Arc::new(Semaphore::new(MAX_GRPC_CALLS_IN_FLIGHT_COUNT)),
        }
    }

    /// Who makes the call, with its in-flight slot; refused when the certificate names
    /// no usable API client or every slot is taken.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let result: Result<Caller, Status> = (|| {
            let info = request
                .extensions()
                .get::<ConnInfo>()
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            let identity = info.identity.as_ref().map_err(|e| {
                metrics()
                    .grpc_identities_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(remote = ?info.remote, "gRPC API call refused: {e}");
                Status::unauthenticated(e.to_string())
            })?;
            let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
                metrics().grpc_calls_busy.fetch_add(1, Ordering::Relaxed);
                Status::unavailable(format!(
                    "{MAX_GRPC_CALLS_IN_FLIGHT_COUNT} gRPC calls are in flight; retry shortly"
                ))
            })?;
            Ok(Caller {
                queue: self.queue.clone(),
                principal: Principal {
                    user: identity.name.clone(),
                    role: identity.role,
                },
                peer: info.remote.map(|a| a.ip()),
                _in_flight: InFlight::new(permit),
            })
        })();
        if let Err(status) = &result {
            count(status.code());
        }
        result
    }
}

/// One call's slot among `MAX_GRPC_CALLS_IN_FLIGHT_COUNT`, shown in the in-flight gauge.
struct InFlight(#[allow(dead_code)] OwnedSemaphorePermit);

impl InFlight {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics()
            .grpc_calls_in_flight
            .fetch_add(1, Ordering::Relaxed);
        Self(permit)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics()
            .grpc_calls_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn count(code: Code) {
    metrics().grpc_call(code as i32);
}

/// Counts a unary call's outcome and wraps its answer.
fn answered<T>(result: Result<T, Status>) -> Result<Response<T>, Status> {
    match result {
        Ok(message) => {
            count(Code::Ok);
            Ok(Response::new(message))
        }
        Err(status) => {
            count(status.code());
            Err(status)
        }
    }
}

/// A caller that holds an in-flight slot until dropped (with its stream, for streams).
struct Caller {
    queue: CallQueue,
    principal: Principal,
    peer: Option<IpAddr>,
    _in_flight: InFlight,
}

type Query = BTreeMap<String, String>;

impl Caller {
    fn api_call(
        &self,
        method: Method,
        path: String,
        query: Query,
        body: Option<&Value>,
    ) -> ApiCall {
        ApiCall {
            principal: self.principal.clone(),
            peer: self.peer,
            method,
            path,
            query,
            headers: http::HeaderMap::new(),
            body: body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())),
            via: CallVia::Grpc,
        }
    }

    async fn answer(
        &self,
        method: Method,
        path: String,
        query: Query,
        body: Option<&Value>,
    ) -> Result<super::bridge::Answer, Status> {
        let call = self.api_call(method, path, query, body);
        self.queue.call(call).await.map_err(|e| match e {
            BridgeError::Busy => {
                metrics().grpc_calls_busy.fetch_add(1, Ordering::Relaxed);
                Status::unavailable(e.to_string())
            }
            BridgeError::Stopped => Status::unavailable(e.to_string()),
        })
    }

    /// A call whose answer is one JSON document.
    async fn json(
        &self,
        method: Method,
        path: String,
        query: Query,
        body: Option<&Value>,
    ) -> Result<Value, Status> {
        let answer = self.answer(method, path, query, body).await?;
        let AnswerBody::Whole(bytes) = answer.body else {
            return Err(Status::internal(
                "the route streamed an answer to a unary call",
            ));
        };
        if !answer.status.is_success() {
            return Err(convert::error_status(answer.status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("the route's answer is not JSON: {e}")))
    }

    async fn get(&self, path: String, query: Query) -> Result<Value, Status> {
        self.json(Method::GET, path, query, None).await
    }

    async fn post(&self, path: String, body: &Value) -> Result<Value, Status> {
        self.json(Method::POST, path, Query::new(), Some(body))
            .await
    }
}

/// An id that goes into a path segment: what the API's ids are made of, nothing that
/// could reach another route.
fn id<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if value.is_empty() || value.len() > 128 || !value.chars().all(allowed) {
        let shown: String = value.chars().take(64).collect();
        return Err(Status::invalid_argument(format!(
            "{field} `{shown}` is not an id"
        )));
    }
    Ok(value)
}

fn query<const N: usize>(pairs: [(&str, String); N]) -> Query {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

pub type Rows<T> = ReceiverStream<Result<T, Status>>;

/// Streams a paged result set: GETs `path` page after page (`start_row`, `rows`) from
/// `start_row` until the rows run out or `max_rows` were sent, one message per row.
fn paged<T: Send + 'static>(
    caller: Caller,
    path: String,
    mut base: Query,
    start_row: u64,
    max_rows: u64,
    make: fn(&Value, u64, u64) -> T,
) -> Rows<T> {
    let (tx, rx) = mpsc::channel(GRPC_STREAM_CHUNKS_QUEUED_COUNT);
    tokio::spawn(async move {
        let (mut next, mut sent) = (start_row, 0u64);
        let code = loop {
            let want = match max_rows {
                0 => GRPC_RESULT_PAGE_ROWS,
                max => GRPC_RESULT_PAGE_ROWS.min(max - sent),
            };
            if want == 0 {
                break Code::Ok;
            }
            base.insert("start_row".into(), next.to_string());
            base.insert("rows".into(), want.to_string());
            let page = match caller.get(path.clone(), base.clone()).await {
                Ok(page) => page,
                Err(status) => {
                    let code = status.code();
                    let _ = tx.send(Err(status)).await;
                    break code;
                }
            };
            let total = page.get("total_rows").and_then(Value::as_u64).unwrap_or(0);
            let rows = page.get("rows").and_then(Value::as_array);
            let rows = rows.map_or(&[][..], Vec::as_slice);
            for row in rows {
                if tx.send(Ok(make(row, next, total))).await.is_err() {
                    return count(Code::Cancelled);
                }
                next += 1;
                sent += 1;
            }
            if rows.is_empty() || next >= total {
                break Code::Ok;
            }
        };
        count(code);
    });
    ReceiverStream::new(rx)
}

fn result_row(row: &Value, index: u64, total: u64) -> pb::ResultRow {
    pb::ResultRow {
        row_index: index,
        json: row.to_string(),
        total_rows: total,
    }
}

fn hunt_result_row(item: &Value, index: u64, total: u64) -> pb::HuntResultRow {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    pb::HuntResultRow {
        row_index: index,
        client_id: text("client_id"),
        flow_id: text("flow_id"),
        json: item.get("row").unwrap_or(&Value::Null).to_string(),
        total_rows: total,
    }
}

/// Turns a watch's ndjson chunks into events, until the watch ends or the reader leaves.
fn watch_events(caller: Caller, body: AnswerBody) -> Rows<pb::Event> {
    let (tx, rx) = mpsc::channel(GRPC_STREAM_CHUNKS_QUEUED_COUNT);
    tokio::spawn(async move {
        let _caller = caller;
        let mut pending: Vec<u8> = Vec::new();
        let mut chunks = match body {
            AnswerBody::Whole(bytes) => {
                futures::stream::once(async move { Ok::<_, String>(bytes) }).boxed()
            }
            AnswerBody::Streamed(streamed) => streamed_chunks(streamed).boxed(),
        };
        let code = loop {
            let chunk = tokio::select! {
                _ = tx.closed() => break Code::Cancelled,
                chunk = chunks.next() => chunk,
            };
            let bytes = match chunk {
                None => break Code::Ok,
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => {
                    let _ = tx.send(Err(Status::internal(e))).await;
                    break Code::Internal;
                }
            };
            pending.extend_from_slice(&bytes);
            if pending.len() > MAX_GRPC_STREAM_LINE_BYTES && !pending.contains(&b'\n') {
                let message = format!("a watch line is above {MAX_GRPC_STREAM_LINE_BYTES} bytes");
                let _ = tx.send(Err(Status::resource_exhausted(message))).await;
                break Code::ResourceExhausted;
            }
            let mut sent_all = true;
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(value) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if tx.send(Ok(convert::event(&value))).await.is_err() {
                    sent_all = false;
                    break;
                }
            }
            if !sent_all {
                break Code::Cancelled;
            }
        };
        count(code);
    });
    ReceiverStream::new(rx)
}

fn streamed_chunks(
    streamed: super::bridge::StreamedBody,
) -> impl futures::Stream<Item = Result<Bytes, String>> {
    // The body (and with it the producer's "reader is here" wire) lives as long as this
    // stream: the chunks are read from it in place.
    futures::stream::unfold(streamed, |mut s| async move {
        let next = s.chunks.next().await?;
        Some((next, s))
    })
}

#[tonic::async_trait]
impl PackhuntApi for ApiService {
    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let connected = match pb::ConnectedFilter::try_from(r.connected) {
            Ok(pb::ConnectedFilter::Connected) => "true",
            Ok(pb::ConnectedFilter::Disconnected) => "false",
            _ => "",
        };
        let q = query([
            ("search", r.search),
            ("start", r.start.to_string()),
            (
                "limit",
                if r.limit == 0 {
                    String::new()
                } else {
                    r.limit.to_string()
                },
            ),
            ("connected", connected.to_string()),
        ]);
        let answer = caller.get("/api/v1/clients".into(), q).await;
        answered(answer.map(|v| convert::clients(&v)))
    }

    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let client = id("client_id", &request.get_ref().client_id)?;
            caller
                .get(format!("/api/v1/clients/{client}"), Query::new())
                .await
        };
        answered(answer.await.map(|v| convert::client(&v)))
    }

    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CreateCollectionResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let answer = async {
            let client = id("client_id", &r.client_id)?;
            let mut body = json!({
                "artifacts": r.artifacts,
                "parameters": convert::parameters(&r.parameters, &r.parameters_json)?,
            });
            convert::add_limits(&mut body, r.limits.as_ref());
            let path = format!("/api/v1/clients/{client}/collections");
            caller.post(path, &body).await
        };
        answered(answer.await.map(|v| pb::CreateCollectionResponse {
            flow_id: v["flow_id"].as_str().unwrap_or("").to_string(),
        }))
    }

    async fn list_collections(
        &self,
        request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let client = id("client_id", &request.get_ref().client_id)?;
            let path = format!("/api/v1/clients/{client}/collections");
            caller.get(path, Query::new()).await
        };
        answered(answer.await.map(|v| convert::collections(&v)))
    }

    async fn get_collection(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let r = request.get_ref();
            let (client, flow) = (id("client_id", &r.client_id)?, id("flow_id", &r.flow_id)?);
            let path = format!("/api/v1/clients/{client}/collections/{flow}");
            caller.get(path, Query::new()).await
        };
        answered(answer.await.map(|v| convert::collection(&v)))
    }

    type GetResultsStream = Rows<pb::ResultRow>;

    async fn get_results(
        &self,
        request: Request<pb::GetResultsRequest>,
    ) -> Result<Response<Self::GetResultsStream>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let ids = id("client_id", &r.client_id).and_then(|c| Ok((c, id("flow_id", &r.flow_id)?)));
        let (client, flow) = ids.inspect_err(|s| count(s.code()))?;
        let path = format!("/api/v1/clients/{client}/collections/{flow}/results");
        let base = query([("artifact", r.artifact.clone())]);
        Ok(Response::new(paged(
            caller,
            path,
            base,
            r.start_row,
            r.max_rows,
            result_row,
        )))
    }

    async fn cancel_collection(
        &self,
        request: Request<pb::CancelCollectionRequest>,
    ) -> Result<Response<pb::CancelCollectionResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let r = request.get_ref();
            let (client, flow) = (id("client_id", &r.client_id)?, id("flow_id", &r.flow_id)?);
            let path = format!("/api/v1/clients/{client}/collections/{flow}/cancel");
            caller.post(path, &json!({})).await
        };
        answered(answer.await.map(|v| pb::CancelCollectionResponse {
            flow_id: v["flow_id"].as_str().unwrap_or("").to_string(),
            state: v["state"].as_str().unwrap_or("").to_string(),
        }))
    }

    async fn list_hunts(
        &self,
        request: Request<pb::ListHuntsRequest>,
    ) -> Result<Response<pb::ListHuntsResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = caller.get("/api/v1/hunts".into(), Query::new()).await;
        answered(answer.map(|v| convert::hunts(&v)))
    }

    async fn get_hunt(
        &self,
        request: Request<pb::GetHuntRequest>,
    ) -> Result<Response<pb::Hunt>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let hunt = id("hunt_id", &request.get_ref().hunt_id)?;
            caller
                .get(format!("/api/v1/hunts/{hunt}"), Query::new())
                .await
        };
        answered(answer.await.map(|v| convert::hunt(&v)))
    }

    async fn create_hunt(
        &self,
        request: Request<pb::CreateHuntRequest>,
    ) -> Result<Response<pb::CreateHuntResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let answer = async {
            let condition = r.condition.unwrap_or_default();
            let mut body = json!({
                "artifacts": r.artifacts,
                "parameters": convert::parameters(&r.parameters, &r.parameters_json)?,
                "condition": { "labels": condition.labels, "os": condition.os },
                "expires_ms": r.expires_ms,
            });
            convert::add_limits(&mut body, r.limits.as_ref());
            caller.post("/api/v1/hunts".into(), &body).await
        };
        answered(answer.await.map(|v| pb::CreateHuntResponse {
            hunt_id: v["hunt_id"].as_str().unwrap_or("").to_string(),
        }))
    }

    async fn start_hunt(
        &self,
        request: Request<pb::StartHuntRequest>,
    ) -> Result<Response<pb::HuntStateResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let hunt = id("hunt_id", &request.get_ref().hunt_id)?;
            caller
                .post(format!("/api/v1/hunts/{hunt}/start"), &json!({}))
                .await
        };
        answered(answer.await.map(|v| convert::hunt_state(&v)))
    }

    async fn stop_hunt(
        &self,
        request: Request<pb::StopHuntRequest>,
    ) -> Result<Response<pb::HuntStateResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = async {
            let r = request.get_ref();
            let hunt = id("hunt_id", &r.hunt_id)?;
            let body = json!({ "cancel_flows": r.cancel_flows });
            caller
                .post(format!("/api/v1/hunts/{hunt}/stop"), &body)
                .await
        };
        answered(answer.await.map(|v| convert::hunt_state(&v)))
    }

    type GetHuntResultsStream = Rows<pb::HuntResultRow>;

    async fn get_hunt_results(
        &self,
        request: Request<pb::GetHuntResultsRequest>,
    ) -> Result<Response<Self::GetHuntResultsStream>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let hunt = id("hunt_id", &r.hunt_id).inspect_err(|s| count(s.code()))?;
        let path = format!("/api/v1/hunts/{hunt}/results");
        let base = query([("artifact", r.artifact.clone())]);
        Ok(Response::new(paged(
            caller,
            path,
            base,
            r.start_row,
            r.max_rows,
            hunt_result_row,
        )))
    }

    type WatchEventsStream = Rows<pb::Event>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let q = query([("artifact", r.artifact), ("client_id", r.client_id)]);
        let answer = caller
            .answer(Method::GET, "/api/v1/events/watch".into(), q, None)
            .await
            .inspect_err(|s| count(s.code()))?;
        if !answer.status.is_success() {
            let status = match answer.body {
                AnswerBody::Whole(bytes) => convert::error_status(answer.status, &bytes),
                AnswerBody::Streamed(_) => Status::new(
                    convert::code_of(answer.status),
                    format!("the API answered {}", answer.status),
                ),
            };
            count(status.code());
            return Err(status);
        }
        Ok(Response::new(watch_events(caller, answer.body)))
    }

    async fn list_artifacts(
        &self,
        request: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        let caller = self.caller(&request)?;
        let answer = caller.get("/api/v1/artifacts".into(), Query::new()).await;
        answered(answer.map(|v| convert::artifacts(&v)))
    }

    async fn get_event_table(
        &self,
        request: Request<pb::GetEventTableRequest>,
    ) -> Result<Response<pb::EventTable>, Status> {
        let caller = self.caller(&request)?;
        let path = "/api/v1/events/client_table".to_string();
        let answer = caller.get(path, Query::new()).await;
        answered(answer.map(|v| convert::event_table(&v)))
    }

    async fn set_event_table(
        &self,
        request: Request<pb::SetEventTableRequest>,
    ) -> Result<Response<pb::SetEventTableResponse>, Status> {
        let caller = self.caller(&request)?;
        let body = convert::event_table_body(request.get_ref());
        let path = "/api/v1/events/client_table".to_string();
        let answer = caller
            .json(Method::PUT, path, Query::new(), Some(&body))
            .await;
        answered(answer.map(|v| pb::SetEventTableResponse {
            version: v["version"].as_u64().unwrap_or(0),
        }))
    }
}
