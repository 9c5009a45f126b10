//! One upload request from an agent: decode the frame, check the agent may write where
//! it asks, hand the bytes to the datastore, and answer with an `UploadAck`.
//! Every refusal says whose fault it was (status code + metric reason) and writes nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::datastore::{ArtifactName, DatastoreError, EventBatchError, Fault, FlowState};
use crate::ids::{ClientId, FlowId, IdError};
use crate::limits::RETRY_AFTER_BUSY;
use crate::metrics::{metrics, DiskFullUpload, FileRefusal, RejectReason};
use crate::notify::mesh::ShardEvent;
use crate::protocol::framing::{self, FrameError};
use crate::protocol::pb::{self, upload_ack};
use crate::sessions::file_upload::ChunkOutcome;
use crate::sessions::flows::{BatchOutcome, OpenFlows};
use crate::sessions::shard::ShardCtx;
use crate::sessions::{disk_full, event_streams, facts};

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
    #[error("flow {flow} is already {}; no more results are taken", state.as_str())]
    FlowClosed { flow: FlowId, state: FlowState },
    #[error("another upload for flow {flow} is in progress on this connection")]
    Busy { flow: FlowId },
    #[error("`{artifact}` is not an event artifact of the catalogue")]
    NotEventArtifact { artifact: String },
    #[error("another event batch of {artifact} is in progress on this connection")]
    EventsBusy { artifact: ArtifactName },
    #[error("bad file chunk: {reason}")]
    BadChunk { reason: String },
    #[error("artifact `{artifact}` of flow {flow} does not upload files")]
    NotAnUpload { flow: FlowId, artifact: String },
    #[error("upload {upload} of flow {flow} is complete with other content; files are write-once")]
    WriteOnce { flow: FlowId, upload: u32 },
    #[error(
        "upload {upload} of flow {flow} is arriving with another path, artifact, size or \
         SHA-256; a file's chunks must all announce the same file"
    )]
    AnnouncedOtherwise { flow: FlowId, upload: u32 },
    #[error(
        "upload {upload} of {size} bytes would take flow {flow} above its max_upload_bytes \
         ({quota_bytes} bytes; {taken_bytes} taken by files complete or arriving)"
    )]
    QuotaExceeded {
        flow: FlowId,
        upload: u32,
        quota_bytes: u64,
        taken_bytes: u64,
        size: u64,
    },
    #[error(
        "a batch of {batch_rows} rows would take flow {flow} above its max_rows ({max_rows}; \
         {stored_rows} stored)"
    )]
    MaxRows {
        flow: FlowId,
        max_rows: u64,
        stored_rows: u64,
        batch_rows: u64,
    },
    /// `closed_rows`: this refusal ended the flow, with that many rows.
    #[error("flow {flow} is past its timeout_s ({timeout_s} s) and the grace after it; no more uploads are taken")]
    TooLate {
        flow: FlowId,
        timeout_s: u64,
        closed_rows: Option<u64>,
    },
    #[error("{0}")]
    Datastore(#[from] DatastoreError),
}

