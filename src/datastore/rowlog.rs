//! The append-only row log under every row set on disk: a flow's result sets
//! (`resultset.rs`) and a client's monitoring day sets (`monitoring.rs`).
//!
//! Owns three files (see `path.rs` for where they live):
//! - `.jsonl`: the rows, byte for byte as the agent sent them (a batch of at least
//!   `DIRECT_WRITE_MIN_BATCH_BYTES` is written with direct writes, `direct_append.rs`);
//! - `.index`: one fixed-size entry per row whose first u64 LE is the row's offset in
//!   `.jsonl` (the format says what, if anything, follows it);
//! - `.batches`: one 32-byte record per batch, `(seq, end_offset, end_rows, check)` as
//!   u64 LE, appended only after that batch's rows and index entries. It is the commit
//!   marker: the row set is exactly the batches it records.
//!
//! Everything is recovered from disk on open (an agent may move to another frontend
//! between batches): the last valid record wins, and any bytes past it in the other two
//! files (a crash between the appends) are cut off. It must not decide which batches to
//! take (sequence rules are the format's), nor what to answer the agent.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::atomic::{ensure_dir, sync_dir};
use super::direct_append::{self, Appended};
use super::path::RowSetPaths;
use super::{io_error, DatastoreError};
use crate::limits::{DIRECT_WRITE_MIN_BATCH_BYTES, MAX_MAX_UPLOAD_BYTES};

/// Size of one `.batches` record: four u64 LE.
pub const BATCH_RECORD_BYTES: u64 = 32;
/// Smallest row: `{}\n`. Lets a record be checked for plausibility on its own.
pub(crate) const MIN_ROW_BYTES: u64 = 3;
/// Records read at once when walking back over a damaged tail of `.batches`.
const WALK_CHUNK_RECORDS: u64 = 1024;

/// What distinguishes one kind of row set on disk.
pub(crate) trait LogFormat {
    /// Bytes of one `.index` entry; the row's offset is its first 8.
    const INDEX_ENTRY_BYTES: u64;
    /// Whether a record carrying `seq` may be record number `position` (0-based). The
    /// append rule itself is the caller's; this only lets recovery reject a record that
    /// could never have been written there.
    fn seq_fits(seq: u64, position: u64) -> bool;
}

const _: () = assert!(BATCH_RECORD_BYTES == 4 * 8);
const _: () = assert!(WIDEST_INDEX_ENTRY_BYTES == 16);

/// The committed state: prefix sums after the last committed batch, and its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Committed {
    pub batches: u64,
    pub end_offset: u64,
    pub end_rows: u64,
    /// The seq of the last committed batch; meaningless while `batches` is 0.
    pub last_seq: u64,
}

impl Committed {
    fn after_batch(self, seq: u64, batch_bytes: u64, batch_rows: u64) -> Option<Self> {
        Some(Self {
            batches: self.batches.checked_add(1)?,
            end_offset: self.end_offset.checked_add(batch_bytes)?,
            end_rows: self.end_rows.checked_add(batch_rows)?,
            last_seq: seq,
        })
    }

    fn expected_lens(self, entry_bytes: u64) -> FileLens {
        FileLens {
            jsonl: self.end_offset,
            index: self.end_rows * entry_bytes,
            batches: self.batches * BATCH_RECORD_BYTES,
        }
    }
}

/// The writer's handle. Invariant (between calls): `.jsonl` is `committed.end_offset`
/// bytes, `.index` is `committed.end_rows` entries and `.batches` is `committed.batches`
/// records, unless a write failed and could not be rolled back; then the next append
/// notices (see `refresh_if_moved`) and recovers from disk.
pub(crate) struct RowLog<F: LogFormat> {
    paths: RowSetPaths,
    files: OwnedFiles,
    direct: Direct,
    committed: Committed,
    format: PhantomData<F>,
}

/// The `.jsonl` file's handle for direct writes.
enum Direct {
    Untried,
    Open(File),
    /// The file system refused them: appends go through the page cache.
    Unsupported,
}

/// Says once per process that the datastore's file system takes no direct writes, so an
/// operator comparing ingest rates knows which path ran.
fn warn_no_direct_writes(path: &Path) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::info!(
            path = %path.display(),
            "the datastore's file system takes no direct (O_DIRECT) writes: result rows \
             are appended through the page cache"
        );
    });
}

