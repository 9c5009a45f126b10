//! The monitoring event streams one agent connection writes, one per event artifact,
//! and the handling of one `EventBatch` upload: check the artifact, write the batch on
//! the blocking pool, count it, and offer what was written to the frontend's event taps.
//!
//! A stream caches only the last seq written for its (client, artifact), read from disk
//! on the connection's first batch of that artifact (the agent may have written through
//! another frontend before). No file stays open between batches: a frontend serves up to
//! ~19,000 agents under a 20,000-file limit (see `flows.rs`). As with flows, a second
//! upload for a stream that is checked out is refused as busy; the real agent sends one
//! upload at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::datastore::{ArtifactName, Datastore, EventAppend, EventStream};
use crate::events::IngestedBatch;
use crate::ids::ClientId;
use crate::metrics::metrics;
use crate::protocol::pb::{self, upload_ack};
use crate::runtime::offload::offload;
use crate::sessions::checkout::Checkouts;
use crate::sessions::shard::ShardCtx;
use crate::sessions::upload::UploadError;

/// A connection's event streams. Keys are event artifacts of the catalogue, so the map is
/// as small as the catalogue.
#[derive(Default)]
pub struct EventStreams {
    streams: Checkouts<ArtifactName, EventStream>,
}

/// Handles one event batch; answers the ack status and `next_seq`.
pub async fn ingest(
    ctx: &ShardCtx,
    client_id: &ClientId,
    streams: &EventStreams,
    batch: pb::EventBatch,
) -> Result<(upload_ack::Status, u64), UploadError> {
    let def = crate::artifacts::find_event(&batch.artifact).map_err(|_| {
        UploadError::NotEventArtifact {
            artifact: batch.artifact.chars().take(64).collect(),
        }
    })?;
    let artifact = ArtifactName::parse(def.name)?;
    let prior = streams
        .streams
        .check_out(&artifact)
        .map_err(|_| UploadError::EventsBusy {
            artifact: artifact.clone(),
        })?;
    let write = Write {
        datastore: ctx.datastore.clone(),
        client_id: client_id.clone(),
        artifact: artifact.clone(),
        batch,
    };
    let (result, back, batch) = offload(move || write.run(prior)).await;
    streams.streams.check_in(&artifact, back);
    let (outcome, next_seq) = result?;
    let m = metrics();
    let EventAppend::Written { rows, .. } = outcome else {
        m.events_duplicate_batches.fetch_add(1, Ordering::Relaxed);
        return Ok((upload_ack::Status::Duplicate, next_seq));
    };
    m.events_rows_ingested.fetch_add(rows, Ordering::Relaxed);
    let bytes = batch.jsonl.len() as u64;
    m.events_bytes_ingested.fetch_add(bytes, Ordering::Relaxed);
    m.events_batches_ingested.fetch_add(1, Ordering::Relaxed);
    m.events_dropped_by_agents
        .fetch_add(batch.dropped_before, Ordering::Relaxed);
    let labels: Arc<[String]> = match ctx.sessions.labels(client_id) {
        Some(labels) => labels.iter().cloned().collect(),
        None => Arc::from(Vec::new()),
    };
    ctx.event_taps.offer(IngestedBatch {
        client_id: client_id.clone(),
        artifact,
        seq: batch.seq,
        time_ms: batch.time_ms,
        jsonl: batch.jsonl,
        labels,
    });
    Ok((upload_ack::Status::Ok, next_seq))
}

/// One batch's write, moved to the blocking pool and back.
struct Write {
    datastore: Datastore,
    client_id: ClientId,
    artifact: ArtifactName,
    batch: pb::EventBatch,
}

type WriteResult = Result<(EventAppend, u64), UploadError>;

impl Write {
    /// Opens the stream if this connection has not yet, appends, and hands back the
    /// stream to keep (unless it could not be opened) and the batch for the taps.
    fn run(
        self,
        prior: Option<Box<EventStream>>,
    ) -> (WriteResult, Option<Box<EventStream>>, pb::EventBatch) {
        let mut stream = match prior {
            Some(stream) => stream,
            None => {
                let client = self.datastore.client(&self.client_id);
                match EventStream::open(&client, &self.artifact) {
                    Ok(stream) => Box::new(stream),
                    Err(e) => return (Err(e.into()), None, self.batch),
                }
            }
        };
        let batch = self.batch;
        let result = stream
            .append(batch.seq, &batch.jsonl, &batch.time_ms)
            .map(|outcome| {
                let next_seq = match outcome {
                    EventAppend::Written { .. } => batch.seq.saturating_add(1),
                    EventAppend::Duplicate => stream.next_seq(),
                };
                (outcome, next_seq)
            })
            .map_err(UploadError::from);
        (result, Some(stream), batch)
    }
}
