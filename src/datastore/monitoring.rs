//! A client's monitoring events on disk: one day set per (client, event artifact, UTC
//! day) at `clients/<id>/monitoring/<artifact>/<YYYY-MM-DD>.{jsonl,index,batches}`.
//!
//! A day set is a [`RowLog`] (see `rowlog.rs`: rows as sent, then index entries, then a
//! 32-byte commit record; recovery cuts uncommitted tails) whose index entry is 16 bytes,
//! `(row offset, time key)` as u64 LE, and whose commit records carry the agent's batch
//! seq (strictly increasing, gaps allowed). The time key is the row's `time_ms`, raised
//! to the previous row's key when the agent's clock stepped back, so keys never decrease
//! within a day and a time range is two binary searches over `.index`, never a scan.
//!
//! An [`EventStream`] is what one connection writes for one (client, artifact): it
//! remembers the highest seq written over all the artifact's day files (read from disk
//! when it is made), so a batch is written once even when the agent resends it to
//! another frontend or after midnight. Files are opened per batch and closed again (see
//! `sessions/flows.rs` for the open-file budget). Must not: know sessions or HTTP, or
//! decide which artifacts are event artifacts (the catalogue's job).

use std::collections::BTreeMap;

use super::jsonl::{validate_and_index, JsonlError};
use super::listing::ids_in;
use super::path::{ArtifactName, ClientDir, UtcDay};
use super::rowlog::{last_record, LogFormat, RowLog, RowReader};
use super::DatastoreError;
use crate::limits::{MAX_RESULT_PAGE_BYTES, MAX_RESULT_PAGE_ROWS};

/// Day sets: 16-byte `(offset, time key)` index entries; any increasing seqs.
pub(crate) struct DayFormat;

impl LogFormat for DayFormat {
    const INDEX_ENTRY_BYTES: u64 = 16;

    fn seq_fits(_seq: u64, _position: u64) -> bool {
        true
    }
}

/// Why an event batch was refused. Nothing of a refused batch is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventBatchError {
    #[error("{times} time_ms values for {rows} rows")]
    TimeCount { times: u64, rows: u64 },
    #[error("rows span more than one UTC day ({first} and {other})")]
    SpansDays { first: UtcDay, other: UtcDay },
    #[error("time_ms {time_ms} is past 9999-12-31")]
    TimeOutOfRange { time_ms: u64 },
    #[error("{0}")]
    Jsonl(JsonlError),
}

/// What [`EventStream::append`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAppend {
    /// Committed to the day set of `day`.
    Written { rows: u64, day: UtcDay },
    /// Its seq is not above the last one written for the artifact; nothing was written.
    Duplicate,
}

/// One (client, artifact) event stream as a connection writes it.
/// Invariant: `last_seq` is at least the seq of every batch committed in the artifact's
/// day files when it was last read, and the seq of every batch written through it since.
pub struct EventStream {
    client: ClientDir,
    artifact: ArtifactName,
    last_seq: Option<u64>,
    /// Reused per batch: offsets from validation, then the 16-byte index entries.
    offsets: Vec<u8>,
    entries: Vec<u8>,
}

impl EventStream {
    /// Reads the highest seq committed in any of the artifact's day files: one small
    /// read per day file (three opens), once per connection and artifact.
    pub fn open(client: &ClientDir, artifact: &ArtifactName) -> Result<Self, DatastoreError> {
        let mut last_seq = None;
        for day in days_of(client, artifact)? {
            let paths = client.day_paths(artifact, day);
            if let Some(reader) = RowReader::<DayFormat>::open(&paths)? {
                let c = reader.committed();
                if c.batches > 0 {
                    last_seq = last_seq.max(Some(c.last_seq));
                }
            }
        }
        Ok(Self {
            client: client.clone(),
            artifact: artifact.clone(),
            last_seq,
            offsets: Vec::new(),
            entries: Vec::new(),
        })
    }

    /// The highest seq written for the artifact, as far as this stream knows.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// What the agent should send next: one above the last seq written.
    pub fn next_seq(&self) -> u64 {
        self.last_seq.map_or(0, |s| s.saturating_add(1))
    }

    /// Writes the batch `seq` (`jsonl` rows, one `time_ms` each, all in one UTC day) to
    /// its day set unless a batch with this seq or a higher one was written before. A
    /// refused batch creates no file. With fsync on, `Written` means durable.
    pub fn append(
        &mut self,
        seq: u64,
        jsonl: &[u8],
        time_ms: &[u64],
    ) -> Result<EventAppend, DatastoreError> {
        self.offsets.clear();
        let rows =
            validate_and_index(jsonl, 0, &mut self.offsets).map_err(EventBatchError::Jsonl)?;
        if rows != time_ms.len() as u64 {
            let times = time_ms.len() as u64;
            return Err(EventBatchError::TimeCount { times, rows }.into());
        }
        let day = batch_day(time_ms)?;
        if self.last_seq.is_some_and(|last| seq <= last) {
            return Ok(EventAppend::Duplicate);
        }
        let mut log = RowLog::<DayFormat>::open(&self.client.day_paths(&self.artifact, day))?;
        let committed = log.committed();
        if committed.batches > 0 && seq <= committed.last_seq {
            // Written through another frontend since this stream read the day files.
            self.last_seq = self.last_seq.max(Some(committed.last_seq));
            return Ok(EventAppend::Duplicate);
        }
        let previous_key = match committed.end_rows {
            0 => 0,
            n => time_key(&log.entry(n - 1)?),
        };
        self.entries.clear();
        fill_entries(
            &self.offsets,
            time_ms,
            committed.end_offset,
            previous_key,
            &mut self.entries,
        );
        log.append(seq, jsonl, &self.entries)?;
        self.last_seq = Some(seq);
        Ok(EventAppend::Written { rows, day })
    }
}

