//! One upload request from an agent: decode the frame, check the agent may write where
//! it asks, hand the bytes to the datastore, and answer with an `UploadAck`.
//! Every refusal says whose fault it was (status code + metric reason) and writes nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::datastore::{client_info, DatastoreError, Fault};
use crate::ids::{ClientId, FlowId, IdError};
use crate::metrics::{metrics, RejectReason};
use crate::protocol::framing::{self, FrameError};
use crate::protocol::pb::{self, upload_ack};
use crate::sessions::flows::{BatchOutcome, OpenFlows};
use crate::shard::ctx::ShardCtx;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload is above max_upload_bytes ({max_bytes} bytes)")]
    TooLarge { max_bytes: u64 },
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("upload carries no message")]
    Empty,
    #[error("{0}")]
    BadId(#[from] IdError),
    #[error("flow {flow} is not a collection of client {client}")]
    NotYourFlow { flow: String, client: ClientId },
    #[error("artifact `{artifact}` was not requested in flow {flow}")]
    ArtifactNotRequested { flow: FlowId, artifact: String },
    #[error("flow {flow} is already {state}; no more results are taken")]
    FlowClosed { flow: FlowId, state: String },
    #[error("{0}")]
    Datastore(#[from] DatastoreError),
}

impl UploadError {
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::TooLarge { .. } | Self::Frame(FrameError::TooLarge { .. }) => RejectReason::TooLarge,
            Self::Frame(_) | Self::Empty => RejectReason::BadFrame,
            Self::BadId(_) | Self::ArtifactNotRequested { .. } => RejectReason::BadName,
            Self::NotYourFlow { .. } => RejectReason::NotYourFlow,
            Self::FlowClosed { .. } => RejectReason::FlowClosed,
            Self::Datastore(e) => match e {
                DatastoreError::Jsonl { .. } => RejectReason::BadJsonl,
                e if e.fault() == Fault::Agent => RejectReason::BadName,
                // A full disk: 503 so the agent keeps the batch and backs off (DESIGN.md).
                e if e.fault() == Fault::Overload => RejectReason::Overloaded,
                _ => RejectReason::Internal,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.reason() {
            RejectReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::NotYourFlow => StatusCode::FORBIDDEN,
            RejectReason::FlowClosed => StatusCode::CONFLICT,
            RejectReason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            RejectReason::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Status and ack frame to answer an upload with.
pub struct Answer {
    pub status: StatusCode,
    pub ack: pb::UploadAck,
    /// Sent as `Retry-After` with a 503: how long the agent should keep its data and wait.
    pub retry_after: Option<Duration>,
}

/// How long an agent waits after the datastore refused a write for lack of space: long,
/// so a full disk does not start a re-upload storm (DESIGN.md, "Lessons").
pub const RETRY_AFTER_DISK_FULL: Duration = Duration::from_secs(300);

impl Answer {
    fn ok(status: upload_ack::Status, next_seq: u64) -> Self {
        Self { status: StatusCode::OK, ack: pb::UploadAck { status: status as i32, next_seq, message: String::new() }, retry_after: None }
    }

    pub fn rejected(e: &UploadError) -> Self {
        metrics().upload_rejected(e.reason());
        let ack = pb::UploadAck { status: upload_ack::Status::Rejected as i32, next_seq: 0, message: e.to_string() };
        let retry_after = (e.reason() == RejectReason::Overloaded).then_some(RETRY_AFTER_DISK_FULL);
        Self { status: e.status(), ack, retry_after }
    }

    pub fn encode(&self) -> Bytes {
        framing::encode(&self.ack)
    }
}

/// Handles one upload body (already capped at `max_upload_bytes` by the transport).
pub fn handle(ctx: &ShardCtx, client_id: &ClientId, flows: &mut OpenFlows, body: Bytes) -> Answer {
    let body_bytes = body.len() as u64;
    let result = framing::decode_single::<pb::Upload>(body, ctx.config.limits.max_upload_bytes)
        .map_err(UploadError::from)
        .and_then(|upload| dispatch(ctx, client_id, flows, upload));
    match result {
        Ok(answer) => {
            let m = metrics();
            m.uploads_accepted.fetch_add(1, Ordering::Relaxed);
            m.upload_bytes.fetch_add(body_bytes, Ordering::Relaxed);
            answer
        }
        Err(e) => {
            tracing::debug!(client = %client_id, "upload rejected: {e}");
            Answer::rejected(&e)
        }
    }
}

fn dispatch(ctx: &ShardCtx, client_id: &ClientId, flows: &mut OpenFlows, upload: pb::Upload) -> Result<Answer, UploadError> {
    use pb::upload::Kind;
    match upload.kind.ok_or(UploadError::Empty)? {
        Kind::Result(batch) => {
            let flow_id = FlowId::parse(&batch.flow_id)?;
            let outcome = flows.append(ctx, client_id, &flow_id, &batch.artifact, batch.seq, &batch.jsonl)?;
            let m = metrics();
            Ok(match outcome {
                BatchOutcome::Written { rows, next_seq } => {
                    m.rows_written.fetch_add(rows, Ordering::Relaxed);
                    m.result_bytes_written.fetch_add(batch.jsonl.len() as u64, Ordering::Relaxed);
                    Answer::ok(upload_ack::Status::Ok, next_seq)
                }
                BatchOutcome::Duplicate { next_seq } => {
                    m.uploads_duplicate.fetch_add(1, Ordering::Relaxed);
                    Answer::ok(upload_ack::Status::Duplicate, next_seq)
                }
                BatchOutcome::OutOfOrder { next_seq } => {
                    m.uploads_out_of_order.fetch_add(1, Ordering::Relaxed);
                    Answer::ok(upload_ack::Status::OutOfOrder, next_seq)
                }
            })
        }
        Kind::Status(status) => {
            let flow_id = FlowId::parse(&status.flow_id)?;
            flows.finish(ctx, client_id, &flow_id, &status)?;
            Ok(Answer::ok(upload_ack::Status::Ok, 0))
        }
        Kind::File(chunk) => {
            let flow_id = FlowId::parse(&chunk.flow_id)?;
            let written = flows.write_file(ctx, client_id, &flow_id, &chunk)?;
            metrics().files_uploaded_bytes.fetch_add(written, Ordering::Relaxed);
            Ok(Answer::ok(upload_ack::Status::Ok, 0))
        }
        Kind::Info(info) => {
            record_seen(ctx, client_id, &info)?;
            Ok(Answer::ok(upload_ack::Status::Ok, 0))
        }
    }
}

/// Writes info.json for a connecting agent: what it reports now, with the labels and
/// first-seen time kept from before.
fn record_seen(ctx: &ShardCtx, client_id: &ClientId, info: &pb::ClientInfo) -> Result<(), UploadError> {
    let client = ctx.datastore.client(client_id);
    let now = crate::sessions::flows::now_ms();
    let bounded = |s: &str| s.chars().take(256).collect::<String>();
    let mut doc = match client_info::read_client_info(&client) {
        Ok(doc) => doc,
        Err(e) if e.is_not_found() => client_info::ClientInfoDoc {
            client_id: client_id.clone(),
            hostname: String::new(),
            os: String::new(),
            labels: Vec::new(),
            first_seen_ms: now,
            last_seen_ms: now,
            version: String::new(),
        },
        Err(e) => return Err(e.into()),
    };
    doc.hostname = bounded(&info.hostname);
    doc.os = bounded(&info.os);
    doc.version = bounded(&info.version);
    doc.last_seen_ms = now;
    client_info::write_client_info(&client, &doc)?;
    Ok(())
}
