//! The bounded buffer event batches wait in until the server acknowledges them: on disk
//! for the real agent (one file per batch, so an agent offline or restarted for an hour
//! delivers its events when it returns), in memory for loadgen's simulated agents.
//!
//! Owns: batch sequence numbers (`seq = max(now_us, last + 1)`, one counter for every
//! artifact of the agent, so it is strictly increasing per artifact too, and kept
//! monotone across restarts), the byte bound and its when-full policy (the oldest
//! batches go, their rows are counted per artifact and reported in the next batch of that
//! artifact the server is sent, as `dropped_before`), and the files. Must not: batch rows
//! or talk to the server.
//!
//! On disk, in the buffer's folder:
//!   `<seq, 20 digits>.<artifact>.evb`  one batch: FNV-1a-64 (LE) of the rest, then the
//!                                      prost-encoded `EventBatch`
//!   `state.json`                       `{"last_seq", "dropped": {artifact: rows}}`
//! Every file is replaced atomically (temp sibling + rename), so a crash leaves the old
//! file or the new one; a batch file that does not check out is discarded and logged.
//! `state.json` is written when the drop counts change and when the buffer empties, the
//! only times the batch files themselves would not tell the last seq.

use crate::agent::outbox::disk::{create_private_dir, write_atomically};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::agent::events::DropReason;
use crate::limits::MAX_EVENT_BATCH_FILE_BYTES;
use crate::protocol::pb;

const BATCH_SUFFIX: &str = ".evb";
const STATE_FILE: &str = "state.json";
/// Longest artifact name that goes into a file name (catalogue names are ~30 chars).
const MAX_FILE_ARTIFACT_CHARS: usize = 128;
/// What one row's time costs in the buffer's accounting (as in the encoded batch).
const TIME_MS_BYTES: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("event buffer {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Rows given up: which artifact, how many, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub artifact: String,
    pub rows: u64,
    pub reason: DropReason,
}

pub struct EventBuffer {
    /// None: memory only (loadgen).
    dir: Option<PathBuf>,
    max_bytes: u64,
    /// Invariant: the sum of `entries[..].bytes`.
    total_bytes: u64,
    /// Invariant: in increasing `(seq, artifact)` order.
    entries: VecDeque<Entry>,
    /// Invariant: at least every entry's seq.
    last_seq: u64,
    /// Rows dropped per artifact and not yet reported in an acknowledged batch.
    dropped: BTreeMap<String, u64>,
    /// The batch handed out by `front` and not yet answered, with the drop count it
    /// carries: never dropped for room, and its count is settled by its ack.
    in_flight: Option<InFlight>,
}

struct Entry {
    seq: u64,
    artifact: String,
    rows: u32,
    bytes: u64,
    /// The batch itself in memory mode; on disk it is read back when sent.
    batch: Option<pb::EventBatch>,
}

struct InFlight {
    seq: u64,
    artifact: String,
    dropped_before: u64,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct State {
    last_seq: u64,
    #[serde(default)]
    dropped: BTreeMap<String, u64>,
}

/// What a batch counts against the bound: its rows and their times.
fn batch_bytes(batch: &pb::EventBatch) -> u64 {
    batch.jsonl.len() as u64 + batch.time_ms.len() as u64 * TIME_MS_BYTES
}

impl EventBuffer {
    /// A buffer in memory: lost with the process (loadgen's agents).
    pub fn memory(max_bytes: u64) -> Self {
        Self {
            dir: None,
            max_bytes,
            total_bytes: 0,
            entries: VecDeque::new(),
            last_seq: 0,
            dropped: BTreeMap::new(),
            in_flight: None,
        }
    }

