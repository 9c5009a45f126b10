//! `Linux.Events.LogTail`: new lines of a text log (parameter `path`), one row each,
//! from the end of the file as it was when the query started. Polled every
//! `LOG_TAIL_POLL_INTERVAL`:
//! - rotation by rename (logrotate's default): the path names another file; the old one
//!   is read to its end first (a writer may still have appended), then the new one from
//!   its start;
//! - truncation (logrotate's `copytruncate`): the file is shorter than what was read;
//!   reading starts again at its start;
//! - a missing file is waited for, and read from its start when it appears.
//!
//! A line longer than `MAX_LOG_LINE_BYTES` is cut there and marked `truncated`.
//! Known gap: a file truncated and refilled past the old length between two polls
//! looks like a file that grew, and its first bytes are skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::agent::events::stop::StopSignal;
use crate::artifacts::{ArtifactError, LOG_TAIL};
use crate::limits::{LOG_TAIL_POLL_INTERVAL, MAX_LOG_LINE_BYTES, MAX_LOG_READ_PER_POLL_BYTES};

/// Bytes read per `read` call while catching up.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(super) fn run(
    params: &BTreeMap<String, String>,
    emit: &dyn Fn(Value),
    stop: &StopSignal,
) -> Result<(), ArtifactError> {
    let path = params.get("path").map(PathBuf::from).unwrap_or_default();
    if !path.is_absolute() {
        return Err(ArtifactError::BadParameter {
            artifact: LOG_TAIL.into(),
            parameter: "path".into(),
            reason: "must be an absolute path".into(),
        });
    }
    let mut tail = LogTail::start(path);
    loop {
        tail.poll(emit);
        if stop.wait(LOG_TAIL_POLL_INTERVAL) {
            return Ok(());
        }
    }
}

pub(super) struct LogTail {
    path: PathBuf,
    path_text: String,
    /// The file being read (None until the path exists).
    file: Option<Open>,
    /// A line begun but not yet ended; at most `MAX_LOG_LINE_BYTES`.
    partial: Vec<u8>,
    /// The current line was already sent cut: skip to its newline.
    skipping: bool,
    /// Errors are logged once per kind of trouble, not once per poll.
    complained: bool,
}

struct Open {
    file: File,
    /// (device, inode): which file the path named when it was opened.
    id: (u64, u64),
    offset: u64,
}

impl LogTail {
    /// Starts at the end of the file as it is now.
    pub(super) fn start(path: PathBuf) -> Self {
        let path_text = path.to_string_lossy().into_owned();
        let mut tail = Self {
            path,
            path_text,
            file: None,
            partial: Vec::new(),
            skipping: false,
            complained: false,
        };
        if let Ok(mut open) = open(&tail.path) {
            open.offset = open.file.metadata().map(|m| m.len()).unwrap_or(0);
            tail.file = Some(open);
        }
        tail
    }

    /// Emits every complete new line (up to `MAX_LOG_READ_PER_POLL_BYTES` of reading).
    pub(super) fn poll(&mut self, emit: &dyn Fn(Value)) {
        let mut budget = MAX_LOG_READ_PER_POLL_BYTES;
        let drained = match self.file.as_mut() {
            Some(open) => {
                let len = open.file.metadata().map(|m| m.len()).unwrap_or(open.offset);
                if len < open.offset {
                    // Truncated in place: what is there now is new.
                    open.offset = 0;
                    self.partial.clear();
                    self.skipping = false;
                }
                self.read_new(&mut budget, emit)
            }
            None => true,
        };
        if !drained {
            return; // more to read in the current file first
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) if Some((meta.dev(), meta.ino())) != self.file.as_ref().map(|o| o.id) => {
                // Rotated (or appeared): the old file is read to its end; a last line
                // without a newline will never be finished, so it goes as it is.
                if self.file.is_some() {
                    self.end_line(emit);
                }
                match open(&self.path) {
                    Ok(new) => {
                        self.file = Some(new);
                        self.complained = false;
                        self.read_new(&mut budget, emit);
                    }
                    Err(e) => self.complain(&e),
                }
            }
            Ok(_) => {}
            // Renamed away and not yet recreated: keep the old file for late writes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.complain(&e),
        }
    }

    /// Reads from the current file's offset; true when it reached the end.
    fn read_new(&mut self, budget: &mut usize, emit: &dyn Fn(Value)) -> bool {
        let Some(open) = self.file.as_mut() else {
            return true;
        };
        if let Err(e) = open.file.seek(SeekFrom::Start(open.offset)) {
            self.complain(&e);
            return true;
        }
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            if *budget == 0 {
                return false;
            }
            let want = chunk.len().min(*budget);
            let n = match open.file.read(&mut chunk[..want]) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let e = e.to_string();
                    tracing::debug!(path = %self.path_text, "log read failed: {e}");
                    return true;
                }
            };
            open.offset += n as u64;
            *budget -= n;
            let data = &chunk[..n];
            let mut start = 0;
            for at in memchr::memchr_iter(b'\n', data) {
                let line = &data[start..at];
                start = at + 1;
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                if self.partial.is_empty() {
                    emit_line(&self.path_text, line, emit);
                } else {
                    let whole_bytes = self.partial.len() + line.len();
                    let room = MAX_LOG_LINE_BYTES.saturating_sub(self.partial.len());
                    self.partial
                        .extend_from_slice(&line[..line.len().min(room)]);
                    let cut = whole_bytes > MAX_LOG_LINE_BYTES;
                    emit_row(&self.path_text, &self.partial, cut, emit);
                    self.partial.clear();
                }
            }
            if !self.skipping {
                self.partial.extend_from_slice(&data[start..]);
                if self.partial.len() >= MAX_LOG_LINE_BYTES {
                    // No newline within the bound: send what fits, skip the rest.
                    self.partial.truncate(MAX_LOG_LINE_BYTES);
                    emit_row(&self.path_text, &self.partial, true, emit);
                    self.partial.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// Sends a begun line as it is (its file will not grow any more).
    fn end_line(&mut self, emit: &dyn Fn(Value)) {
        if !self.partial.is_empty() {
            emit_row(&self.path_text, &self.partial, false, emit);
            self.partial.clear();
        }
        self.skipping = false;
    }

    fn complain(&mut self, e: &std::io::Error) {
        if !self.complained {
            tracing::warn!(path = %self.path_text, "log not readable: {e}");
            self.complained = true;
        }
    }
}

fn open(path: &Path) -> std::io::Result<Open> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok(Open {
        file,
        id: (meta.dev(), meta.ino()),
        offset: 0,
    })
}

