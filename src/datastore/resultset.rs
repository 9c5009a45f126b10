//! One (flow, artifact) result set: append-only rows, each batch written exactly once.
//!
//! Owns three files (see `path.rs` for where they live):
//! - `<artifact>.jsonl`: the rows, byte for byte as the agent sent them;
//! - `<artifact>.index`: one u64 LE per row, the row's offset in `.jsonl`;
//! - `<artifact>.batches`: one 32-byte record per batch, `(seq, end_offset, end_rows,
//!   check)` as u64 LE, appended only after that batch's rows and index entries. It is
//!   the commit marker: the result set is exactly the batches it records.
//!
//! Everything is recovered from disk on open (an agent may move to another frontend
//! between batches): the last valid record wins, and any bytes past it in the other two
//! files (a crash between the appends) are cut off. It must not decide what to answer
//! the agent beyond [`AppendOutcome`]; that is the session's job.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::atomic::{ensure_dir, sync_dir};
use super::jsonl::validate_and_index;
use super::path::ResultPaths;
use super::{io_error, DatastoreError};
use crate::limits::{MAX_MAX_UPLOAD_BYTES, MAX_RESULT_PAGE_BYTES, MAX_RESULT_PAGE_ROWS};

/// Size of one `.batches` record: four u64 LE.
pub const BATCH_RECORD_BYTES: u64 = 32;
/// Smallest row: `{}\n`. Lets a record be checked for plausibility on its own.
const MIN_ROW_BYTES: u64 = 3;
/// Records read at once when walking back over a damaged tail of `.batches`.
const WALK_CHUNK_RECORDS: u64 = 1024;

/// What [`ResultSet::append_batch`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was the next one and is now committed.
    Written { rows: u64 },
    /// The batch was committed before (a resend); nothing was written.
    Duplicate,
    /// The batch is ahead of the next one; nothing was written.
    OutOfOrder { expected: u64 },
}

/// Cheap totals of a result set, from its last committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResultSummary {
    pub rows: u64,
    pub bytes: u64,
    pub batches: u64,
}

/// The writer's handle. Invariant (between calls): `.jsonl` is `committed.end_offset`
/// bytes, `.index` is `committed.end_rows * 8` bytes and `.batches` is
/// `committed.batches * 32` bytes, unless a write failed and could not be rolled back;
/// then the next append notices (see `refresh_if_moved`) and recovers from disk.
pub struct ResultSet {
    paths: ResultPaths,
    jsonl: File,
    index: File,
    batches: File,
    committed: Committed,
    /// Reused for every batch's index entries, so appends don't allocate once warm.
    index_buf: Vec<u8>,
}

impl ResultSet {
    /// Opens (creating if needed) the result set and recovers its committed state.
    pub fn open(paths: &ResultPaths) -> Result<Self, DatastoreError> {
        ensure_dir(paths.results_dir(), paths.sync())?;
        // Created in this order so a reader that finds `.batches` finds the others.
        let jsonl = open_append(paths.jsonl())?;
        let index = open_append(paths.index())?;
        let batches = open_append(paths.batches())?;
        if paths.sync() {
            sync_dir(paths.results_dir())?;
        }
        let mut set = Self {
            paths: paths.clone(),
            jsonl,
            index,
            batches,
            committed: Committed::default(),
            index_buf: Vec::new(),
        };
        set.recover()?;
        Ok(set)
    }

    /// Sequence number of the next batch to write; also the count of committed batches.
    pub fn next_seq(&self) -> u64 {
        self.committed.batches
    }

    pub fn rows(&self) -> u64 {
        self.committed.end_rows
    }

    pub fn bytes(&self) -> u64 {
        self.committed.end_offset
    }

