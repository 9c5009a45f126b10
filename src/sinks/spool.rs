//! A sink's bounded on-disk spool: the events it has taken from the agent shards and not
//! yet delivered, in the order they came, surviving a restart of the frontend.
//!
//! Layout (one folder per sink and frontend): segment files `<20-digit number>.spool`
//! holding one `SpoolEvent` line each, appended to the newest and cut at
//! `segment_bytes`; and `cursor`, `<segment> <offset> <row>`: the first unsent line,
//! replaced atomically (temp + rename) after each delivery. The cursor is not fsynced:
//! after a machine crash the spool may resend what was delivered, which event ids make
//! harmless (`_id`, ReplacingMergeTree, the id in every webhook and file line).
//!
//! Owns: the segment files and the cursor. Must not: send anything, or block longer than
//! one segment's file I/O (the writer and the sender share it under one lock).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::SpoolEvent;

/// Where delivery stands: the first unsent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset_bytes: u64,
    /// Lines of `segment` before `offset_bytes`.
    pub row: u64,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    len_bytes: u64,
    rows: u64,
}

/// Events read for one delivery, and where the cursor goes once they are delivered.
#[derive(Debug)]
pub struct SpoolBatch {
    pub events: Vec<SpoolEvent>,
    pub end: Position,
    /// Lines skipped because they could not be read back.
    pub corrupt: u64,
}

/// What an append did beyond appending.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Unsent events deleted with the oldest segments to stay within `max_bytes`.
    pub dropped: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("sink spool {path}: cannot {op}: {source}")]
