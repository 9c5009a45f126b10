//! `file`: each event appended to a JSONL file as its spool line (with its id), the file
//! rotated once it reaches `max_file_bytes`: `<path>` → `<path>.1` → … → `<path>.N`, the
//! oldest deleted. A batch is flushed to the kernel before it counts as delivered.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::delivery::{Deliver, Outcome};
use super::record::SpoolEvent;

pub struct FileSink {
    path: PathBuf,
    max_file_bytes: u64,
    max_files: u32,
    /// The open file and its length; none until the first batch or after an error.
    open: Option<(File, u64)>,
}

impl FileSink {
    pub fn new(path: PathBuf, max_file_bytes: u64, max_files: u32) -> Self {
        Self {
            path,
            max_file_bytes,
            max_files,
            open: None,
        }
    }

    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let len = match &self.open {
            Some((_, len)) => *len,
            None => fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
        };
        if len > 0 && len + lines.len() as u64 > self.max_file_bytes {
            self.open = None;
            rotate(&self.path, self.max_files)?;
        }
        if self.open.is_none() {
            if let Some(parent) = self.path.parent() {
                fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let len = file.metadata()?.len();
            self.open = Some((file, len));
        }
        let (file, len) = self.open.as_mut().expect("opened above");
        let written = file.write_all(lines);
        if written.is_err() {
            // A partial write leaves a torn line: start the next attempt in a new file
            // position read from the disk, not our count.
            self.open = None;
            return written;
        }
        *len += lines.len() as u64;
        Ok(())
    }
}

impl Deliver for FileSink {
    fn deliver(&mut self, events: &[SpoolEvent]) -> Outcome {
        let mut lines = Vec::with_capacity(events.len() * 256);
        for e in events {
            if serde_json::to_writer(&mut lines, e).is_err() {
                return Outcome::retry("cannot encode the batch", None);
            }
            lines.push(b'\n');
        }
        match self.append(&lines) {
            Ok(()) => Outcome::Done { rejected: 0 },
            Err(e) => Outcome::retry(format!("{}: {e}", self.path.display()), None),
        }
    }
}

/// `<path>.N-1` → `<path>.N` … `<path>` → `<path>.1`; what falls past `max_files` is
/// deleted.
fn rotate(path: &Path, max_files: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    match fs::remove_file(numbered(max_files)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..max_files).rev() {
        match fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(path, numbered(1))
}