    /// Writes `jsonl` as batch `seq` if it is the next one and valid. Invalid rows
    /// write nothing and return `DatastoreError::Jsonl`. With `paths.sync()`, the batch
    /// is durable when this returns `Written`, so the agent may drop it.
    pub fn append_batch(
        &mut self,
        seq: u64,
        jsonl: &[u8],
    ) -> Result<AppendOutcome, DatastoreError> {
        self.refresh_if_moved()?;
        let next = self.next_seq();
        if seq < next {
            return Ok(AppendOutcome::Duplicate);
        }
        if seq > next {
            return Ok(AppendOutcome::OutOfOrder { expected: next });
        }
        debug_assert!(
            jsonl.len() as u64 <= MAX_MAX_UPLOAD_BYTES,
            "sessions cap batches at max_upload_bytes"
        );
        self.index_buf.clear();
        let rows = validate_and_index(jsonl, self.committed.end_offset, &mut self.index_buf)?;
        let after = self
            .committed
            .after_batch(jsonl.len() as u64, rows)
            .ok_or_else(|| self.corrupt("size overflow"))?;
        if let Err(err) = self.write_batch(jsonl, after) {
            self.roll_back();
            return Err(err);
        }
        self.committed = after;
        Ok(AppendOutcome::Written { rows })
    }

    /// Rows, index entries, then the commit record; each step only after the last.
    fn write_batch(&mut self, jsonl: &[u8], after: Committed) -> Result<(), DatastoreError> {
        let paths = &self.paths;
        self.jsonl
            .write_all(jsonl)
            .map_err(io_error("append", paths.jsonl()))?;
        self.index
            .write_all(&self.index_buf)
            .map_err(io_error("append", paths.index()))?;
        if paths.sync() {
            // The record must never reach the disk before the data it commits.
            self.jsonl
                .sync_data()
                .map_err(io_error("fsync", paths.jsonl()))?;
            self.index
                .sync_data()
                .map_err(io_error("fsync", paths.index()))?;
        }
        let record = BatchRecord {
            seq: after.batches - 1,
            end_offset: after.end_offset,
            end_rows: after.end_rows,
        };
        self.batches
            .write_all(&record.encode())
            .map_err(io_error("append", paths.batches()))?;
        if paths.sync() {
            self.batches
                .sync_data()
                .map_err(io_error("fsync", paths.batches()))?;
        }
        Ok(())
    }

    /// After a failed write (e.g. ENOSPC halfway), cut every file back to the committed
    /// state. Best effort: if this fails too, the next append sees the lengths differ
    /// and recovers from disk before writing.
    fn roll_back(&mut self) {
        let c = self.committed;
        let _ = self.jsonl.set_len(c.end_offset);
        let _ = self.index.set_len(c.end_rows * 8);
        let _ = self.batches.set_len(c.batches * BATCH_RECORD_BYTES);
    }

    /// One fstat per file per batch: if the files are not the length this handle
    /// committed (another frontend wrote since, or a roll back failed), re-read the
    /// state from disk instead of writing at offsets that are no longer true.
    fn refresh_if_moved(&mut self) -> Result<(), DatastoreError> {
        let lens = self.file_lens()?;
        if lens != self.committed.expected_lens() {
            let path = self.paths.batches().display();
            tracing::info!(path = %path, "result set changed on disk; reloading");
            self.recover()?;
        }
        Ok(())
    }

    fn recover(&mut self) -> Result<(), DatastoreError> {
        let lens = self.file_lens()?;
        let files = Files {
            jsonl: &self.jsonl,
            index: &self.index,
            batches: &self.batches,
        };
        let committed = last_committed(&files, lens, &self.paths)?;
        self.cut_to(committed, lens)?;
        self.committed = committed;
        Ok(())
    }