impl<F: LogFormat> RowLog<F> {
    /// Opens (creating if needed) the row set and recovers its committed state.
    pub fn open(paths: &RowSetPaths) -> Result<Self, DatastoreError> {
        ensure_dir(paths.dir(), paths.sync())?;
        // Created in this order so a reader that finds `.batches` finds the others.
        let jsonl = open_append(paths.jsonl())?;
        let index = open_append(paths.index())?;
        let batches = open_append(paths.batches())?;
        if paths.sync() {
            sync_dir(paths.dir())?;
        }
        let mut log = Self {
            paths: paths.clone(),
            files: OwnedFiles {
                jsonl,
                index,
                batches,
            },
            direct: Direct::Untried,
            committed: Committed::default(),
            format: PhantomData,
        };
        log.recover()?;
        Ok(log)
    }

    pub fn committed(&self) -> Committed {
        self.committed
    }

    /// The raw index entry of committed row `row` (the first `F::INDEX_ENTRY_BYTES`).
    pub fn entry(&self, row: u64) -> Result<[u8; 16], DatastoreError> {
        read_entry::<F>(&self.files.index, &self.paths, self.committed, row)
    }

    /// Appends one batch: `jsonl` (already validated), its `index` entries (one per row,
    /// `F::INDEX_ENTRY_BYTES` each, offsets from `committed().end_offset`) and then the
    /// commit record carrying `seq`. With `paths.sync()` the batch is durable when this
    /// returns. On error the files are cut back to the committed state (best effort).
    pub fn append(&mut self, seq: u64, jsonl: &[u8], index: &[u8]) -> Result<(), DatastoreError> {
        debug_assert!(
            jsonl.len() as u64 <= MAX_MAX_UPLOAD_BYTES,
            "sessions cap batches at max_upload_bytes"
        );
        debug_assert_eq!(index.len() as u64 % F::INDEX_ENTRY_BYTES, 0);
        let rows = index.len() as u64 / F::INDEX_ENTRY_BYTES;
        let after = self
            .committed
            .after_batch(seq, jsonl.len() as u64, rows)
            .ok_or_else(|| corrupt(self.paths.batches(), "size overflow"))?;
        if let Err(err) = self.write_batch(jsonl, index, after) {
            self.roll_back();
            return Err(err);
        }
        self.committed = after;
        Ok(())
    }

    /// Rows, index entries, then the commit record; each step only after the last.
    fn write_batch(
        &mut self,
        jsonl: &[u8],
        index: &[u8],
        after: Committed,
    ) -> Result<(), DatastoreError> {
        self.write_rows(jsonl)?;
        let (paths, files) = (&self.paths, &mut self.files);
        files
            .index
            .write_all(index)
            .map_err(io_error("append", paths.index()))?;
        if paths.sync() {
            // The record must never reach the disk before the data it commits.
            files
                .jsonl
                .sync_data()
                .map_err(io_error("fsync", paths.jsonl()))?;
            files
                .index
                .sync_data()
                .map_err(io_error("fsync", paths.index()))?;
        }
        let record = BatchRecord {
            seq: after.last_seq,
            end_offset: after.end_offset,
            end_rows: after.end_rows,
        };
        files
            .batches
            .write_all(&record.encode())
            .map_err(io_error("append", paths.batches()))?;
        if paths.sync() {
            files
                .batches
                .sync_data()
                .map_err(io_error("fsync", paths.batches()))?;
        }
        Ok(())
    }

    /// Appends a batch's rows at the committed end: a large batch with direct writes
    /// where the file system has them (`direct_append.rs`), otherwise through the page
    /// cache.
    fn write_rows(&mut self, jsonl: &[u8]) -> Result<(), DatastoreError> {
        if jsonl.len() as u64 >= DIRECT_WRITE_MIN_BATCH_BYTES && self.open_direct()? {
            let path = self.paths.jsonl();
            if let Direct::Open(direct) = &self.direct {
                let start = self.committed.end_offset;
                let appended = direct_append::append(direct, &self.files.jsonl, start, jsonl)
                    .map_err(io_error("append", path))?;
                if appended == Appended::Done {
                    return Ok(());
                }
                warn_no_direct_writes(path);
                self.direct = Direct::Unsupported;
            }
        }
        let path = self.paths.jsonl();
        self.files
            .jsonl
            .write_all(jsonl)
            .map_err(io_error("append", path))
    }