/// The single UTC day of a batch's rows.
fn batch_day(time_ms: &[u64]) -> Result<UtcDay, EventBatchError> {
    let day_of = |t: u64| {
        UtcDay::checked_of_unix_ms(t).ok_or(EventBatchError::TimeOutOfRange { time_ms: t })
    };
    // validate_and_index refuses an empty batch, so there is a first time.
    let first = day_of(
        *time_ms
            .first()
            .ok_or(EventBatchError::TimeCount { times: 0, rows: 0 })?,
    )?;
    for &t in time_ms {
        let other = day_of(t)?;
        if other != first {
            return Err(EventBatchError::SpansDays { first, other });
        }
    }
    Ok(first)
}

/// `(offset + base, key)` per row, keys raised so they never go below the previous one.
fn fill_entries(offsets: &[u8], time_ms: &[u64], base: u64, mut key: u64, out: &mut Vec<u8>) {
    debug_assert_eq!(offsets.len(), time_ms.len() * 8);
    out.reserve(time_ms.len() * 16);
    for (raw, &t) in offsets.chunks_exact(8).zip(time_ms) {
        let offset = u64::from_le_bytes(raw.try_into().expect("8-byte offset")) + base;
        key = key.max(t);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&key.to_le_bytes());
    }
}

fn time_key(entry: &[u8; 16]) -> u64 {
    u64::from_le_bytes(entry[8..16].try_into().expect("8-byte key"))
}

/// One page of events in a time range: the rows in range over all days, and the page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MonitoringPage {
    /// Rows with a time key in `[start_ms, end_ms)`, over every day set.
    pub total_rows: u64,
    /// `(time key, row without its \n)`, in day order then write order.
    pub items: Vec<(u64, Vec<u8>)>,
}

/// Rows of `artifact` whose time key is in `[start_ms, end_ms)`, skipping the first
/// `start_row` of them, at most `max_rows` (capped at `MAX_RESULT_PAGE_ROWS` and, past the
/// first row, `MAX_RESULT_PAGE_BYTES`). Each day set in range costs two binary searches
/// over its index; only the page's rows are read.
pub fn read_range(
    client: &ClientDir,
    artifact: &ArtifactName,
    start_ms: u64,
    end_ms: u64,
    start_row: u64,
    max_rows: u64,
) -> Result<MonitoringPage, DatastoreError> {
    let mut page = MonitoringPage::default();
    let mut skip = start_row;
    let mut rows_left = max_rows.min(MAX_RESULT_PAGE_ROWS);
    let mut bytes_left = MAX_RESULT_PAGE_BYTES;
    let days = days_of(client, artifact)?
        .into_iter()
        .filter(|d| d.end_ms() > start_ms && d.start_ms() < end_ms);
    for day in days {
        let Some(reader) = RowReader::<DayFormat>::open(&client.day_paths(artifact, day))? else {
            continue;
        };
        let lo = first_row_at_or_after(&reader, start_ms)?;
        let hi = first_row_at_or_after(&reader, end_ms)?.max(lo);
        page.total_rows += hi - lo;
        let from = lo + skip.min(hi - lo);
        skip -= skip.min(hi - lo);
        if from == hi || rows_left == 0 || bytes_left == 0 {
            continue;
        }
        let count = rows_left.min(hi - from);
        let first_of_page = page.items.is_empty();
        let got = reader.read_page(from, count, bytes_left, first_of_page)?;
        let got_rows = got.rows.len() as u64;
        for (row, entry) in got.rows.into_iter().zip(got.entries.chunks_exact(16)) {
            let key = time_key(entry.try_into().expect("16-byte entry"));
            bytes_left = bytes_left.saturating_sub(row.len() as u64 + 1);
            page.items.push((key, row));
        }
        rows_left -= got_rows;
        if got_rows < count {
            // The byte budget cut the page here: a later day's rows must not follow a gap.
            bytes_left = 0;
        }
    }
    Ok(page)
}

/// The first committed row whose time key is ≥ `time_ms` (`end_rows` if none): a binary
/// search over the index, one 16-byte read per step.
fn first_row_at_or_after(
    reader: &RowReader<DayFormat>,
    time_ms: u64,
) -> Result<u64, DatastoreError> {
    let (mut lo, mut hi) = (0u64, reader.committed().end_rows);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if time_key(&reader.entry(mid)?) < time_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The days with a day set of `artifact`, oldest first.
fn days_of(client: &ClientDir, artifact: &ArtifactName) -> Result<Vec<UtcDay>, DatastoreError> {
    let dir = client.monitoring_artifact_dir(artifact);
    let suffix = super::path::RowSetPaths::BATCHES_SUFFIX;
    let mut days = ids_in(&dir, suffix, |s| UtcDay::parse(s).ok_or(()))?
        .map(|r| r.map(|(day, _)| day))
        .collect::<Result<Vec<_>, _>>()?;
    days.sort_unstable();
    Ok(days)
}

/// Every event artifact the client has day sets of, each with its days and their
/// committed rows (from the last commit record: one read per day).
pub fn list_monitoring(
    client: &ClientDir,
) -> Result<BTreeMap<ArtifactName, Vec<(UtcDay, u64)>>, DatastoreError> {
    let mut out = BTreeMap::new();
    for entry in ids_in(&client.monitoring_dir(), "", ArtifactName::parse)? {
        let (artifact, _) = entry?;
        let mut days = Vec::new();
        for day in days_of(client, &artifact)? {
            let committed = last_record::<DayFormat>(&client.day_paths(&artifact, day))?;
            days.push((day, committed.map_or(0, |c| c.end_rows)));
        }
        out.insert(artifact, days);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
