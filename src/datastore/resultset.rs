//! One (flow, artifact) result set: append-only rows, each batch written exactly once.
//!
//! A [`RowLog`] (see `rowlog.rs` for the three files, the commit record and recovery)
//! whose index entry is the row's offset alone (u64 LE) and whose batches are numbered
//! 0, 1, 2, ... with no gaps: record number `n` carries seq `n`. It must not decide what
//! to answer the agent beyond [`AppendOutcome`]; that is the session's job.

use super::jsonl::validate_and_index;
use super::path::ResultPaths;
use super::rowlog::{self, LogFormat, RowLog, RowReader};
use super::DatastoreError;
use crate::limits::{MAX_RESULT_PAGE_BYTES, MAX_RESULT_PAGE_ROWS};

pub use super::rowlog::BATCH_RECORD_BYTES;

/// Result sets: 8-byte index entries, batch `n` is record `n`.
pub(crate) struct ResultFormat;

impl LogFormat for ResultFormat {
    const INDEX_ENTRY_BYTES: u64 = 8;

    fn seq_fits(seq: u64, position: u64) -> bool {
        seq == position
    }
}

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

/// The writer's handle (see [`RowLog`] for its invariant).
pub struct ResultSet {
    log: RowLog<ResultFormat>,
    /// Reused for every batch's index entries, so appends don't allocate once warm.
    index_buf: Vec<u8>,
}

impl ResultSet {
    /// Opens (creating if needed) the result set and recovers its committed state.
    pub fn open(paths: &ResultPaths) -> Result<Self, DatastoreError> {
        Ok(Self {
            log: RowLog::open(paths)?,
            index_buf: Vec::new(),
        })
    }

    /// Sequence number of the next batch to write; also the count of committed batches.
    pub fn next_seq(&self) -> u64 {
        self.log.committed().batches
    }

    pub fn rows(&self) -> u64 {
        self.log.committed().end_rows
    }

    pub fn bytes(&self) -> u64 {
        self.log.committed().end_offset
    }

    /// Writes `jsonl` as batch `seq` if it is the next one and valid. Invalid rows
    /// write nothing and return `DatastoreError::Jsonl`. With `paths.sync()`, the batch
    /// is durable when this returns `Written`, so the agent may drop it.
    pub fn append_batch(
        &mut self,
        seq: u64,
        jsonl: &[u8],
    ) -> Result<AppendOutcome, DatastoreError> {
        self.log.refresh_if_moved()?;
        let next = self.next_seq();
        if seq < next {
            return Ok(AppendOutcome::Duplicate);
        }
        if seq > next {
            return Ok(AppendOutcome::OutOfOrder { expected: next });
        }
        self.index_buf.clear();
        let base = self.log.committed().end_offset;
        let rows = validate_and_index(jsonl, base, &mut self.index_buf)?;
        self.log.append(seq, jsonl, &self.index_buf)?;
        Ok(AppendOutcome::Written { rows })
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
    let Some(reader) = RowReader::<ResultFormat>::open(paths)? else {
        return Ok((0, Vec::new()));
    };
    let total = reader.committed().end_rows;
    let count = max_rows.min(MAX_RESULT_PAGE_ROWS);
    let page = reader.read_page(start_row, count, MAX_RESULT_PAGE_BYTES, true)?;
    Ok((total, page.rows))
}

/// Totals from the last valid `.batches` record only (one open, one stat, one read).
/// Unlike `read_rows` it does not check that `.jsonl`/`.index` cover the record; after
/// a crash it may count a batch the next writer open then cuts off.
pub fn summary(paths: &ResultPaths) -> Result<ResultSummary, DatastoreError> {
    let c = rowlog::last_record::<ResultFormat>(paths)?.unwrap_or_default();
    Ok(ResultSummary {
        rows: c.end_rows,
        bytes: c.end_offset,
        batches: c.batches,
    })
}

#[cfg(test)]
mod tests;
