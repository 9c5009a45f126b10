//! A sink's spool writer thread: takes the batches its tap queued and appends them to
//! the spool, off the agent shards. On stop it drains what is queued, then ends.

use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::record::encode_batch;
use super::Shared;
use crate::events::IngestedBatch;
use crate::limits::SINK_POLL_INTERVAL;
use crate::metrics::SinkDrop;

/// Batches appended in one go at most: one write and one lock for a burst.
const BURST_BATCHES_COUNT: usize = 64;

pub fn run(shared: Arc<Shared>, queue: Receiver<Arc<IngestedBatch>>) {
    let mut lines = Vec::new();
    loop {
        let first = match queue.recv_timeout(SINK_POLL_INTERVAL) {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) if shared.stopping() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        lines.clear();
        let mut rows = encode_batch(&first, &mut lines);
        for batch in queue.try_iter().take(BURST_BATCHES_COUNT) {
            rows += encode_batch(&batch, &mut lines);
        }
        append(&shared, &lines, rows);
    }
}

fn append(shared: &Shared, lines: &[u8], rows: u64) {
    let mut spool = shared.lock_spool();
    match spool.append(lines, rows) {
        Ok(appended) => {
            if appended.dropped > 0 {
                shared
                    .metrics
                    .dropped(SinkDrop::SpoolFull, appended.dropped);
            }
        }
        Err(e) => {
            tracing::warn!(sink = %shared.name, "{e}: {rows} events dropped");
            shared.metrics.dropped(SinkDrop::SpoolError, rows);
        }
    }
    shared.publish_size(&spool);
    drop(spool);
    shared.wake.notify_all();
}