    /// The buffer in `dir` (made if missing, owner-only), with the batches a previous
    /// run left there, oldest first. Also returns what was dropped to fit `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Vec<Dropped>), BufferError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| BufferError::Io { path, source }
        };
        create_private_dir(dir).map_err(io(dir))?;
        let state = read_state(&dir.join(STATE_FILE));
        let mut buffer = Self::memory(max_bytes);
        buffer.dir = Some(dir.to_path_buf());
        buffer.last_seq = state.last_seq;
        buffer.dropped = state.dropped;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                // A write cut short by a crash: never renamed, so never a batch.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some((seq, artifact)) = parse_batch_name(name) else {
                continue;
            };
            match read_batch_file(&path) {
                Ok(batch) if batch.seq == seq && batch.artifact == artifact => {
                    found.push(Entry {
                        seq,
                        artifact,
                        rows: batch.row_count,
                        bytes: batch_bytes(&batch),
                        batch: None,
                    });
                }
                other => {
                    let why = other.err().map_or("does not match its name".into(), |e| e);
                    tracing::warn!(path = %path.display(), "event batch discarded: {why}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by(|a, b| (a.seq, &a.artifact).cmp(&(b.seq, &b.artifact)));
        for entry in found {
            buffer.last_seq = buffer.last_seq.max(entry.seq);
            buffer.total_bytes += entry.bytes;
            buffer.entries.push_back(entry);
        }
        let dropped = buffer.make_room(0);
        Ok((buffer, dropped))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn on_disk(&self) -> bool {
        self.dir.is_some()
    }

    /// Numbers `batch`, keeps it, and drops the oldest batches while over the bound.
    pub fn add(&mut self, batch: pb::EventBatch) -> Vec<Dropped> {
        self.add_at(batch, crate::clock::now_us())
    }

    /// `add` with the clock reading given (tests turn the clock back with it).
    pub fn add_at(&mut self, mut batch: pb::EventBatch, now_us: u64) -> Vec<Dropped> {
        debug_assert_eq!(batch.row_count as usize, batch.time_ms.len());
        batch.seq = now_us.max(self.last_seq + 1);
        batch.dropped_before = 0;
        let mut entry = Entry {
            seq: batch.seq,
            artifact: batch.artifact.clone(),
            rows: batch.row_count,
            bytes: batch_bytes(&batch),
            batch: None,
        };
        if let Err(why) = self.store(&batch) {
            tracing::warn!(artifact = %batch.artifact, "event batch not buffered: {why}");
            let dropped = Dropped {
                artifact: batch.artifact,
                rows: batch.row_count.into(),
                reason: DropReason::Storage,
            };
            self.count_dropped(std::slice::from_ref(&dropped));
            return vec![dropped];
        }
        self.last_seq = batch.seq;
        if self.dir.is_none() {
            entry.batch = Some(batch);
        }
        self.total_bytes += entry.bytes;
        self.entries.push_back(entry);
        // The batch just added stays even alone above the bound: dropping what was
        // just produced would lose the newest events to keep the older ones.
        self.make_room(1)
    }

    /// The oldest batch, to send, with `dropped_before` filled in for its artifact.
    /// Also returns batches that could not be read back (dropped).
    pub fn front(&mut self) -> (Option<pb::EventBatch>, Vec<Dropped>) {
        let mut lost = Vec::new();
        while let Some(entry) = self.entries.front() {
            let batch = match (&entry.batch, &self.dir) {
                (Some(batch), _) => Ok(batch.clone()),
                (None, Some(dir)) => read_batch_file(&dir.join(batch_name(entry))),
                (None, None) => unreachable!("a memory buffer keeps every batch"),
            };
            match batch {
                Ok(mut batch) => {
                    batch.dropped_before = self.dropped.get(&batch.artifact).copied().unwrap_or(0);
                    self.in_flight = Some(InFlight {
                        seq: batch.seq,
                        artifact: batch.artifact.clone(),
                        dropped_before: batch.dropped_before,
                    });
                    self.count_dropped(&lost);
                    return (Some(batch), lost);
                }
                Err(why) => {
                    let entry = self.entries.pop_front().expect("front exists");
                    tracing::warn!(artifact = %entry.artifact, seq = entry.seq,
                        "event batch lost from the buffer: {why}");
                    self.total_bytes -= entry.bytes;
                    self.remove_file(&entry);
                    lost.push(Dropped {
                        artifact: entry.artifact,
                        rows: entry.rows.into(),
                        reason: DropReason::Storage,
                    });
                }
            }
        }
        self.count_dropped(&lost);
        (None, lost)
    }

    /// The server has the batch (OK or DUPLICATE): forget it, and the drop count it
    /// reported. Returns its rows, or None if it was no longer held.
    pub fn acked(&mut self, seq: u64, artifact: &str) -> Option<u64> {
        let entry = self.take(seq, artifact)?;
        if let Some(sent) = self
            .in_flight
            .take()
            .filter(|f| f.seq == seq && f.artifact == artifact)
        {
            if sent.dropped_before > 0 {
                let left = self.dropped.get(artifact).copied().unwrap_or(0);
                let left = left.saturating_sub(sent.dropped_before);
                if left == 0 {
                    self.dropped.remove(artifact);
                } else {
                    self.dropped.insert(artifact.to_string(), left);
                }
                self.write_state();
            }
        }
        self.forget(&entry);
        Some(entry.rows.into())
    }

    /// The server refused the batch for good: drop it and count its rows as dropped.
    pub fn refused(&mut self, seq: u64, artifact: &str) -> Option<Dropped> {
        self.in_flight = None;
        let entry = self.take(seq, artifact)?;
        let dropped = Dropped {
            artifact: entry.artifact.clone(),
            rows: entry.rows.into(),
            reason: DropReason::Refused,
        };
        self.count_dropped(std::slice::from_ref(&dropped));
        self.forget(&entry);
        Some(dropped)
    }

    /// The server said the batch is too large (413): it becomes two batches, the first
    /// under its seq and the second under seq + 1 when no later batch of the artifact
    /// holds that number (seqs come from the clock in µs, so there is room in practice);
    /// otherwise, and for a single row, what cannot be resent smaller is dropped.
    pub fn split(&mut self, batch: &pb::EventBatch) -> Vec<Dropped> {
        self.in_flight = None;
        let Some(entry) = self.take(batch.seq, &batch.artifact) else {
            return Vec::new();
        };
        let room = !self
            .entries
            .iter()
            .any(|e| e.artifact == batch.artifact && e.seq == batch.seq + 1);
        let halves = split_batch(batch);
        let mut dropped = Vec::new();
        match halves {
            Some((first, second)) => {
                let kept = if room {
                    vec![first, second]
                } else {
                    dropped.push(Dropped {
                        artifact: second.artifact.clone(),
                        rows: second.row_count.into(),
                        reason: DropReason::RowTooLarge,
                    });
                    vec![first]
                };
                self.forget_file_only(&entry);
                for (i, mut half) in kept.into_iter().enumerate() {
                    half.seq = batch.seq + i as u64;
                    half.dropped_before = 0;
                    if let Err(why) = self.store(&half) {
                        tracing::warn!(artifact = %half.artifact, "split event batch lost: {why}");
                        dropped.push(Dropped {
                            artifact: half.artifact,
                            rows: half.row_count.into(),
                            reason: DropReason::Storage,
                        });
                        continue;
                    }
                    self.last_seq = self.last_seq.max(half.seq);
                    self.insert_sorted(half);
                }
            }
            None => {
                dropped.push(Dropped {
                    artifact: entry.artifact.clone(),
                    rows: entry.rows.into(),
                    reason: DropReason::RowTooLarge,
                });
                self.forget(&entry);
            }
        }
        self.count_dropped(&dropped);
        dropped
    }

    /// Seq of the last batch numbered (tests check it survives a reopen).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn insert_sorted(&mut self, batch: pb::EventBatch) {
        let entry = Entry {
            seq: batch.seq,
            artifact: batch.artifact.clone(),
            rows: batch.row_count,
            bytes: batch_bytes(&batch),
            batch: self.dir.is_none().then_some(batch),
        };
        let at = self
            .entries
            .iter()
            .position(|e| (e.seq, &e.artifact) > (entry.seq, &entry.artifact))
            .unwrap_or(self.entries.len());
        self.total_bytes += entry.bytes;
        self.entries.insert(at, entry);
    }

    /// Removes the entry `(seq, artifact)` from the index and the byte count.
    fn take(&mut self, seq: u64, artifact: &str) -> Option<Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| e.seq == seq && e.artifact == artifact)?;
        let entry = self.entries.remove(at).expect("position is in range");
        self.total_bytes -= entry.bytes;
        Some(entry)
    }

    /// Deletes a taken entry's file; when it was the last, records the last seq first,
    /// since no batch file will tell it any more.
    fn forget(&mut self, entry: &Entry) {
        if self.entries.is_empty() {
            self.write_state();
        }
        self.remove_file(entry);
    }

    fn forget_file_only(&mut self, entry: &Entry) {
        self.remove_file(entry);
    }

    /// Drops the oldest batches (never the one in flight, nor the newest `keep_newest`)
    /// until the buffer is within its bound.
    fn make_room(&mut self, keep_newest: usize) -> Vec<Dropped> {
        let mut dropped: Vec<Dropped> = Vec::new();
        let mut i = 0;
        while self.total_bytes > self.max_bytes && i + keep_newest < self.entries.len() {
            let busy = self.in_flight.as_ref().is_some_and(|f| {
                f.seq == self.entries[i].seq && f.artifact == self.entries[i].artifact
            });
            if busy {
                i += 1;
                continue;
            }
            let entry = self.entries.remove(i).expect("index is in range");
            self.total_bytes -= entry.bytes;
            self.remove_file(&entry);
            match dropped.iter_mut().find(|d| d.artifact == entry.artifact) {
                Some(d) => d.rows += u64::from(entry.rows),
                None => dropped.push(Dropped {
                    artifact: entry.artifact,
                    rows: entry.rows.into(),
                    reason: DropReason::BufferFull,
                }),
            }
        }
        self.count_dropped(&dropped);
        dropped
    }

    /// Adds drops to the counts the next batches report, and persists the counts.
    fn count_dropped(&mut self, dropped: &[Dropped]) {
        if dropped.is_empty() {
            return;
        }
        for d in dropped {
            *self.dropped.entry(d.artifact.clone()).or_default() += d.rows;
        }
        self.write_state();
    }

    fn store(&self, batch: &pb::EventBatch) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if !is_file_safe(&batch.artifact) {
            return Err(format!(
                "artifact name `{}` cannot name a file",
                batch.artifact.escape_debug()
            ));
        }
        let payload = batch.encode_to_vec();
        let mut bytes = Vec::with_capacity(8 + payload.len());
        bytes.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let path = dir.join(format!(
            "{:020}.{}{BATCH_SUFFIX}",
            batch.seq, batch.artifact
        ));
        write_atomically(&path, &bytes, false).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn remove_file(&self, entry: &Entry) {
        if let Some(dir) = &self.dir {
            let path = dir.join(batch_name(entry));
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "event batch not removed: {e}");
                }
            }
        }
    }

    fn write_state(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let state = State {
            last_seq: self.last_seq,
            dropped: self.dropped.clone(),
        };
        let text = serde_json::to_vec(&state).expect("a map of strings and numbers serialises");
        let path = dir.join(STATE_FILE);
        if let Err(e) = write_atomically(&path, &text, false) {
            tracing::warn!(path = %path.display(), "event buffer state not written: {e}");
        }
    }
}

