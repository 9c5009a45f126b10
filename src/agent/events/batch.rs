//! Rows into per-artifact batches: each batch is sealed when it is old enough
//! (`EVENT_BATCH_MAX_AGE`, or `EVENT_BATCH_MAX_AGE_OFFLINE` while no frontend is
//! reachable), when the next row would not fit one upload, or when the next
//! row falls on another UTC day (the server files a batch under one day).
//!
//! Owns: the open batches and the rule for sealing them. Must not: number batches
//! (`buffer` does, so numbering and persistence stay together) or touch the disk.

use std::time::{Duration, Instant};

use crate::limits::{EVENT_BATCH_MAX_AGE, EVENT_BATCH_MAX_AGE_OFFLINE};
use crate::protocol::pb;

/// Room kept in an upload for the frame, the `Upload` envelope and the batch's other
/// fields (artifact, seq, counts): a few dozen bytes, with a wide margin.
const BATCH_OVERHEAD_BYTES: usize = 1024;
/// What one row's `time_ms` costs in the encoded batch, at most (a varint of a
/// millisecond timestamp is 6 bytes until the year 10889; 8 leaves room).
const TIME_MS_ENCODED_BYTES: usize = 8;

const MS_PER_DAY: u64 = 86_400_000;

/// The UTC day (days since the epoch) a row's time falls on.
pub fn utc_day(time_ms: u64) -> u64 {
    time_ms / MS_PER_DAY
}

/// A row that can never fit one upload, whatever else the batch holds.
#[derive(Debug, PartialEq, Eq)]
pub struct RowTooLarge;

pub struct Batcher {
    /// Invariant: at most one open batch per artifact, none empty.
    open: Vec<OpenBatch>,
    /// Encoded-size budget of one batch: `max_upload_bytes` less the overhead.
    max_batch_bytes: usize,
    /// How old a batch gets before it is sealed: short while connected, long offline.
    max_age: Duration,
}

struct OpenBatch {
    artifact: String,
    jsonl: Vec<u8>,
    time_ms: Vec<u64>,
    opened: Instant,
    day: u64,
}

impl OpenBatch {
    fn cost_bytes(&self) -> usize {
        self.jsonl.len() + self.time_ms.len() * TIME_MS_ENCODED_BYTES
    }

    fn seal(self) -> pb::EventBatch {
        pb::EventBatch {
            artifact: self.artifact,
            seq: 0,
            row_count: self.time_ms.len() as u32,
            jsonl: self.jsonl.into(),
            time_ms: self.time_ms,
            dropped_before: 0,
        }
    }
}

/// Encoded-size cost of one row in a batch: the row, its newline and its time.
fn row_cost_bytes(row: &[u8]) -> usize {
    row.len() + 1 + TIME_MS_ENCODED_BYTES
}

impl Batcher {
    pub fn new(max_upload_bytes: u64) -> Self {
        let max_batch_bytes = (max_upload_bytes as usize)
            .saturating_sub(BATCH_OVERHEAD_BYTES)
            .max(256);
        Self {
            open: Vec::new(),
            max_batch_bytes,
            max_age: EVENT_BATCH_MAX_AGE_OFFLINE,
        }
    }

    /// Connected: batches go out after `EVENT_BATCH_MAX_AGE`; offline they grow for
    /// `EVENT_BATCH_MAX_AGE_OFFLINE`. An agent starts offline.
    pub fn set_connected(&mut self, connected: bool) {
        self.max_age = if connected {
            EVENT_BATCH_MAX_AGE
        } else {
            EVENT_BATCH_MAX_AGE_OFFLINE
        };
    }

    /// Adds one row (a JSON object without its newline) of `artifact` at `time_ms`; a
    /// batch the row does not fit in (size or day) is sealed into `sealed` first.
    pub fn push(
        &mut self,
        artifact: &str,
        time_ms: u64,
        row: &[u8],
        now: Instant,
        sealed: &mut Vec<pb::EventBatch>,
    ) -> Result<(), RowTooLarge> {
        let cost = row_cost_bytes(row);
        if cost + artifact.len() > self.max_batch_bytes {
            return Err(RowTooLarge);
        }
        let day = utc_day(time_ms);
        let max = self.max_batch_bytes;
        if let Some(i) = self.open.iter().position(|b| b.artifact == artifact) {
            let full = self.open[i].cost_bytes() + cost + artifact.len() > max;
            if full || self.open[i].day != day {
                sealed.push(self.open.swap_remove(i).seal());
            }
        }
        let batch = match self.open.iter_mut().find(|b| b.artifact == artifact) {
            Some(batch) => batch,
            None => {
                self.open.push(OpenBatch {
                    artifact: artifact.to_string(),
                    jsonl: Vec::new(),
                    time_ms: Vec::new(),
                    opened: now,
                    day,
                });
                self.open.last_mut().expect("just pushed")
            }
        };
        batch.jsonl.extend_from_slice(row);
        batch.jsonl.push(b'\n');
        batch.time_ms.push(time_ms);
        debug_assert!(batch.cost_bytes() + artifact.len() <= max);
        Ok(())
    }

