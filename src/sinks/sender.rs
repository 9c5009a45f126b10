//! A sink's sender thread: reads batches from the spool (`batch_rows` events, or fewer
//! once the oldest has waited `batch_age`), delivers them through the sink's kind, and
//! retries with backoff until they are delivered or refused for good. The spool moves
//! past a batch only then, so a failed, interrupted or crashed delivery is sent again
//! (with the same event ids) rather than lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::delivery::{Deliver, Outcome};
use super::record::SpoolEvent;
use super::spool::SpoolBatch;
use super::Shared;
use crate::limits::SINK_POLL_INTERVAL;
use crate::metrics::SinkDrop;

pub struct Batching {
    pub rows: usize,
    pub age: Duration,
}

pub fn run(shared: Arc<Shared>, mut kind: Box<dyn Deliver>, batching: Batching) {
    let mut waiting_since: Option<Instant> = None;
    let mut read_failures = Backoff::default();
    while !shared.stopping() {
        let batch = match next_batch(&shared, &batching, &mut waiting_since) {
            None => continue,
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                tracing::warn!(sink = %shared.name, "{e}");
                shared.sleep_unless_stopped(read_failures.next(None));
                continue;
            }
        };
        read_failures = Backoff::default();
        waiting_since = None;
        if batch.corrupt > 0 {
            shared.metrics.dropped(SinkDrop::Corrupt, batch.corrupt);
        }
        if !deliver(&shared, kind.as_mut(), batch.events) {
            return;
        }
        let mut spool = shared.lock_spool();
        if let Err(e) = spool.commit(batch.end) {
            tracing::warn!(sink = %shared.name, "{e}: the batch may be sent again");
        }
        shared.publish_size(&spool);
    }
}

/// The next batch once one is due; none after a wait (the caller checks for a stop).
fn next_batch(
    shared: &Shared,
    batching: &Batching,
    waiting_since: &mut Option<Instant>,
) -> Option<Result<SpoolBatch, super::spool::SpoolError>> {
    let spool = shared.lock_spool();
    let lag_s = spool
        .oldest_unsent_time_ms()
        .map_or(0, |t| crate::clock::now_ms().saturating_sub(t) / 1000);
    shared
        .metrics
        .lag_seconds
        .store(lag_s as i64, Ordering::Relaxed);
    let unsent = spool.unsent_rows();
    if unsent == 0 {
        *waiting_since = None;
        let _ = shared.wake.wait_timeout(spool, SINK_POLL_INTERVAL);
        return None;
    }
    let since = *waiting_since.get_or_insert_with(Instant::now);
    let age = since.elapsed();
    if unsent < batching.rows as u64 && age < batching.age {
        let wait = (batching.age - age).min(SINK_POLL_INTERVAL);
        let _ = shared.wake.wait_timeout(spool, wait);
        return None;
    }
    Some(spool.read_batch(batching.rows))
}

/// Delivers `events` until done; false if the sink was stopped first.
fn deliver(shared: &Shared, kind: &mut dyn Deliver, mut events: Vec<SpoolEvent>) -> bool {
    let m = &shared.metrics;
    let mut backoff = Backoff::default();
    while !events.is_empty() {
        match kind.deliver(&events) {
            Outcome::Done { rejected } => {
                m.sent.fetch_add(
                    (events.len() as u64).saturating_sub(rejected),
                    Ordering::Relaxed,
                );
                m.dropped(SinkDrop::Rejected, rejected);
                return true;
            }
            Outcome::Retry {
                keep,
                rejected,
                after,
                reason,
            } => {
                m.dropped(SinkDrop::Rejected, rejected);
                if let Some(keep) = keep {
                    let delivered = events.len().saturating_sub(keep.len() + rejected as usize);
                    m.sent.fetch_add(delivered as u64, Ordering::Relaxed);
                    events = keep
                        .into_iter()
                        .filter_map(|i| events.get(i).cloned())
                        .collect();
                }
                m.retried.fetch_add(events.len() as u64, Ordering::Relaxed);
                let wait = backoff.next(after);
                tracing::warn!(
                    sink = %shared.name,
                    events = events.len(),
                    "delivery failed, retrying in {wait:?}: {reason}"
                );
                if let Some(oldest) = events.iter().map(|e| e.time_ms).min() {
                    let lag_s = crate::clock::now_ms().saturating_sub(oldest) / 1000;
                    m.lag_seconds.store(lag_s as i64, Ordering::Relaxed);
                }
                if !shared.sleep_unless_stopped(wait) {
                    return false;
                }
            }
        }
    }
    true
}