pub struct SpoolError {
    op: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Invariant: `segments` is sorted by number and never empty; the cursor is in
/// `segments[0]` at a line boundary; `writer` appends to the last segment.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    cursor: Position,
    writer: File,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded by `max_bytes` on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        use crate::limits::{MAX_SINK_SPOOL_SEGMENT_BYTES, SINK_SPOOL_SEGMENTS_COUNT};
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let segment_bytes =
            (max_bytes / SINK_SPOOL_SEGMENTS_COUNT).min(MAX_SINK_SPOOL_SEGMENT_BYTES);
        let mut numbers = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name();
            let number = name
                .to_str()
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok());
            numbers.extend(number);
        }
        numbers.sort_unstable();
        let mut segments = VecDeque::with_capacity(numbers.len().max(1));
        for number in numbers {
            let path = segment_path(dir, number);
            let (len_bytes, rows) = scan_and_trim(&path)?;
            segments.push_back(Segment {
                number,
                len_bytes,
                rows,
            });
        }
        if segments.is_empty() {
            segments.push_back(Segment {
                number: 0,
                len_bytes: 0,
                rows: 0,
            });
        }
        let cursor = read_cursor(dir, &segments);
        let last = segments.back().expect("never empty").number;
        let writer = open_append(&segment_path(dir, last))?;
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            segments,
            cursor,
            writer,
        };
        spool.forget_sent_segments()?;
        Ok(spool)
    }

    /// Appends whole lines (`rows` of them); drops the oldest segments past the bound.
    pub fn append(&mut self, lines: &[u8], rows: u64) -> Result<Appended, SpoolError> {
        debug_assert!(lines.is_empty() || lines.ends_with(b"\n"));
        if lines.is_empty() {
            return Ok(Appended::default());
        }
        let last = self.segments.back().expect("never empty");
        if last.len_bytes > 0 && last.len_bytes + lines.len() as u64 > self.segment_bytes {
            self.start_segment(last.number + 1)?;
        }
        let path = segment_path(&self.dir, self.segments.back().expect("never empty").number);
        if let Err(e) = self.writer.write_all(lines) {
            // A partial append (disk full) is cut off again, so the segment stays whole
            // lines and matches what the spool counted.
            let counted = self.segments.back().expect("never empty").len_bytes;
            let _ = self.writer.set_len(counted);
            return Err(io_err("append to", &path)(e));
        }
        let last = self.segments.back_mut().expect("never empty");
        last.len_bytes += lines.len() as u64;
        last.rows += rows;
        self.enforce_bound()
    }

    /// Up to `max_rows` unsent events from the cursor on (none if all were sent).
    pub fn read_batch(&self, max_rows: usize) -> Result<SpoolBatch, SpoolError> {
        let mut batch = SpoolBatch {
            events: Vec::new(),
            end: self.cursor,
            corrupt: 0,
        };
        for segment in &self.segments {
            if segment.number < batch.end.segment {
                continue;
            }
            if segment.number > batch.end.segment {
                batch.end = Position {
                    segment: segment.number,
                    offset_bytes: 0,
                    row: 0,
                };
            }
            let path = segment_path(&self.dir, segment.number);
            let mut file = File::open(&path).map_err(io_err("open", &path))?;
            file.seek(SeekFrom::Start(batch.end.offset_bytes))
                .map_err(io_err("seek", &path))?;
            // Read only what the spool has counted: the writer may be mid-append.
            let unread = segment.len_bytes.saturating_sub(batch.end.offset_bytes);
            let mut reader = BufReader::new(file.take(unread));
            let mut line = Vec::new();
            while batch.events.len() + (batch.corrupt as usize) < max_rows {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(io_err("read", &path))?;
                if n == 0 || !line.ends_with(b"\n") {
                    break;
                }
                batch.end.offset_bytes += n as u64;
                batch.end.row += 1;
                match SpoolEvent::parse(&line[..n - 1]) {
                    Some(event) => batch.events.push(event),
                    None => batch.corrupt += 1,
                }
            }
            if batch.events.len() + (batch.corrupt as usize) >= max_rows {
                break;
            }
        }
        Ok(batch)
    }

    /// Records that everything before `end` was delivered. An `end` the cursor already
    /// passed (its segment was dropped for space meanwhile) changes nothing.
    pub fn commit(&mut self, end: Position) -> Result<(), SpoolError> {
        if end <= self.cursor {
            return Ok(());
        }
        self.cursor = end;
        self.forget_sent_segments()?;
        write_cursor(&self.dir, self.cursor)
    }

    /// Events not yet delivered.
    pub fn unsent_rows(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.rows).sum();
        total - self.cursor.row
    }

    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len_bytes).sum()
    }

    /// The time of the oldest unsent event, if one is waiting.
    pub fn oldest_unsent_time_ms(&self) -> Option<u64> {
        if self.unsent_rows() == 0 {
            return None;
        }
        let batch = self.read_batch(1).ok()?;
        batch.events.first().map(|e| e.time_ms)
    }

    fn start_segment(&mut self, number: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, number);
        // The finished segment is flushed once, so a machine crash loses at most the
        // segment being written.
        let _ = self.writer.sync_data();
        self.writer = open_append(&path)?;
        self.segments.push_back(Segment {
            number,
            len_bytes: 0,
            rows: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segments while the spool is over its bound, unsent or not.
    fn enforce_bound(&mut self) -> Result<Appended, SpoolError> {
        let mut appended = Appended::default();
        while self.disk_bytes() > self.max_bytes && self.segments.len() > 1 {
            let oldest = self.segments.pop_front().expect("more than one");
            appended.dropped += oldest.rows - self.cursor.row;
            let next = self.segments.front().expect("more than one").number;
            self.cursor = Position {
                segment: next,
                offset_bytes: 0,
                row: 0,
            };
            remove(&segment_path(&self.dir, oldest.number))?;
        }
        if appended.dropped > 0 {
            write_cursor(&self.dir, self.cursor)?;
        }
        Ok(appended)
    }

    /// Moves the cursor past fully sent segments and deletes them (never the last).
    fn forget_sent_segments(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 {
            let first = self.segments.front().expect("more than one");
            if self.cursor.segment == first.number && self.cursor.offset_bytes < first.len_bytes {
                break;
            }
            let first = self.segments.pop_front().expect("more than one");
            let next = self.segments.front().expect("more than one").number;
            if self.cursor.segment <= first.number {
                self.cursor = Position {
                    segment: next,
                    offset_bytes: 0,
                    row: 0,
                };
            }
            remove(&segment_path(&self.dir, first.number))?;
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.spool"))
}

fn open_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

fn remove(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("delete", path)(e)),
        _ => Ok(()),
    }
}

/// Counts a segment's lines; cuts a torn last line (a crash mid-append) so the next
/// append starts on a line boundary.
fn scan_and_trim(path: &Path) -> Result<(u64, u64), SpoolError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = BufReader::new(file);
    let (mut whole_bytes, mut rows) = (0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_err("read", path))?;
        if n == 0 || !line.ends_with(b"\n") {
            if n > 0 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open", path))?;
                file.set_len(whole_bytes).map_err(io_err("trim", path))?;
            }
            return Ok((whole_bytes, rows));
        }
        whole_bytes += n as u64;
        rows += 1;
    }
}

