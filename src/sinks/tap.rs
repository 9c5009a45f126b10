//! A sink's `EventConsumer`: on the agent shard, picks the batches the sink wants and
//! hands them to the sink's spool writer through a bounded queue. Full means the writer
//! is behind (its disk stalled): the batch is dropped and counted, the shard never waits.

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use crate::events::{EventConsumer, IngestedBatch};
use crate::metrics::{SinkDrop, SinkMetrics};

pub struct SinkTap {
    /// Invariant: not empty (config checks it).
    artifacts: Vec<String>,
    /// Empty: every client.
    labels: Vec<String>,
    queue: Sender<Arc<IngestedBatch>>,
    metrics: Arc<SinkMetrics>,
}

impl SinkTap {
    pub fn new(
        artifacts: Vec<String>,
        labels: Vec<String>,
        queue: Sender<Arc<IngestedBatch>>,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        Self {
            artifacts,
            labels,
            queue,
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
        match self.queue.try_send(batch.clone()) {
            Ok(()) => {}
            // Disconnected: the sink is stopping; its events are in the day files.
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                self.metrics
                    .dropped(SinkDrop::QueueFull, b.time_ms.len() as u64);
            }
        }
    }
}
