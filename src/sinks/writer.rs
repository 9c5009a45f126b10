//! A sink's spool writer thread: takes the batches its tap queued and appends them to
//! the spool, off the agent shards. On stop it drains what is queued, then ends.

use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::record::encode_batch;
use super::spool::Spool;
use super::Shared;
use crate::events::IngestedBatch;
use crate::limits::SINK_POLL_INTERVAL;
use crate::metrics::SinkDrop;

/// Batches appended under one lock at most: a burst costs one lock, and the sender
/// waits at most this many appends for it.
const BURST_BATCHES_COUNT: usize = 64;

/// `queued_bytes`: the row bytes in `queue`, which this takes off as it spools them.
pub fn run(
    shared: Arc<Shared>,
    queue: Receiver<Arc<IngestedBatch>>,
    queued_bytes: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut lines = Vec::new();
    loop {
        let first = match queue.recv_timeout(SINK_POLL_INTERVAL) {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) if shared.stopping() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut spool = shared.lock_spool();
        // One append per batch, so that no append is larger than one agent batch: the
        // spool's segments, and so its bound, stay as fine-grained as the batches.
        for batch in std::iter::once(first).chain(queue.try_iter().take(BURST_BATCHES_COUNT)) {
            queued_bytes.fetch_sub(
                batch.jsonl.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            lines.clear();
            let rows = encode_batch(&batch, &mut lines);
            append(&shared, &mut spool, &lines, rows);
        }
        shared.publish_size(&spool);
        drop(spool);
        shared.wake.notify_all();
    }
}

fn append(shared: &Shared, spool: &mut Spool, lines: &[u8], rows: u64) {
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
}