/// A complete line (without its newline), cut to the bound if it is longer.
fn emit_line(path: &str, line: &[u8], emit: &dyn Fn(Value)) {
    let truncated = line.len() > MAX_LOG_LINE_BYTES;
    emit_row(
        path,
        &line[..line.len().min(MAX_LOG_LINE_BYTES)],
        truncated,
        emit,
    );
}

fn emit_row(path: &str, line: &[u8], truncated: bool, emit: &dyn Fn(Value)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    emit(json!({
        "path": path,
        "line": String::from_utf8_lossy(line),
        "truncated": truncated,
    }));
}

#[cfg(test)]
mod tests {
    //! Goal: LogTail sends each new line once, from the end of the file at start, across
    //! appends in pieces, rotation by rename (late writes to the old file included),
    //! truncation, and an over-long line. Method: a real file changed between polls.

    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    fn lines(tail: &mut LogTail) -> Vec<String> {
        let rows = Mutex::new(Vec::new());
        tail.poll(&|row| rows.lock().unwrap().push(row));
        rows.into_inner()
            .unwrap()
            .iter()
            .map(|r| {
                let mark = if r["truncated"] == true { "~" } else { "" };
                format!("{mark}{}", r["line"].as_str().unwrap())
            })
            .collect()
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn appends_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.log");
        append(&path, "before the start\n");
        let mut tail = LogTail::start(path.clone());
        assert!(lines(&mut tail).is_empty(), "starts at the end");
        append(&path, "one\ntw");
        assert_eq!(lines(&mut tail), ["one"]);
        append(&path, "o\r\n");
        assert_eq!(lines(&mut tail), ["two"]);

        // Rotation by rename, with a late write to the old file and no newline at its end.
        let old = dir.path().join("auth.log.1");
        std::fs::rename(&path, &old).unwrap();
        assert!(lines(&mut tail).is_empty());
        append(&old, "late\nunfinished");
        append(&path, "new file\n");
        assert_eq!(lines(&mut tail), ["late", "unfinished", "new file"]);
        append(&old, "after the switch\n");
        append(&path, "more\n");
        assert_eq!(lines(&mut tail), ["more"]);

        // Truncation in place (copytruncate).
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        append(&path, "fresh\n");
        assert_eq!(lines(&mut tail), ["fresh"]);

        // An over-long line is cut once and the rest skipped.
        let long = "x".repeat(MAX_LOG_LINE_BYTES + 100);
        append(&path, &format!("{long}\nshort\n"));
        let got = lines(&mut tail);
        assert_eq!(got.len(), 2, "{}", got.len());
        assert_eq!(got[0].len(), MAX_LOG_LINE_BYTES + 1);
        assert!(got[0].starts_with('~'));
        assert_eq!(got[1], "short");
        // The same, arriving in pieces without a newline for a while.
        append(&path, &"y".repeat(MAX_LOG_LINE_BYTES - 10));
        assert!(lines(&mut tail).is_empty());
        append(&path, &"y".repeat(50));
        assert_eq!(lines(&mut tail).len(), 1);
        append(&path, "yyy\nend\n");
        assert_eq!(lines(&mut tail), ["end"]);
    }

    #[test]
    fn a_missing_file_is_read_from_its_start_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut tail = LogTail::start(path.clone());
        assert!(lines(&mut tail).is_empty());
        append(&path, "first\nsecond\n");
        assert_eq!(lines(&mut tail), ["first", "second"]);
    }
}