/// The saved cursor, if it points into a segment that still exists at a plausible place;
/// else the start of the oldest segment (resending is safe, skipping is not).
fn read_cursor(dir: &Path, segments: &VecDeque<Segment>) -> Position {
    let start = Position {
        segment: segments.front().expect("never empty").number,
        offset_bytes: 0,
        row: 0,
    };
    let Ok(text) = fs::read_to_string(dir.join("cursor")) else {
        return start;
    };
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (Some(Some(segment)), Some(Some(offset_bytes)), Some(Some(row))) =
        (fields.next(), fields.next(), fields.next())
    else {
        return start;
    };
    let cursor = Position {
        segment,
        offset_bytes,
        row,
    };
    // A cursor in a deleted segment (all of it sent, or dropped for space) means the
    // oldest segment left is where delivery resumes.
    match segments.iter().find(|s| s.number == segment) {
        Some(s) if offset_bytes <= s.len_bytes && row <= s.rows => cursor,
        _ => start,
    }
}

fn write_cursor(dir: &Path, cursor: Position) -> Result<(), SpoolError> {
    let path = dir.join("cursor");
    let temp = dir.join("cursor.tmp");
    let text = format!(
        "{} {} {}\n",
        cursor.segment, cursor.offset_bytes, cursor.row
    );
    fs::write(&temp, text).map_err(io_err("write", &temp))?;
    fs::rename(&temp, &path).map_err(io_err("replace", &path))
}

#[cfg(test)]
mod tests {
    //! Goal: the spool hands out what was appended, in order, once each; remembers its
    //! place across a reopen; and past its bound drops the oldest and says how many.
    use super::*;

    fn line(i: u64) -> Vec<u8> {
        format!(
            "{{\"id\":\"c:a:1:{i}\",\"client_id\":\"c\",\"artifact\":\"a\",\
             \"time_ms\":{i},\"row\":{{\"pad\":\"{}\"}}}}\n",
            "x".repeat(100)
        )
        .into_bytes()
    }

    #[test]
    fn delivers_in_order_and_resumes_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10 {
            spool.append(&line(i), 1).unwrap();
        }
        let batch = spool.read_batch(4).unwrap();
        assert_eq!(
            batch.events.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        spool.commit(batch.end).unwrap();
        assert_eq!(spool.unsent_rows(), 6);
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.unsent_rows(), 6);
        assert_eq!(spool.oldest_unsent_time_ms(), Some(4));
        let batch = spool.read_batch(100).unwrap();
        assert_eq!(batch.events.len(), 6);
    }

    #[test]
    fn past_its_bound_it_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let max_bytes = 64 * 1024;
        let mut spool = Spool::open(dir.path(), max_bytes).unwrap();
        let mut dropped = 0;
        for i in 0..2000 {
            dropped += spool.append(&line(i), 1).unwrap().dropped;
        }
        assert!(spool.disk_bytes() <= max_bytes, "{}", spool.disk_bytes());
        assert!(dropped > 0);
        assert_eq!(dropped + spool.unsent_rows(), 2000);
        let batch = spool.read_batch(1).unwrap();
        assert_eq!(batch.events[0].time_ms, dropped, "the oldest went first");
    }

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&line(0), 1).unwrap();
        drop(spool);
        let path = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"torn").unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&line(1), 1).unwrap();
        let batch = spool.read_batch(10).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.corrupt, 0);
    }
}
