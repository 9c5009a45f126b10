//! A sink's `EventConsumer`: on the agent shard, picks the batches the sink wants and
//! hands them to the sink's spool writer through a bounded queue. Full means the writer
//! is behind (its disk stalled): the batch is dropped and counted, the shard never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::events::{EventConsumer, IngestedBatch};
use crate::limits::SINK_QUEUE_BYTES;
use crate::metrics::{SinkDrop, SinkMetrics};

pub struct SinkTap {
    /// Invariant: not empty (config checks it).
    artifacts: Vec<String>,
    /// Empty: every client.
    labels: Vec<String>,
    queue: Sender<Arc<IngestedBatch>>,
    /// Row bytes in `queue`: added here, taken off by the spool writer.
    queued_bytes: Arc<AtomicU64>,
    metrics: Arc<SinkMetrics>,
}

impl SinkTap {
    pub fn new(
        artifacts: Vec<String>,
        labels: Vec<String>,
        queue: Sender<Arc<IngestedBatch>>,
        queued_bytes: Arc<AtomicU64>,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        Self {
            artifacts,
            labels,
            queue,
            queued_bytes,
            metrics,
        }
    }

    fn wants(&self, batch: &IngestedBatch) -> bool {
        self.artifacts.iter().any(|a| a == batch.artifact.as_str())
            && (self.labels.is_empty() || batch.labels.iter().any(|l| self.labels.contains(l)))
    }
}

impl EventConsumer for SinkTap {
    fn offer(&self, batch: &Arc<IngestedBatch>) {
        if !self.wants(batch) {
            return;
        }
        let bytes = batch.jsonl.len() as u64;
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let sent = if queued.saturating_add(bytes) > SINK_QUEUE_BYTES && queued > 0 {
            Err(())
        } else {
            // Full, or disconnected: the sink is stopping (its events are in the day files).
            self.queue.try_send(batch.clone()).map_err(|_| ())
        };
        if sent.is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics
                .dropped(SinkDrop::QueueFull, batch.time_ms.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the tap never waits: a full queue drops the batch and counts its events.
    use super::*;

    fn batch(artifact: &str, labels: &[&str]) -> Arc<IngestedBatch> {
        Arc::new(IngestedBatch {
            client_id: crate::ids::ClientId::parse("C.0123456789abcdef").unwrap(),
            artifact: crate::datastore::ArtifactName::parse(artifact).unwrap(),
            seq: 1,
            time_ms: vec![1, 2, 3],
            jsonl: bytes::Bytes::from_static(b"{}\n{}\n{}\n"),
            labels: labels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .into(),
        })
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_filters_apply_first() {
        let (queue, queued) = crossbeam_channel::bounded(1);
        let metrics = Arc::new(SinkMetrics::default());
        let tap = SinkTap::new(
            vec!["Linux.Events.ProcessStart".into()],
            vec!["prod".into()],
            queue,
            Arc::default(),
            metrics.clone(),
        );
        tap.offer(&batch("Linux.Events.ProcessStart", &["prod"]));
        tap.offer(&batch("Linux.Events.ProcessStart", &["prod", "x"]));
        tap.offer(&batch("Linux.Events.ProcessStart", &["dev"]));
        tap.offer(&batch("Generic.Client.Stats", &["prod"]));
        assert_eq!(queued.len(), 1);
        assert_eq!(metrics.dropped_count(SinkDrop::QueueFull), 3);
    }
}
