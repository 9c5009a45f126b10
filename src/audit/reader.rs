//! Reading the audit trail back: the entries of a time range, newest first, paged.
//!
//! Only the day files that overlap the range are opened. Newest first means: days newest
//! first, and within a day the reverse of the order the lines were appended (which is the
//! order of their times, up to the clock differences of frontends sharing the datastore).
//! Each day file in range is read once to count its entries in range, and once more if
//! the page takes entries from it; the second read stops where the first did, so lines
//! appended meanwhile do not shift the page. A line that is not an entry (corrupt, cut
//! short, too long) is skipped and counted, never an error. Blocking: run it on the
//! blocking pool.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _};
use std::sync::atomic::Ordering;

use super::entry::AuditEntry;
use super::AuditError;
use crate::datastore::{Datastore, UtcDay};
use crate::limits::MAX_AUDIT_LINE_BYTES;
use crate::metrics::metrics;

/// A time range, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRange {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl AuditRange {
    /// The UTC days the range touches, newest first (none for an empty range).
    pub fn days_newest_first(&self) -> impl Iterator<Item = UtcDay> {
        let day_index = |ms: u64| UtcDay::of_unix_ms(ms).start_ms() / UtcDay::MS_PER_DAY;
        let last = day_index(self.end_ms.saturating_sub(1));
        let first = day_index(self.start_ms);
        let count = if self.start_ms < self.end_ms {
            last + 1 - first
        } else {
            0
        };
        (0..count).map(move |back| UtcDay::of_unix_ms((last - back) * UtcDay::MS_PER_DAY))
    }

    pub fn days_count(&self) -> u64 {
        self.days_newest_first().size_hint().0 as u64
    }

    fn contains(&self, time_ms: u64) -> bool {
        self.start_ms <= time_ms && time_ms < self.end_ms
    }
}

/// One page of entries, newest first.
#[derive(Debug, Default)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Entries in the range (all pages).
    pub total: u64,
    /// Lines in the range's day files that were not entries and were skipped.
    pub malformed_lines: u64,
}

/// Entries in `range`, newest first, skipping the first `start_row`, at most `rows`.
pub fn read_page(
    datastore: &Datastore,
    range: AuditRange,
    start_row: u64,
    rows: u64,
) -> Result<AuditPage, AuditError> {
    let mut page = AuditPage::default();
    let page_end = start_row.saturating_add(rows);
    for day in range.days_newest_first() {
        let path = datastore.audit_day_path(day);
        let read_error = |source| AuditError::Read {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_error(e)),
        };
        // The newest-first rows this day holds: [before, before + counted.entries).
        let before = page.total;
        let counted = scan(file, u64::MAX, range, |_, _| {}).map_err(read_error)?;
        page.total += counted.entries;
        page.malformed_lines += counted.malformed;
        let day_end = before + counted.entries;
        if day_end <= start_row || before >= page_end {
            continue;
        }
        let file = File::open(&path).map_err(read_error)?;
        let mut taken = Vec::new();
        scan(file, counted.bytes, range, |i, entry| {
            let row = day_end - 1 - i;
            if row >= start_row && row < page_end {
                taken.push(entry);
            }
        })
        .map_err(read_error)?;
        page.items.extend(taken.into_iter().rev());
    }
    if page.malformed_lines > 0 {
        metrics()
            .audit_malformed_lines
            .fetch_add(page.malformed_lines, Ordering::Relaxed);
    }
    Ok(page)
}

/// What one pass over a day file found.
struct Scanned {
    /// Entries in range.
    entries: u64,
    malformed: u64,
    /// Bytes read: the second pass reads no further.
    bytes: u64,
}

/// Reads at most `max_bytes` of `file`, calling `each(i, entry)` for the i-th entry (in
/// file order) in `range`.
fn scan(
    file: File,
    max_bytes: u64,
    range: AuditRange,
    mut each: impl FnMut(u64, AuditEntry),
) -> io::Result<Scanned> {
    let mut reader = BufReader::new(file.take(max_bytes));
    let mut found = Scanned {
        entries: 0,
        malformed: 0,
        bytes: 0,
    };
    let mut line = Vec::with_capacity(512);
    while let Some(read) = next_line(&mut reader, &mut line)? {
        found.bytes += read.bytes;
        if line.is_empty() && !read.oversized {
            continue;
        }
        let entry = (!read.oversized)
            .then(|| serde_json::from_slice::<AuditEntry>(&line).ok())
            .flatten();
        match entry {
            Some(entry) if range.contains(entry.time_ms) => {
                each(found.entries, entry);
                found.entries += 1;
            }
            Some(_) => {}
            None => found.malformed += 1,
        }
    }
    Ok(found)
}

