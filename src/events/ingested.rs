//! The seam between event ingest and what acts on events: a frontend's agent shards hand
//! every event batch they have made durable to the consumers registered here (live
//! watchers, replication to the master, sinks).
//!
//! Owns: the shape of an ingested batch and the consumer contract. Must not: decide what
//! a consumer does with a batch, or block the shard that offers it.

use std::sync::Arc;

use bytes::Bytes;

use crate::datastore::ArtifactName;
use crate::ids::ClientId;

/// One event batch as written to `clients/<id>/monitoring/<artifact>/<day>.jsonl`.
/// Invariant: `time_ms.len()` equals the number of lines in `jsonl`, each line is one
/// JSON object ending in '\n', and `(client_id, artifact, seq)` names the batch uniquely
/// (so `(client_id, artifact, seq, row)` names one event, across retries and frontends).
#[derive(Debug, Clone)]
pub struct IngestedBatch {
    pub client_id: ClientId,
    pub artifact: ArtifactName,
    /// The agent's batch sequence number (see `EventBatch.seq` in proto/agent.proto).
    pub seq: u64,
    /// Each row's own time, milliseconds since the Unix epoch.
    pub time_ms: Vec<u64>,
    pub jsonl: Bytes,
    /// The client's labels as the ingesting shard knows them (read at connect).
    pub labels: Arc<[String]>,
}

impl IngestedBatch {
    /// The rows, each without its '\n', paired with its time.
    pub fn rows(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.jsonl
            .split(|&b| b == b'\n')
            .zip(self.time_ms.iter().copied())
            .map(|(row, t)| (t, row))
    }

    /// The deterministic id of row `row` of this batch: the same event resent, retried
    /// or re-shipped always gets the same id.
    pub fn event_id(&self, row: usize) -> String {
        format!(
            "{}:{}:{}:{}",
            self.client_id,
            self.artifact.as_str(),
            self.seq,
            row
        )
    }
}

/// Something that acts on ingested events.
pub trait EventConsumer: Send + Sync + 'static {
    /// Called on an agent shard right after `batch` is durable. Must return at once:
    /// queue it (bounded) or drop it and count the drop, never wait.
    fn offer(&self, batch: &Arc<IngestedBatch>);
}

/// The consumers of one frontend, shared by all its shards.
#[derive(Clone, Default)]
pub struct EventTaps(Arc<Vec<Arc<dyn EventConsumer>>>);

impl EventTaps {
    pub fn new(consumers: Vec<Arc<dyn EventConsumer>>) -> Self {
        Self(Arc::new(consumers))
    }

    pub fn offer(&self, batch: IngestedBatch) {
        if self.0.is_empty() {
            return;
        }
        let batch = Arc::new(batch);
        for consumer in self.0.iter() {
            consumer.offer(&batch);
        }
    }
}
