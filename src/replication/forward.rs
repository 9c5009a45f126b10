//! Client monitoring events across the link, for live watchers on the master. On a
//! minion, `MonitoringForwarder` is one of the shards' event taps: it queues a batch for
//! the master only if the master watches its artifact (the set the master last sent in
//! `WatchedArtifacts`), never waiting (a full lane drops and counts). On the master,
//! `received_batch` checks what a minion sent before the watchers see it.
//!
//! Must not: wait on the shard that offers, or send an artifact the master does not
//! watch.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::pb;
use super::queue::{ForwardRefused, Outbox};
use crate::datastore::{validate_and_index, ArtifactName};
use crate::events::{EventConsumer, IngestedBatch};
use crate::ids::ClientId;
use crate::metrics::metrics;

/// A minion's tap: watched batches go to the master.
pub struct MonitoringForwarder {
    outbox: Outbox,
}

impl MonitoringForwarder {
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }
}

impl EventConsumer for MonitoringForwarder {
    fn offer(&self, batch: &Arc<IngestedBatch>) {
        let m = metrics();
        match self.outbox.forward_monitoring(to_wire(batch)) {
            Ok(()) => {}
            Err(ForwardRefused::Unwatched) => {
                m.events_watch_unwatched.fetch_add(1, Ordering::Relaxed);
            }
            Err(ForwardRefused::Full) => {
                m.events_watch_forward_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The envelope body for `batch`. The rows are shared, not copied.
pub fn to_wire(batch: &IngestedBatch) -> pb::MonitoringEvent {
    pb::MonitoringEvent {
        client_id: batch.client_id.to_string(),
        artifact: batch.artifact.as_str().to_string(),
        rows: batch.jsonl.clone(),
        seq: batch.seq,
        time_ms: batch.time_ms.clone(),
    }
}

/// Why a minion's monitoring event was refused (a bug or version mismatch there).
#[derive(Debug, thiserror::Error)]
pub enum BadMonitoringEvent {
    #[error("client id: {0}")]
    ClientId(#[from] crate::ids::IdError),
    #[error("artifact: {0}")]
    Artifact(#[from] crate::datastore::DatastoreError),
    #[error("rows: {0}")]
    Rows(#[from] crate::datastore::JsonlError),
    #[error("{rows} rows but {times} row times")]
    TimesMismatch { rows: u64, times: usize },
}

/// What a minion sent, checked as ingest checks an agent's batch: ids parse, every row
/// is one JSON object, and each has its time. Watchers splice rows into their lines, so
/// a row that is not JSON never reaches them.
pub fn received_batch(event: pb::MonitoringEvent) -> Result<IngestedBatch, BadMonitoringEvent> {
    let client_id = ClientId::parse(&event.client_id)?;
    let artifact = ArtifactName::parse(&event.artifact)?;
    let rows = validate_and_index(&event.rows, 0, &mut Vec::new())?;
    if rows != event.time_ms.len() as u64 {
        return Err(BadMonitoringEvent::TimesMismatch {
            rows,
            times: event.time_ms.len(),
        });
    }
    Ok(IngestedBatch {
        client_id,
        artifact,
        seq: event.seq,
        time_ms: event.time_ms,
        jsonl: event.rows,
        labels: Arc::from(Vec::<String>::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> IngestedBatch {
        IngestedBatch {
            client_id: ClientId::parse("C.00000000000000aa").unwrap(),
            artifact: ArtifactName::parse("Generic.Client.Stats").unwrap(),
            seq: 7,
            time_ms: vec![5, 6],
            jsonl: bytes::Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n"),
            labels: Arc::from(Vec::<String>::new()),
        }
    }

    // Goal: a batch survives the wire as it was; what does not parse is refused.
    #[test]
    fn a_batch_round_trips_and_bad_ones_are_refused() {
        let back = received_batch(to_wire(&batch())).unwrap();
        let original = batch();
        assert_eq!(back.client_id, original.client_id);
        assert_eq!(back.artifact, original.artifact);
        assert_eq!((back.seq, &back.time_ms), (7, &vec![5, 6]));
        assert_eq!(back.jsonl, original.jsonl);

        let mut fewer_times = to_wire(&batch());
        fewer_times.time_ms.pop();
        assert!(matches!(
            received_batch(fewer_times),
            Err(BadMonitoringEvent::TimesMismatch { rows: 2, times: 1 })
        ));
        let mut not_json = to_wire(&batch());
        not_json.rows = bytes::Bytes::from_static(b"{\"a\":1}\nnope\n");
        assert!(matches!(
            received_batch(not_json),
            Err(BadMonitoringEvent::Rows(_))
        ));
        let mut bad_id = to_wire(&batch());
        bad_id.client_id = "../x".into();
        assert!(received_batch(bad_id).is_err());
        let mut bad_artifact = to_wire(&batch());
        bad_artifact.artifact = "../x".into();
        assert!(received_batch(bad_artifact).is_err());
    }
}