impl UploadError {
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::TooLarge { .. } | Self::Frame(FrameError::TooLarge { .. }) => {
                RejectReason::TooLarge
            }
            Self::Frame(_) | Self::Empty | Self::BadChunk { .. } => RejectReason::BadFrame,
            Self::NotAnUpload { .. } => RejectReason::BadName,
            // Every 409 is a flow (or file) that takes no more of this: the generic
            // counter files them under flow_closed; packhunt_files_refused_total has
            // the reason.
            Self::WriteOnce { .. }
            | Self::AnnouncedOtherwise { .. }
            | Self::QuotaExceeded { .. }
            | Self::MaxRows { .. }
            | Self::TooLate { .. } => RejectReason::FlowClosed,
            Self::BadId(_) | Self::ArtifactNotRequested { .. } => RejectReason::BadName,
            Self::NotYourFlow { .. } => RejectReason::NotYourFlow,
            Self::FlowClosed { .. } => RejectReason::FlowClosed,
            Self::Busy { .. } | Self::EventsBusy { .. } => RejectReason::Busy,
            Self::NotEventArtifact { .. } => RejectReason::NotEventArtifact,
            Self::Datastore(e) => match e {
                DatastoreError::Jsonl { .. }
                | DatastoreError::EventBatch(EventBatchError::Jsonl(_)) => RejectReason::BadJsonl,
                DatastoreError::EventBatch(_) => RejectReason::BadEventTimes,
                e if e.fault() == Fault::Agent => RejectReason::BadName,
                // A full disk: 503 so the agent keeps the batch and backs off (docs/architecture.md).
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
            RejectReason::Overloaded | RejectReason::Busy | RejectReason::Concurrency => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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

impl Answer {
    pub fn ok(status: upload_ack::Status, next_seq: u64) -> Self {
        Self {
            status: StatusCode::OK,
            ack: pb::UploadAck {
                status: status as i32,
                next_seq,
                message: String::new(),
            },
            retry_after: None,
        }
    }

    /// The answer to a refused upload; `disk_full_retry_after` is what a full datastore
    /// tells the agent to wait (`[limits] disk_full_retry_after_s`).
    pub fn rejected(e: &UploadError, disk_full_retry_after: Duration) -> Self {
        metrics().upload_rejected(e.reason());
        let status = match e {
            UploadError::FlowClosed { .. } | UploadError::TooLate { .. } => {
                upload_ack::Status::FlowClosed
            }
            _ => upload_ack::Status::Rejected,
        };
        let ack = pb::UploadAck {
            status: status as i32,
            next_seq: 0,
            message: e.to_string(),
        };
        let retry_after = match e.reason() {
            RejectReason::Overloaded => Some(disk_full_retry_after),
            RejectReason::Busy => Some(RETRY_AFTER_BUSY),
            _ => None,
        };
        Self {
            status: e.status(),
            ack,
            retry_after,
        }
    }

    pub fn encode(&self) -> Bytes {
        framing::encode(&self.ack)
    }
}

/// Handles one upload body (already capped at `max_upload_bytes` by the transport).
pub async fn handle(
    ctx: &ShardCtx,
    client_id: &ClientId,
    flows: &OpenFlows,
    body: Bytes,
) -> Answer {
    let body_bytes = body.len() as u64;
    let (result, kind) = match framing::decode_single::<pb::Upload>(
        body,
        ctx.config.limits.max_upload_bytes.get(),
    ) {
        Ok(upload) => {
            let kind = carries(&upload);
            (dispatch(ctx, client_id, flows, upload).await, kind)
        }
        Err(e) => (Err(e.into()), None),
    };
    let retry_after = ctx.config.limits.disk_full_retry_after;
    match result {
        Ok(answer) => {
            let m = metrics();
            m.uploads_accepted.fetch_add(1, Ordering::Relaxed);
            m.upload_bytes.fetch_add(body_bytes, Ordering::Relaxed);
            let wrote_data = matches!(
                kind,
                Some(DiskFullUpload::Rows | DiskFullUpload::FileChunk | DiskFullUpload::Events)
            );
            if wrote_data && answer.ack.status == upload_ack::Status::Ok as i32 {
                disk_full::written();
            }
            answer
        }
        Err(e) => {
            tracing::debug!(client = %client_id, "upload rejected: {e}");
            if let (RejectReason::Overloaded, Some(kind)) = (e.reason(), kind) {
                disk_full::refused(kind, retry_after);
            }
            Answer::rejected(&e, retry_after)
        }
    }
}

/// What an upload carries, as the full-disk metrics count it (None: no message).
fn carries(upload: &pb::Upload) -> Option<DiskFullUpload> {
    use pb::upload::Kind;
    Some(match upload.kind.as_ref()? {
        Kind::Result(_) => DiskFullUpload::Rows,
        Kind::File(_) => DiskFullUpload::FileChunk,
        Kind::Events(_) => DiskFullUpload::Events,
        Kind::Status(_) => DiskFullUpload::FlowStatus,
        Kind::Info(_) => DiskFullUpload::ClientInfo,
    })
}

async fn dispatch(
    ctx: &ShardCtx,
    client_id: &ClientId,
    flows: &OpenFlows,
    upload: pb::Upload,
) -> Result<Answer, UploadError> {
    use pb::upload::Kind;
    let ds = &ctx.datastore;
    match upload.kind.ok_or(UploadError::Empty)? {
        Kind::Result(batch) => {
            let flow_id = FlowId::parse(&batch.flow_id)?;
            let bytes = batch.jsonl.len() as u64;
            let appended = flows
                .with_flow(ds, client_id, &flow_id, move |flow| {
                    flow.append(&batch.artifact, batch.seq, &batch.jsonl)
                })
                .await;
            let outcome = match appended {
                Ok(outcome) => outcome,
                Err(e) => return Err(refused(ctx, client_id, &flow_id, e, false).await),
            };
            if let BatchOutcome::Written { started: true, .. }
            | BatchOutcome::Duplicate { started: true, .. } = outcome
            {
                report_flow_state(ctx, client_id, &flow_id, FlowState::InProgress, 0).await;
            }
            let m = metrics();
            Ok(match outcome {
                BatchOutcome::Written { rows, next_seq, .. } => {
                    m.rows_written.fetch_add(rows, Ordering::Relaxed);
                    m.result_bytes_written.fetch_add(bytes, Ordering::Relaxed);
                    Answer::ok(upload_ack::Status::Ok, next_seq)
                }
                BatchOutcome::Duplicate { next_seq, .. } => {
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
            let id = flow_id.clone();
            if let Some((state, total_rows)) = flows
                .with_flow(ds, client_id, &id, move |flow| flow.finish(&status))
                .await?
            {
                ctx.sessions.flow_ended(client_id, &flow_id);
                report_flow_state(ctx, client_id, &flow_id, state, total_rows).await;
            }
            Ok(Answer::ok(upload_ack::Status::Ok, 0))
        }
        Kind::File(chunk) => {
            let flow_id = FlowId::parse(&chunk.flow_id)?;
            let written = flows
                .with_flow(ds, client_id, &flow_id, move |flow| flow.write_file(&chunk))
                .await;
            let outcome = match written {
                Ok(outcome) => outcome,
                Err(e) => return Err(refused(ctx, client_id, &flow_id, e, true).await),
            };
            if outcome.started {
                report_flow_state(ctx, client_id, &flow_id, FlowState::InProgress, 0).await;
            }
            let (status, next_seq) = count_file_chunk(&outcome.chunk);
            Ok(Answer::ok(status, next_seq))
        }
        Kind::Events(batch) => {
            let streams = flows.event_streams();
            let (status, next_seq) = event_streams::ingest(ctx, client_id, streams, batch).await?;
            Ok(Answer::ok(status, next_seq))
        }
        Kind::Info(info) => {
            // Facts too large for their own path (sessions/facts.rs) arrive here, under
            // the upload permit they hold.
            metrics().facts_general_path.fetch_add(1, Ordering::Relaxed);
            match facts::record(ctx, client_id, &info, facts::Budget::UploadPermitHeld).await {
                Ok(()) => Ok(Answer::ok(upload_ack::Status::Ok, 0)),
                Err(facts::FactsRefusal::Upload(e)) => Err(e),
                Err(facts::FactsRefusal::Busy) => {
                    unreachable!("only facts that take the facts budget wait for it")
                }
            }
        }
    }
}

/// Counts a refused result batch or file chunk in the files metrics, and reports the
/// end of a flow that the refusal closed (uploads past its timeout). Returns the error.
async fn refused(
    ctx: &ShardCtx,
    client_id: &ClientId,
    flow_id: &FlowId,
    error: UploadError,
    file: bool,
) -> UploadError {
    let refusal = match &error {
        UploadError::QuotaExceeded { .. } => Some(FileRefusal::Quota),
        UploadError::WriteOnce { .. } | UploadError::AnnouncedOtherwise { .. } => {
            Some(FileRefusal::WriteOnce)
        }
        UploadError::FlowClosed { .. } if file => Some(FileRefusal::FlowClosed),
        UploadError::MaxRows { .. } => Some(FileRefusal::MaxRows),
        UploadError::TooLate { .. } => Some(FileRefusal::Timeout),
        _ => None,
    };
    if let Some(refusal) = refusal {
        metrics().file_refused(refusal);
    }
    if let UploadError::TooLate {
        closed_rows: Some(rows),
        ..
    } = &error
    {
        ctx.sessions.flow_ended(client_id, flow_id);
        report_flow_state(ctx, client_id, flow_id, FlowState::Error, *rows).await;
    }
    error
}

/// The ack for a file chunk's outcome, counted in the files metrics.
fn count_file_chunk(outcome: &ChunkOutcome) -> (upload_ack::Status, u64) {
    let m = metrics();
    match outcome {
        ChunkOutcome::Written {
            next_seq,
            bytes,
            started_file,
            completed,
        } => {
            m.files_bytes_written.fetch_add(*bytes, Ordering::Relaxed);
            m.files_uploaded_bytes.fetch_add(*bytes, Ordering::Relaxed);
            if *started_file {
                m.files_started.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(record) = completed {
                m.files_completed.fetch_add(1, Ordering::Relaxed);
                if record.error.is_some() {
                    m.files_mismatches.fetch_add(1, Ordering::Relaxed);
                }
            }
            (upload_ack::Status::Ok, *next_seq)
        }
        ChunkOutcome::Duplicate { next_seq } => {
            m.files_resumed_chunks.fetch_add(1, Ordering::Relaxed);
            (upload_ack::Status::Duplicate, *next_seq)
        }
        ChunkOutcome::OutOfOrder { next_seq } => {
            m.files_resumed_chunks.fetch_add(1, Ordering::Relaxed);
            (upload_ack::Status::OutOfOrder, *next_seq)
        }
    }
}

/// Tells the hub (and through it the master) that a flow changed state.
async fn report_flow_state(
    ctx: &ShardCtx,
    client_id: &ClientId,
    flow_id: &FlowId,
    state: FlowState,
    total_rows: u64,
) {
    let event = ShardEvent::FlowState {
        client_id: client_id.clone(),
        flow_id: flow_id.clone(),
        state,
        total_rows,
    };
    let _ = ctx.events.send(event).await;
}