    /// Opens the `.jsonl` file for direct writes on first use; false where the file
    /// system has none.
    fn open_direct(&mut self) -> Result<bool, DatastoreError> {
        if let Direct::Untried = self.direct {
            let path = self.paths.jsonl();
            self.direct = match direct_append::open(path).map_err(io_error("open", path))? {
                Some(file) => Direct::Open(file),
                None => {
                    warn_no_direct_writes(path);
                    Direct::Unsupported
                }
            };
        }
        Ok(matches!(self.direct, Direct::Open(_)))
    }

    /// After a failed write (e.g. ENOSPC halfway), cut every file back to the committed
    /// state. Best effort: if this fails too, the next append sees the lengths differ
    /// and recovers from disk before writing.
    fn roll_back(&mut self) {
        let want = self.committed.expected_lens(F::INDEX_ENTRY_BYTES);
        let _ = self.files.jsonl.set_len(want.jsonl);
        let _ = self.files.index.set_len(want.index);
        let _ = self.files.batches.set_len(want.batches);
    }

    /// One fstat per file: if the files are not the length this handle committed
    /// (another frontend wrote since, or a roll back failed), re-read the state from
    /// disk instead of writing at offsets that are no longer true.
    pub fn refresh_if_moved(&mut self) -> Result<(), DatastoreError> {
        let lens = self.files.borrowed().lens(&self.paths)?;
        if lens != self.committed.expected_lens(F::INDEX_ENTRY_BYTES) {
            let path = self.paths.batches().display();
            tracing::info!(path = %path, "row set changed on disk; reloading");
            self.recover()?;
        }
        Ok(())
    }

    fn recover(&mut self) -> Result<(), DatastoreError> {
        let files = self.files.borrowed();
        let lens = files.lens(&self.paths)?;
        let committed = last_committed::<F>(&files, lens, &self.paths)?;
        self.cut_to(committed, lens)?;
        self.committed = committed;
        Ok(())
    }