fn batch_name(entry: &Entry) -> String {
    format!("{:020}.{}{BATCH_SUFFIX}", entry.seq, entry.artifact)
}

/// `<20 digits>.<artifact>.evb` -> (seq, artifact).
fn parse_batch_name(name: &str) -> Option<(u64, String)> {
    let stem = name.strip_suffix(BATCH_SUFFIX)?;
    let (digits, artifact) = stem.split_once('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !is_file_safe(artifact) {
        return None;
    }
    Some((digits.parse().ok()?, artifact.to_string()))
}

/// Artifact names as the catalogue spells them: letters, digits, `.`, `_`, `-`, not
/// starting with a dot; nothing that could leave the folder or hide a file.
fn is_file_safe(artifact: &str) -> bool {
    !artifact.is_empty()
        && artifact.len() <= MAX_FILE_ARTIFACT_CHARS
        && !artifact.starts_with('.')
        && artifact
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn read_batch_file(path: &Path) -> Result<pb::EventBatch, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_EVENT_BATCH_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_EVENT_BATCH_FILE_BYTES || bytes.len() < 8 {
        return Err(format!("{} bytes is not a batch file", bytes.len()));
    }
    let (check, payload) = bytes.split_at(8);
    if check != fnv1a64(payload).to_le_bytes() {
        return Err("checksum mismatch".into());
    }
    let batch = pb::EventBatch::decode(payload).map_err(|e| e.to_string())?;
    if batch.row_count as usize != batch.time_ms.len() {
        return Err("row count and times disagree".into());
    }
    Ok(batch)
}