    /// Truncates what lies past the committed state: a torn record, rows or index
    /// entries of a batch whose record never made it.
    fn cut_to(&mut self, committed: Committed, lens: FileLens) -> Result<(), DatastoreError> {
        let want = committed.expected_lens();
        if lens == want {
            return Ok(());
        }
        tracing::warn!(
            path = %self.paths.batches().display(), ?lens, ?want,
            "result set has uncommitted bytes (crash mid-append?); cutting to the last batch"
        );
        let paths = &self.paths;
        let cuts = [
            (&self.batches, lens.batches, want.batches, paths.batches()),
            (&self.index, lens.index, want.index, paths.index()),
            (&self.jsonl, lens.jsonl, want.jsonl, paths.jsonl()),
        ];
        for (file, have, keep, path) in cuts {
            if have > keep {
                file.set_len(keep).map_err(io_error("truncate", path))?;
                if paths.sync() {
                    file.sync_data().map_err(io_error("fsync", path))?;
                }
            }
        }
        Ok(())
    }

    fn file_lens(&self) -> Result<FileLens, DatastoreError> {
        let files = Files {
            jsonl: &self.jsonl,
            index: &self.index,
            batches: &self.batches,
        };
        files.lens(&self.paths)
    }

    fn corrupt(&self, reason: &str) -> DatastoreError {
        DatastoreError::Corrupt {
            path: self.paths.batches().to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Reads up to `max_rows` rows (capped at `MAX_RESULT_PAGE_ROWS` and, past the first
/// row, at `MAX_RESULT_PAGE_BYTES`) from `start_row`, each without its `\n`. Returns the
/// committed row total too. Seeks via `.index`; never scans `.jsonl`. A result set that
/// was never written reads as empty.
pub fn read_rows(
    paths: &ResultPaths,
    start_row: u64,
    max_rows: u64,
) -> Result<(u64, Vec<Vec<u8>>), DatastoreError> {
    let Some(batches) = open_read(paths.batches())? else {
        return Ok((0, Vec::new()));
    };
    let jsonl = open_read(paths.jsonl())?.ok_or_else(|| corrupt(paths.jsonl(), "missing"))?;
    let index = open_read(paths.index())?.ok_or_else(|| corrupt(paths.index(), "missing"))?;
    let files = Files {
        jsonl: &jsonl,
        index: &index,
        batches: &batches,
    };
    let committed = last_committed(&files, files.lens(paths)?, paths)?;
    let total = committed.end_rows;
    if start_row >= total || max_rows == 0 {
        return Ok((total, Vec::new()));
    }
    let count = max_rows.min(MAX_RESULT_PAGE_ROWS).min(total - start_row);
    let bounds = read_row_bounds(&index, paths, start_row, count, committed)?;
    let rows = read_row_bytes(&jsonl, paths, &bounds)?;
    Ok((total, rows))
}

/// Totals from the last valid `.batches` record only (one open, one stat, one read).
/// Unlike `read_rows` it does not check that `.jsonl`/`.index` cover the record; after
/// a crash it may count a batch the next writer open then cuts off.
pub fn summary(paths: &ResultPaths) -> Result<ResultSummary, DatastoreError> {
    let Some(batches) = open_read(paths.batches())? else {
        return Ok(ResultSummary::default());
    };
    let len = batches
        .metadata()
        .map_err(io_error("stat", paths.batches()))?
        .len();
    let c = walk_back(&batches, paths.batches(), len, |_| Ok(true))?;
    Ok(ResultSummary {
        rows: c.end_rows,
        bytes: c.end_offset,
        batches: c.batches,
    })
}

/// Offsets of rows `start_row .. start_row + count` plus the end of the last one,
/// trimmed so the page stays under `MAX_RESULT_PAGE_BYTES` (at least one row).
fn read_row_bounds(
    index: &File,
    paths: &ResultPaths,
    start_row: u64,
    count: u64,
    committed: Committed,
) -> Result<Vec<u64>, DatastoreError> {
    let has_next = start_row + count < committed.end_rows;
    let entries = count + u64::from(has_next);
    let mut raw = vec![0u8; (entries * 8) as usize];
    index
        .read_exact_at(&mut raw, start_row * 8)
        .map_err(io_error("read", paths.index()))?;
    let mut bounds: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .collect();
    if !has_next {
        bounds.push(committed.end_offset);
    }
    // Paired check on what append wrote: strictly increasing, each row ≥ 3 bytes, inside
    // the committed bytes. A damaged index must give an error, not a panic or junk rows.
    let increasing = bounds.windows(2).all(|w| {
        w[0].checked_add(MIN_ROW_BYTES)
            .is_some_and(|min| min <= w[1])
    });
    if !increasing || bounds.last().is_some_and(|&end| end > committed.end_offset) {
        return Err(corrupt(paths.index(), "row offsets out of order"));
    }
    // No row is longer than the largest batch a config may allow; a bigger gap is a
    // damaged index and must not become a huge allocation.
    if bounds[1] - bounds[0] > MAX_MAX_UPLOAD_BYTES {
        return Err(corrupt(paths.index(), "row longer than any batch"));
    }
    let page_end = bounds[0].saturating_add(MAX_RESULT_PAGE_BYTES);
    let keep = bounds
        .iter()
        .skip(2)
        .take_while(|&&end| end <= page_end)
        .count()
        + 2;
    bounds.truncate(keep);
    Ok(bounds)
}

/// One positioned read for the whole page, then split at the row bounds.
fn read_row_bytes(
    jsonl: &File,
    paths: &ResultPaths,
    bounds: &[u64],
) -> Result<Vec<Vec<u8>>, DatastoreError> {
    let (first, last) = match bounds {
        [first, .., last] => (*first, *last),
        _ => return Ok(Vec::new()),
    };
    let mut page = vec![0u8; (last - first) as usize];
    jsonl
        .read_exact_at(&mut page, first)
        .map_err(io_error("read", paths.jsonl()))?;
    let mut rows = Vec::with_capacity(bounds.len() - 1);
    for w in bounds.windows(2) {
        let row = &page[(w[0] - first) as usize..(w[1] - first) as usize];
        let Some((b'\n', body)) = row.split_last() else {
            return Err(corrupt(paths.jsonl(), "row does not end with a newline"));
        };
        rows.push(body.to_vec());
    }
    Ok(rows)
}

/// The committed state: prefix sums after the last committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Committed {
    batches: u64,
    end_offset: u64,
    end_rows: u64,
}

impl Committed {
    fn after_batch(self, batch_bytes: u64, batch_rows: u64) -> Option<Self> {
        Some(Self {
            batches: self.batches.checked_add(1)?,
            end_offset: self.end_offset.checked_add(batch_bytes)?,
            end_rows: self.end_rows.checked_add(batch_rows)?,
        })
    }

    fn expected_lens(self) -> FileLens {
        FileLens {
            jsonl: self.end_offset,
            index: self.end_rows * 8,
            batches: self.batches * BATCH_RECORD_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileLens {
    jsonl: u64,
    index: u64,
    batches: u64,
}

struct Files<'a> {
    jsonl: &'a File,
    index: &'a File,
    batches: &'a File,
}

impl Files<'_> {
    fn lens(&self, paths: &ResultPaths) -> Result<FileLens, DatastoreError> {
        let len = |f: &File, p: &Path| f.metadata().map(|m| m.len()).map_err(io_error("stat", p));
        Ok(FileLens {
            jsonl: len(self.jsonl, paths.jsonl())?,
            index: len(self.index, paths.index())?,
            batches: len(self.batches, paths.batches())?,
        })
    }
}

/// The last record that is valid on its own and whose rows and index entries are on
/// disk: `.jsonl` and `.index` are long enough, the last committed byte is `\n` and
/// the last row's offset lies inside the committed bytes.
fn last_committed(
    files: &Files<'_>,
    lens: FileLens,
    paths: &ResultPaths,
) -> Result<Committed, DatastoreError> {
    walk_back(files.batches, paths.batches(), lens.batches, |rec| {
        let index_bytes = rec.end_rows * 8; // no overflow: BatchRecord::decode bounds end_rows
        if rec.end_offset > lens.jsonl || index_bytes > lens.index {
            return Ok(false);
        }
        let mut last_byte = [0u8; 1];
        files
            .jsonl
            .read_exact_at(&mut last_byte, rec.end_offset - 1)
            .map_err(io_error("read", paths.jsonl()))?;
        let mut last_row = [0u8; 8];
        files
            .index
            .read_exact_at(&mut last_row, index_bytes - 8)
            .map_err(io_error("read", paths.index()))?;
        Ok(last_byte[0] == b'\n' && u64::from_le_bytes(last_row) < rec.end_offset)
    })
}

/// Walks `.batches` back from its last complete record (a torn partial record at the
/// end is ignored) to the first one that decodes, sits at position `seq`, and passes
/// `accept`. Normally that is the very last record: one 32-byte read. Only a damaged
/// tail (zeros after a power loss, a crash between appends) reads further.
fn walk_back(
    batches: &File,
    path: &Path,
    batches_len: u64,
    mut accept: impl FnMut(&BatchRecord) -> Result<bool, DatastoreError>,
) -> Result<Committed, DatastoreError> {
    let mut hi = batches_len / BATCH_RECORD_BYTES;
    let mut chunk_records = 1;
    let mut chunk = Vec::new();
    while hi > 0 {
        let lo = hi.saturating_sub(chunk_records);
        chunk.resize(((hi - lo) * BATCH_RECORD_BYTES) as usize, 0);
        batches
            .read_exact_at(&mut chunk, lo * BATCH_RECORD_BYTES)
            .map_err(io_error("read", path))?;
        for (i, raw) in chunk
            .chunks_exact(BATCH_RECORD_BYTES as usize)
            .enumerate()
            .rev()
        {
            let position = lo + i as u64;
            let Some(rec) = BatchRecord::decode(raw) else {
                continue;
            };
            if rec.seq == position && accept(&rec)? {
                return Ok(Committed {
                    batches: position + 1,
                    end_offset: rec.end_offset,
                    end_rows: rec.end_rows,
                });
            }
        }
        hi = lo;
        chunk_records = WALK_CHUNK_RECORDS;
    }
    Ok(Committed::default())
}

/// One `.batches` record: the state after batch `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRecord {
    seq: u64,
    end_offset: u64,
    end_rows: u64,
}

impl BatchRecord {
    fn encode(&self) -> [u8; BATCH_RECORD_BYTES as usize] {
        let mut out = [0u8; BATCH_RECORD_BYTES as usize];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.end_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.end_rows.to_le_bytes());
        let check = fnv1a64(&out[0..24]);
        out[24..32].copy_from_slice(&check.to_le_bytes());
        out
    }

    /// `None` unless the check matches (a zero-filled or torn record never does) and
    /// the record is plausible: every batch adds at least one row of at least 3 bytes.
    fn decode(raw: &[u8]) -> Option<Self> {
        let word = |i: usize| {
            raw.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let (seq, end_offset, end_rows, check) = (word(0)?, word(1)?, word(2)?, word(3)?);
        if check != fnv1a64(&raw[0..24]) {
            return None;
        }
        // Also bounds end_rows so `end_rows * 8` (the index length) cannot overflow.
        let plausible = end_rows > seq
            && end_rows.checked_mul(8).is_some()
            && end_rows
                .checked_mul(MIN_ROW_BYTES)
                .is_some_and(|min| min <= end_offset);
        plausible.then_some(Self {
            seq,
            end_offset,
            end_rows,
        })
    }
}

/// FNV-1a, 64 bit (public-domain reference constants): enough to tell a written record
/// from zeros or a torn write; not a defence against deliberate tampering.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn open_append(path: &Path) -> Result<File, DatastoreError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error("open", path))
}

fn open_read(path: &Path) -> Result<Option<File>, DatastoreError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("open", path)(e)),
    }
}

fn corrupt(path: &Path, reason: &str) -> DatastoreError {
    DatastoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