struct LineRead {
    /// Bytes consumed, newline included.
    bytes: u64,
    /// Longer than any line the writer makes: its bytes were not kept.
    oversized: bool,
}

/// The next line into `line` (without its newline), keeping at most
/// `MAX_AUDIT_LINE_BYTES` of it, so a corrupt file without newlines costs no memory.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<LineRead>> {
    line.clear();
    let mut read = LineRead {
        bytes: 0,
        oversized: false,
    };
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((read.bytes > 0).then_some(read));
        }
        let (chunk, ends) = match memchr::memchr(b'\n', buf) {
            Some(at) => (&buf[..at], at + 1),
            None => (buf, buf.len()),
        };
        if !read.oversized && line.len() + chunk.len() < MAX_AUDIT_LINE_BYTES {
            line.extend_from_slice(chunk);
        } else {
            read.oversized = true;
            line.clear();
        }
        let newline = ends > chunk.len();
        reader.consume(ends);
        read.bytes += ends as u64;
        if newline {
            return Ok(Some(read));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::audit::{action, outcome, via, AuditLog};

    fn entry(time_ms: u64) -> AuditEntry {
        AuditEntry {
            time_ms,
            ..AuditEntry::now(
                "u",
                via::HTTP,
                action::HUNT_START,
                &time_ms.to_string(),
                outcome::OK,
            )
        }
    }

    fn targets(page: &AuditPage) -> Vec<u64> {
        page.items.iter().map(|e| e.time_ms).collect()
    }

    // Goal: pages over several days come newest first, with the range's total, and a
    // corrupt or overlong line is skipped and counted. Method: three days of entries
    // through the writer, plus garbage appended by hand.
    #[test]
    fn pages_across_days_newest_first_skipping_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let log = AuditLog::open(&ds);
        let day = UtcDay::MS_PER_DAY;
        let base = 1_700_000_000_000 / day * day;
        let times: Vec<u64> = (0..3)
            .flat_map(|d| (0..4).map(move |i| base + d * day + i * 1000))
            .collect();
        for &t in &times {
            log.record(entry(t));
        }
        assert!(log.flush(std::time::Duration::from_secs(10)));
        let middle = ds.audit_day_path(UtcDay::of_unix_ms(base + day));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&middle)
            .unwrap();
        f.write_all(b"{not json\n").unwrap();
        f.write_all(&vec![b'x'; 3 * MAX_AUDIT_LINE_BYTES]).unwrap();
        f.write_all(b"\n\n").unwrap();
        drop(f);
        let all = AuditRange {
            start_ms: base,
            end_ms: base + 3 * day,
        };
        let page = read_page(&ds, all, 0, 100).unwrap();
        assert_eq!(page.total, 12);
        assert_eq!(page.malformed_lines, 2);
        let mut newest_first = times.clone();
        newest_first.reverse();
        assert_eq!(targets(&page), newest_first);
        // A page straddling two days.
        let page = read_page(&ds, all, 2, 5).unwrap();
        assert_eq!(targets(&page), newest_first[2..7]);
        // A range inside one day, and one that ends before the first entry of a day.
        let some = AuditRange {
            start_ms: base + day + 1000,
            end_ms: base + 2 * day + 1,
        };
        let page = read_page(&ds, some, 0, 100).unwrap();
        assert_eq!(
            targets(&page),
            [
                base + 2 * day,
                base + day + 3000,
                base + day + 2000,
                base + day + 1000
            ]
        );
        let empty = AuditRange {
            start_ms: base + 5,
            end_ms: base + 5,
        };
        assert_eq!(read_page(&ds, empty, 0, 100).unwrap().total, 0);
        // Past the end: nothing, but the total.
        let page = read_page(&ds, all, 50, 10).unwrap();
        assert!(page.items.is_empty());
        assert_eq!(page.total, 12);
    }

    #[test]
    fn range_days() {
        let day = UtcDay::MS_PER_DAY;
        let r = AuditRange {
            start_ms: day - 1,
            end_ms: 2 * day + 1,
        };
        let days: Vec<String> = r.days_newest_first().map(|d| d.to_string()).collect();
        assert_eq!(days, ["1970-01-03", "1970-01-02", "1970-01-01"]);
        assert_eq!(r.days_count(), 3);
        let one = AuditRange {
            start_ms: day,
            end_ms: 2 * day,
        };
        assert_eq!(one.days_count(), 1);
    }
}