fn read_state(path: &Path) -> State {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "event buffer state unreadable, starting afresh: {e}");
            State::default()
        }),
        Err(_) => State::default(),
    }
}

/// Splits a batch's rows into two halves (None for a single row).
fn split_batch(batch: &pb::EventBatch) -> Option<(pb::EventBatch, pb::EventBatch)> {
    let rows = batch.time_ms.len();
    if rows < 2 {
        return None;
    }
    let mid_row = rows / 2;
    let cut = batch
        .jsonl
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(mid_row - 1)
        .map(|(i, _)| i + 1)?;
    let half = |jsonl: bytes::Bytes, times: &[u64]| pb::EventBatch {
        artifact: batch.artifact.clone(),
        seq: batch.seq,
        jsonl,
        row_count: times.len() as u32,
        time_ms: times.to_vec(),
        dropped_before: 0,
    };
    Some((
        half(batch.jsonl.slice(..cut), &batch.time_ms[..mid_row]),
        half(batch.jsonl.slice(cut..), &batch.time_ms[mid_row..]),
    ))
}

/// FNV-1a, 64 bits: catches a torn or foreign file; not a defence against tampering
/// (whoever can write the folder can run as the agent).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    //! Goal: the buffer keeps unacknowledged batches across a reopen in order, holds its
    //! bound by dropping the oldest and reporting their rows, and numbers batches
    //! monotonically even when the clock stands still or goes back. Method: real files
    //! in a temporary folder, the clock reading passed in.

    use super::*;

    fn batch(artifact: &str, rows: usize, pad: usize) -> pb::EventBatch {
        let mut jsonl = Vec::new();
        for i in 0..rows {
            jsonl.extend_from_slice(
                format!("{{\"i\":{i},\"p\":\"{}\"}}\n", "x".repeat(pad)).as_bytes(),
            );
        }
        pb::EventBatch {
            artifact: artifact.into(),
            seq: 0,
            jsonl: jsonl.into(),
            row_count: rows as u32,
            time_ms: (0..rows as u64).map(|i| 1_700_000_000_000 + i).collect(),
            dropped_before: 0,
        }
    }

    #[test]
    fn unacked_batches_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buf, dropped) = EventBuffer::open(dir.path(), 1 << 20).unwrap();
        assert!(dropped.is_empty() && buf.is_empty());
        buf.add_at(batch("Linux.Events.ProcessStart", 3, 10), 1_000);
        buf.add_at(batch("Generic.Client.Stats", 1, 10), 1_000);
        buf.add_at(batch("Linux.Events.ProcessStart", 2, 10), 5_000);
        let (first, _) = buf.front();
        let first = first.unwrap();
        assert_eq!((first.seq, first.row_count), (1_000, 3));
        assert_eq!(buf.acked(first.seq, &first.artifact), Some(3));
        drop(buf);
        // A leftover temp file and a foreign file are not batches.
        std::fs::write(dir.path().join("00000000000000000009.X.evb.tmp"), b"junk").unwrap();
        std::fs::write(dir.path().join("00000000000000000010.X.evb"), b"junk").unwrap();
        let (mut buf, _) = EventBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(buf.len(), 2);
        let mut seen = Vec::new();
        while let (Some(b), _) = buf.front() {
            seen.push((b.seq, b.artifact.clone(), b.row_count, b.jsonl.clone()));
            buf.acked(b.seq, &b.artifact);
        }
        assert_eq!(
            seen.iter()
                .map(|s| (s.0, s.1.as_str(), s.2))
                .collect::<Vec<_>>(),
            vec![
                (1_001, "Generic.Client.Stats", 1),
                (5_000, "Linux.Events.ProcessStart", 2)
            ]
        );
        assert_eq!(seen[1].3, batch("Linux.Events.ProcessStart", 2, 10).jsonl);
        assert!(!dir.path().join("00000000000000000010.X.evb").exists());
    }

    #[test]
    fn seq_stays_monotone_across_reopen_when_the_clock_does_not_advance() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buf, _) = EventBuffer::open(dir.path(), 1 << 20).unwrap();
        buf.add_at(batch("A", 1, 1), 7_000);
        buf.add_at(batch("A", 1, 1), 7_000);
        let (b, _) = buf.front();
        assert_eq!(b.unwrap().seq, 7_000);
        // Everything acknowledged: no batch file is left to tell the last seq.
        for seq in [7_000, 7_001] {
            buf.front();
            assert!(buf.acked(seq, "A").is_some());
        }
        assert!(buf.is_empty());
        drop(buf);
        let (mut buf, _) = EventBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(buf.last_seq(), 7_001);
        buf.add_at(batch("A", 1, 1), 7_000);
        buf.add_at(batch("B", 1, 1), 10);
        drop(buf);
        // And with batches still buffered, the clock going back.
        let (mut buf, _) = EventBuffer::open(dir.path(), 1 << 20).unwrap();
        buf.add_at(batch("A", 1, 1), 1);
        let mut seqs = Vec::new();
        while let (Some(b), _) = buf.front() {
            seqs.push(b.seq);
            buf.acked(b.seq, &b.artifact);
        }
        assert_eq!(seqs, vec![7_002, 7_003, 7_004]);
    }

    #[test]
    fn over_the_bound_the_oldest_go_and_their_rows_are_reported() {
        for on_disk in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let one = batch_bytes(&batch("A", 4, 100));
            let bound = one * 3;
            let mut buf = if on_disk {
                EventBuffer::open(dir.path(), bound).unwrap().0
            } else {
                EventBuffer::memory(bound)
            };
            let mut dropped = Vec::new();
            for i in 0..5u64 {
                dropped.extend(buf.add_at(batch("A", 4, 100), 100 + i));
            }
            dropped.extend(buf.add_at(batch("B", 1, 1), 200));
            assert!(buf.total_bytes() <= bound + one);
            let rows: u64 = dropped.iter().map(|d| d.rows).sum();
            assert_eq!(rows, 12, "three batches of 4 rows dropped ({on_disk})");
            assert!(dropped
                .iter()
                .all(|d| d.artifact == "A" && d.reason == DropReason::BufferFull));
            let (front, _) = buf.front();
            let front = front.unwrap();
            assert_eq!(front.seq, 103, "the oldest went first");
            assert_eq!(front.dropped_before, 12);
            buf.acked(front.seq, "A");
            let (next, _) = buf.front();
            assert_eq!(next.unwrap().dropped_before, 0, "reported once");
            if on_disk {
                let files = std::fs::read_dir(dir.path()).unwrap().count();
                assert_eq!(files, 3, "two batch files and the state");
            }
        }
    }

    #[test]
    fn drop_counts_survive_a_reopen_and_the_batch_in_flight_is_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch_bytes(&batch("A", 2, 50));
        let (mut buf, _) = EventBuffer::open(dir.path(), one * 2).unwrap();
        buf.add_at(batch("A", 2, 50), 1);
        let (sent, _) = buf.front();
        let sent = sent.unwrap();
        buf.add_at(batch("A", 2, 50), 2);
        let dropped = buf.add_at(batch("A", 2, 50), 3);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].rows, 2);
        assert!(
            buf.acked(sent.seq, "A").is_some(),
            "the batch in flight was kept"
        );
        drop(buf);
        let (mut buf, _) = EventBuffer::open(dir.path(), one * 2).unwrap();
        let (front, _) = buf.front();
        let front = front.unwrap();
        assert_eq!((front.seq, front.dropped_before), (3, 2));
    }

    #[test]
    fn a_refused_batch_is_dropped_and_counted_and_a_split_keeps_every_row() {
        let mut buf = EventBuffer::memory(1 << 20);
        buf.add_at(batch("A", 5, 10), 10);
        buf.add_at(batch("A", 1, 10), 20);
        let (b, _) = buf.front();
        let b = b.unwrap();
        assert!(buf.split(&b).is_empty());
        let mut rows = Vec::new();
        while let (Some(b), _) = buf.front() {
            rows.push((b.seq, b.row_count));
            let refused = buf.refused(b.seq, &b.artifact).unwrap();
            assert_eq!(refused.reason, DropReason::Refused);
        }
        assert_eq!(rows, vec![(10, 2), (11, 3), (20, 1)]);
        buf.add_at(batch("A", 1, 10), 30);
        let (b, _) = buf.front();
        assert_eq!(b.unwrap().dropped_before, 6);
    }
}