    /// Truncates what lies past the committed state: a torn record, rows or index
    /// entries of a batch whose record never made it.
    fn cut_to(&mut self, committed: Committed, lens: FileLens) -> Result<(), DatastoreError> {
        let want = committed.expected_lens(F::INDEX_ENTRY_BYTES);
        if lens == want {
            return Ok(());
        }
        tracing::warn!(
            path = %self.paths.batches().display(), ?lens, ?want,
            "row set has uncommitted bytes (crash mid-append?); cutting to the last batch"
        );
        let (paths, files) = (&self.paths, &self.files);
        let cuts = [
            (&files.batches, lens.batches, want.batches, paths.batches()),
            (&files.index, lens.index, want.index, paths.index()),
            (&files.jsonl, lens.jsonl, want.jsonl, paths.jsonl()),
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
}

/// A reader's view of a row set: its files opened read-only and the committed state it
/// found. Never writes; a torn tail is ignored, not cut (the next writer cuts it).
pub(crate) struct RowReader<F: LogFormat> {
    paths: RowSetPaths,
    files: OwnedFiles,
    committed: Committed,
    format: PhantomData<F>,
}

/// Rows of one page, each without its `\n`, and their raw index entries.
pub(crate) struct Page {
    pub rows: Vec<Vec<u8>>,
    /// `rows.len()` entries of `F::INDEX_ENTRY_BYTES` each.
    pub entries: Vec<u8>,
}

impl<F: LogFormat> RowReader<F> {
    /// `None` when the row set was never written (no `.batches`).
    pub fn open(paths: &RowSetPaths) -> Result<Option<Self>, DatastoreError> {
        let Some(batches) = open_read(paths.batches())? else {
            return Ok(None);
        };
        let jsonl = open_read(paths.jsonl())?.ok_or_else(|| corrupt(paths.jsonl(), "missing"))?;
        let index = open_read(paths.index())?.ok_or_else(|| corrupt(paths.index(), "missing"))?;
        let files = OwnedFiles {
            jsonl,
            index,
            batches,
        };
        let borrowed = files.borrowed();
        let committed = last_committed::<F>(&borrowed, borrowed.lens(paths)?, paths)?;
        Ok(Some(Self {
            paths: paths.clone(),
            files,
            committed,
            format: PhantomData,
        }))
    }

    pub fn committed(&self) -> Committed {
        self.committed
    }

    /// The raw index entry of committed row `row` (the first `F::INDEX_ENTRY_BYTES`).
    pub fn entry(&self, row: u64) -> Result<[u8; 16], DatastoreError> {
        read_entry::<F>(&self.files.index, &self.paths, self.committed, row)
    }

    /// Rows `start_row .. start_row + count` (clipped to the committed rows), trimmed so
    /// their bytes stay within `max_bytes`; with `at_least_one`, the first row is kept
    /// whatever its size (it is itself bounded by the largest batch). Seeks via
    /// `.index`; never scans `.jsonl`.
    pub fn read_page(
        &self,
        start_row: u64,
        count: u64,
        max_bytes: u64,
        at_least_one: bool,
    ) -> Result<Page, DatastoreError> {
        let total = self.committed.end_rows;
        if start_row >= total || count == 0 {
            return Ok(Page {
                rows: Vec::new(),
                entries: Vec::new(),
            });
        }
        let count = count.min(total - start_row);
        let (bounds, mut entries) = self.read_row_bounds(start_row, count)?;
        let page_end = bounds[0].saturating_add(max_bytes);
        let fits = bounds
            .iter()
            .skip(1)
            .take_while(|&&end| end <= page_end)
            .count();
        let keep = if at_least_one { fits.max(1) } else { fits };
        entries.truncate(keep * F::INDEX_ENTRY_BYTES as usize);
        let rows = read_row_bytes(&self.files.jsonl, &self.paths, &bounds[..=keep])?;
        Ok(Page { rows, entries })
    }

    /// Offsets of rows `start_row .. start_row + count` plus the end of the last one,
    /// and those rows' raw index entries.
    fn read_row_bounds(
        &self,
        start_row: u64,
        count: u64,
    ) -> Result<(Vec<u64>, Vec<u8>), DatastoreError> {
        let committed = self.committed;
        let entry_bytes = F::INDEX_ENTRY_BYTES;
        let has_next = start_row + count < committed.end_rows;
        let entries = count + u64::from(has_next);
        let mut raw = vec![0u8; (entries * entry_bytes) as usize];
        self.files
            .index
            .read_exact_at(&mut raw, start_row * entry_bytes)
            .map_err(io_error("read", self.paths.index()))?;
        let mut bounds: Vec<u64> = raw
            .chunks_exact(entry_bytes as usize)
            .map(|c| u64::from_le_bytes(c[..8].try_into().expect("8-byte offset")))
            .collect();
        if has_next {
            raw.truncate((count * entry_bytes) as usize);
        } else {
            bounds.push(committed.end_offset);
        }
        // Paired check on what append wrote: strictly increasing, each row ≥ 3 bytes,
        // inside the committed bytes. A damaged index must give an error, not a panic or
        // junk rows.
        let increasing = bounds.windows(2).all(|w| {
            w[0].checked_add(MIN_ROW_BYTES)
                .is_some_and(|min| min <= w[1])
        });
        let index = self.paths.index();
        if !increasing || bounds.last().is_some_and(|&end| end > committed.end_offset) {
            return Err(corrupt(index, "row offsets out of order"));
        }
        // No row is longer than the largest batch a config may allow; a bigger gap is a
        // damaged index and must not become a huge allocation.
        if bounds
            .windows(2)
            .any(|w| w[1] - w[0] > MAX_MAX_UPLOAD_BYTES)
        {
            return Err(corrupt(index, "row longer than any batch"));
        }
        Ok((bounds, raw))
    }
}

/// The last committed state of `.batches` alone (one open, one stat, one read). Unlike
/// a [`RowReader`] it does not check that `.jsonl`/`.index` cover the record; after a
/// crash it may count a batch the next writer open then cuts off.
pub(crate) fn last_record<F: LogFormat>(
    paths: &RowSetPaths,
) -> Result<Option<Committed>, DatastoreError> {
    let Some(batches) = open_read(paths.batches())? else {
        return Ok(None);
    };
    let len = batches
        .metadata()
        .map_err(io_error("stat", paths.batches()))?
        .len();
    walk_back::<F>(&batches, paths.batches(), len, |_| Ok(true)).map(Some)
}

fn read_entry<F: LogFormat>(
    index: &File,
    paths: &RowSetPaths,
    committed: Committed,
    row: u64,
) -> Result<[u8; WIDEST_INDEX_ENTRY_BYTES as usize], DatastoreError> {
    if row >= committed.end_rows {
        return Err(corrupt(paths.index(), "row past the committed rows"));
    }
    let mut out = [0u8; WIDEST_INDEX_ENTRY_BYTES as usize];
    let entry = &mut out[..F::INDEX_ENTRY_BYTES as usize];
    index
        .read_exact_at(entry, row * F::INDEX_ENTRY_BYTES)
        .map_err(io_error("read", paths.index()))?;
    Ok(out)
}

/// One positioned read for the whole page, then split at the row bounds.
fn read_row_bytes(
    jsonl: &File,
    paths: &RowSetPaths,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLens {
    pub jsonl: u64,
    pub index: u64,
    pub batches: u64,
}

struct OwnedFiles {
    jsonl: File,
    index: File,
    batches: File,
}

impl OwnedFiles {
    fn borrowed(&self) -> Files<'_> {
        Files {
            jsonl: &self.jsonl,
            index: &self.index,
            batches: &self.batches,
        }
    }
}

struct Files<'a> {
    jsonl: &'a File,
    index: &'a File,
    batches: &'a File,
}

impl Files<'_> {
    fn lens(&self, paths: &RowSetPaths) -> Result<FileLens, DatastoreError> {
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
fn last_committed<F: LogFormat>(
    files: &Files<'_>,
    lens: FileLens,
    paths: &RowSetPaths,
) -> Result<Committed, DatastoreError> {
    let entry_bytes = F::INDEX_ENTRY_BYTES;
    walk_back::<F>(files.batches, paths.batches(), lens.batches, |rec| {
        // No overflow: BatchRecord::decode bounds end_rows by the widest entry.
        let index_bytes = rec.end_rows * entry_bytes;
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
            .read_exact_at(&mut last_row, index_bytes - entry_bytes)
            .map_err(io_error("read", paths.index()))?;
        Ok(last_byte[0] == b'\n' && u64::from_le_bytes(last_row) < rec.end_offset)
    })
}

/// Walks `.batches` back from its last complete record (a torn partial record at the
/// end is ignored) to the first one that decodes, fits its position, and passes
/// `accept`. Normally that is the very last record: one 32-byte read. Only a damaged
/// tail (zeros after a power loss, a crash between appends) reads further.
fn walk_back<F: LogFormat>(
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
            if rec.fits_at::<F>(position) && accept(&rec)? {
                return Ok(Committed {
                    batches: position + 1,
                    end_offset: rec.end_offset,
                    end_rows: rec.end_rows,
                    last_seq: rec.seq,
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
pub(crate) struct BatchRecord {
    pub seq: u64,
    pub end_offset: u64,
    pub end_rows: u64,
}

/// The widest index entry of any format: bounds `end_rows` so no format's index length
/// overflows.
const WIDEST_INDEX_ENTRY_BYTES: u64 = 16;

impl BatchRecord {
    pub fn encode(&self) -> [u8; BATCH_RECORD_BYTES as usize] {
        let mut out = [0u8; BATCH_RECORD_BYTES as usize];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.end_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.end_rows.to_le_bytes());
        let check = fnv1a64(&out[0..24]);
        out[24..32].copy_from_slice(&check.to_le_bytes());
        out
    }

    /// `None` unless the check matches (a zero-filled or torn record never does) and
    /// the record is plausible on its own: at least one row, rows of at least 3 bytes.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let word = |i: usize| {
            raw.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let (seq, end_offset, end_rows, check) = (word(0)?, word(1)?, word(2)?, word(3)?);
        if check != fnv1a64(&raw[0..24]) {
            return None;
        }
        let plausible = end_rows > 0
            && end_rows.checked_mul(WIDEST_INDEX_ENTRY_BYTES).is_some()
            && end_rows
                .checked_mul(MIN_ROW_BYTES)
                .is_some_and(|min| min <= end_offset);
        plausible.then_some(Self {
            seq,
            end_offset,
            end_rows,
        })
    }

    /// Whether this can be record number `position`: every batch before it and itself
    /// added at least one row, and the format accepts its seq there.
    pub fn fits_at<F: LogFormat>(&self, position: u64) -> bool {
        self.end_rows > position && F::seq_fits(self.seq, position)
    }
}

const _: () = assert!(WIDEST_INDEX_ENTRY_BYTES >= 8);

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

pub(crate) fn corrupt(path: &Path, reason: &str) -> DatastoreError {
    DatastoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