    /// Seals every batch opened at least the current maximum age before `now`.
    pub fn seal_due(&mut self, now: Instant, sealed: &mut Vec<pb::EventBatch>) {
        let mut i = 0;
        while i < self.open.len() {
            if now.saturating_duration_since(self.open[i].opened) >= self.max_age {
                sealed.push(self.open.swap_remove(i).seal());
            } else {
                i += 1;
            }
        }
    }

    /// Seals every open batch (the agent is stopping).
    pub fn seal_all(&mut self, sealed: &mut Vec<pb::EventBatch>) {
        sealed.extend(self.open.drain(..).map(OpenBatch::seal));
    }

    /// When the oldest open batch is due; None when none is open.
    pub fn next_due(&self) -> Option<Instant> {
        self.open.iter().map(|b| b.opened + self.max_age).min()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    //! Goal: batches hold one artifact and one UTC day, fit one upload, and are sealed
    //! when old enough. Method: push rows with chosen times and instants.

    use super::*;

    const DAY_MS: u64 = MS_PER_DAY;

    #[test]
    fn a_batch_is_split_at_midnight_utc() {
        let mut b = Batcher::new(64 * 1024);
        let now = Instant::now();
        let mut sealed = Vec::new();
        let before_midnight = 20_000 * DAY_MS - 1;
        b.push("A", before_midnight - 5, b"{\"i\":1}", now, &mut sealed)
            .unwrap();
        b.push("A", before_midnight, b"{\"i\":2}", now, &mut sealed)
            .unwrap();
        assert!(sealed.is_empty());
        b.push("A", before_midnight + 1, b"{\"i\":3}", now, &mut sealed)
            .unwrap();
        assert_eq!(sealed.len(), 1, "the new day sealed the old day's batch");
        assert_eq!(
            sealed[0].time_ms,
            vec![before_midnight - 5, before_midnight]
        );
        assert_eq!(&sealed[0].jsonl[..], b"{\"i\":1}\n{\"i\":2}\n");
        b.seal_all(&mut sealed);
        assert_eq!(sealed[1].time_ms, vec![before_midnight + 1]);
        assert_eq!(sealed[1].row_count, 1);
        for batch in &sealed {
            let days: Vec<u64> = batch.time_ms.iter().map(|&t| utc_day(t)).collect();
            assert!(days.windows(2).all(|w| w[0] == w[1]), "{days:?}");
        }
    }

    #[test]
    fn artifacts_batch_apart_and_batches_fit_one_upload() {
        let max_upload = 4096;
        let mut b = Batcher::new(max_upload);
        let now = Instant::now();
        let mut sealed = Vec::new();
        let row = format!("{{\"pad\":\"{}\"}}", "x".repeat(300));
        for i in 0..40u64 {
            b.push("A", 1_000 + i, row.as_bytes(), now, &mut sealed)
                .unwrap();
            b.push("B", 1_000 + i, b"{}", now, &mut sealed).unwrap();
        }
        b.seal_all(&mut sealed);
        let rows_a: u32 = sealed
            .iter()
            .filter(|s| s.artifact == "A")
            .map(|s| s.row_count)
            .sum();
        assert_eq!(rows_a, 40);
        assert!(sealed.iter().filter(|s| s.artifact == "A").count() > 1);
        for s in &sealed {
            let upload = pb::Upload {
                kind: Some(pb::upload::Kind::Events(s.clone())),
            };
            let encoded = crate::protocol::framing::encode(&upload);
            assert!(encoded.len() as u64 <= max_upload, "{}", encoded.len());
            assert_eq!(s.row_count as usize, s.time_ms.len());
        }
        let huge = vec![b'x'; 8192];
        assert_eq!(b.push("A", 1, &huge, now, &mut sealed), Err(RowTooLarge));
    }

    #[test]
    fn batches_are_sealed_once_old_enough() {
        let mut b = Batcher::new(64 * 1024);
        let t0 = Instant::now();
        let mut sealed = Vec::new();
        assert_eq!(b.next_due(), None);
        b.push("A", 1, b"{}", t0, &mut sealed).unwrap();
        assert_eq!(
            b.next_due(),
            Some(t0 + EVENT_BATCH_MAX_AGE_OFFLINE),
            "offline"
        );
        b.set_connected(true);
        assert_eq!(b.next_due(), Some(t0 + EVENT_BATCH_MAX_AGE));
        b.seal_due(t0 + EVENT_BATCH_MAX_AGE / 2, &mut sealed);
        assert!(sealed.is_empty());
        b.seal_due(t0 + EVENT_BATCH_MAX_AGE, &mut sealed);
        assert_eq!(sealed.len(), 1);
        assert!(b.is_empty());
    }
}
