//! Uploaded files of a flow: `uploading/<n>` while a file arrives, `uploads/<sanitised
//! path>` once complete (write-once), and `uploads.jsonl`, one [`UploadRecord`] line per
//! finished file in the order they finished. `n` is the agent's upload number
//! (`FileChunk.upload`), which is also the file's number in the API
//! (`GET .../uploads/{n}`).
//!
//! The writer side ([`FlowUploads`]) keeps three things on disk per arriving file:
//! `uploading/<n>.json` (what the agent announced: path, artifact, size, SHA-256; written
//! before the first byte), `uploading/<n>` (the bytes so far: its length is what is
//! stored, and the offset the agent resumes from) and, once complete, the file under
//! `uploads/` plus its index line. Completing is ordered so that a crash at any point
//! leaves the file either resumable or complete and listed:
//! 1. hash the bytes on disk, choose a free name under `uploads/`, and record both in
//!    `uploading/<n>.json` (the intent, replaced atomically);
//! 2. rename `uploading/<n>` to the chosen name (the folders synced per
//!    `fsync_documents`);
//! 3. append the record to `uploads.jsonl` (synced): the commit point;
//! 4. remove `uploading/<n>.json`.
//!
//! Opening the writer finishes any step 2-4 left undone by a crash (the intent says
//! where the file goes) and cuts a torn last line off the index. So an index line always
//! names a file that is in `uploads/`, and `uploads/` never holds part of a file. It must
//! not decide what to answer the agent (sessions/file_upload.rs does), and it never joins
//! an agent path itself: `FlowDir::upload_path` / `stored_upload_path` do.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::atomic::{ensure_dir, read_json, sync_dir, write_json};
use super::path::{sanitise_upload_path, FlowDir};
use super::{io_error, shown, DatastoreError};
use crate::clock::now_ms;
use crate::limits::{HASH_READ_BUFFER_BYTES, MAX_UPLOAD_ERRORS_IN_STATUS_COUNT};

/// One line of `uploads.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The agent's number for the file within the flow (`FileChunk.upload`).
    pub upload: u32,
    /// The artifact that collected it.
    pub artifact: String,
    /// The agent-side path, as the agent sent it (for display; never joined to a path).
    pub path: String,
    /// Where it is stored, relative to the flow's `uploads/` (the sanitised path).
    pub stored: String,
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the stored bytes, lower-case hex.
    pub sha256: String,
    /// Set when the stored file does not match what the agent announced (size or
    /// SHA-256); the file is kept as it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the file completed, ms since the epoch.
    pub time_ms: u64,
    /// What the agent announced, when it differs from what is stored (with `error`): a
    /// resend of the same final chunk is then still recognised as a resend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
}

impl UploadRecord {
    /// Whether a chunk announcing `size` and `sha256` (hex) is for exactly this file.
    pub fn announced_as(&self, size: u64, sha256: &str) -> bool {
        self.expected_size.unwrap_or(self.size) == size
            && self.expected_sha256.as_deref().unwrap_or(&self.sha256) == sha256
    }
}

/// What the agent says about a file, the same in every chunk of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub upload: u32,
    pub artifact: String,
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// `uploading/<n>.json`: a file that is arriving (or being moved into `uploads/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadingMeta {
    pub upload: u32,
    pub artifact: String,
    pub path: String,
    /// Announced size and SHA-256 (hex).
    pub size: u64,
    pub sha256: String,
    pub start_time_ms: u64,
    /// Set once the file is complete: where it goes and what it hashed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Moving>,
}

impl UploadingMeta {
    pub fn matches(&self, a: &Announced) -> bool {
        self.upload == a.upload
            && self.artifact == a.artifact
            && self.path == a.path
            && self.size == a.size
            && self.sha256 == a.sha256
    }
}

/// A complete file's destination under `uploads/` and what its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    pub stored: String,
    pub size: u64,
    pub sha256: String,
}

/// Where upload `n` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Complete and listed in the index.
    Complete(UploadRecord),
    /// Announced; `stored` bytes are on disk.
    Arriving { meta: UploadingMeta, stored: u64 },
    /// Never announced (or given up).
    Unknown,
}

/// The writer's view of a flow's uploads: the index (read incrementally; it only grows)
/// and the files arriving. Recovers from disk on open, since the agent may have sent the
/// earlier chunks through another frontend.
pub struct FlowUploads {
    flow: FlowDir,
    /// Complete files by upload number. Invariant: every one is a line of the index.
    done: HashMap<u32, UploadRecord>,
    /// Sum of `size` over `done`.
    done_bytes: u64,
    /// Bytes of the index read so far (always just past a `\n`).
    index_read_bytes: u64,
}

impl FlowUploads {
    /// Opens the flow's uploads for writing: cuts a torn last index line, finishes any
    /// move a crash interrupted, and forgets leftovers of files already listed.
    pub fn open(flow: &FlowDir) -> Result<Self, DatastoreError> {
        let mut uploads = Self {
            flow: flow.clone(),
            done: HashMap::new(),
            done_bytes: 0,
            index_read_bytes: 0,
        };
        uploads.cut_torn_index_tail()?;
        uploads.refresh()?;
        let mut arriving = uploads.arriving()?;
        arriving.sort_by_key(|m| m.upload);
        for meta in arriving {
            if uploads.done.contains_key(&meta.upload) {
                uploads.forget_arriving(meta.upload)?;
            } else if meta.moving.is_some() {
                uploads.finish_move(&meta)?;
            }
        }
        Ok(uploads)
    }

    /// Reads index lines appended since the last look (by this writer or, after a move
    /// of the agent, by another frontend).
    pub fn refresh(&mut self) -> Result<(), DatastoreError> {
        let path = self.flow.uploads_index();
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("stat", &path)(e)),
        };
        if len < self.index_read_bytes {
            self.done.clear();
            self.done_bytes = 0;
            self.index_read_bytes = 0;
        }
        if len == self.index_read_bytes {
            return Ok(());
        }
        let mut read = self.index_read_bytes;
        let (done, done_bytes) = (&mut self.done, &mut self.done_bytes);
        let result = each_line_from(&path, read, |line, bytes| {
            read += bytes;
            if line.is_empty() {
                return Ok(true);
            }
            let record = parse_record(&path, line)?;
            *done_bytes += record.size;
            if let Some(old) = done.insert(record.upload, record) {
                // Two lines for one upload never come from this writer; count it once.
                *done_bytes -= old.size;
            }
            Ok(true)
        });
        // Lines read stay read even when one fails to parse.
        self.index_read_bytes = read;
        result
    }

    /// Complete files and their bytes.
    pub fn done_totals(&self) -> (u64, u64) {
        (self.done.len() as u64, self.done_bytes)
    }

    /// Where upload `n` stands on disk. A move into `uploads/` that an earlier error
    /// (a full disk) left halfway is finished first.
    pub fn state(&mut self, upload: u32) -> Result<FileState, DatastoreError> {
        if let Some(record) = self.done.get(&upload) {
            return Ok(FileState::Complete(record.clone()));
        }
        let meta_path = self.flow.uploading_meta_path(upload);
        let meta: UploadingMeta = match read_json(&meta_path) {
            Ok(meta) => meta,
            Err(e) if e.is_not_found() => return Ok(FileState::Unknown),
            Err(e) => return Err(e),
        };
        if meta.moving.is_some() {
            return self.finish_move(&meta).map(FileState::Complete);
        }
        let stored = self.stored_bytes(upload)?;
        Ok(FileState::Arriving { meta, stored })
    }

    /// Sum of the announced sizes of files arriving, but for `except`: what they will
    /// add to the flow once complete.
    pub fn arriving_bytes(&self, except: u32) -> Result<u64, DatastoreError> {
        Ok(self
            .arriving()?
            .iter()
            .filter(|m| m.upload != except && !self.done.contains_key(&m.upload))
            .map(|m| m.size)
            .sum())
    }

    /// Starts upload `a.upload`: its announcement first (durable per `fsync_documents`),
    /// then an empty data file.
    pub fn begin(&mut self, a: &Announced) -> Result<UploadingMeta, DatastoreError> {
        let fsync = self.flow.fsync_documents();
        ensure_dir(&self.flow.uploading_dir(), fsync)?;
        let meta = UploadingMeta {
            upload: a.upload,
            artifact: a.artifact.clone(),
            path: a.path.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            start_time_ms: now_ms(),
            moving: None,
        };
        write_json(&self.flow.uploading_meta_path(a.upload), &meta, fsync)?;
        let data = self.flow.uploading_path(a.upload);
        // A data file without its announcement is a leftover: it never held acked bytes.
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&data)
            .map_err(io_error("create", &data))?;
        if fsync {
            file.sync_all().map_err(io_error("fsync", &data))?;
            sync_dir(&self.flow.uploading_dir())?;
        }
        Ok(meta)
    }

    /// Writes `data` at `offset` of upload `n` (the caller has checked that `offset` is
    /// what is stored); durable per `fsync_documents` when this returns. Returns the
    /// bytes stored after it.
    pub fn write_at(
        &mut self,
        upload: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, DatastoreError> {
        let path = self.flow.uploading_path(upload);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let written =
            file.write_all_at(data, offset)
                .and_then(|()| match self.flow.fsync_documents() {
                    true => file.sync_data(),
                    false => Ok(()),
                });
        if let Err(e) = written {
            // Cut back what part of the chunk landed (best effort): the length is what
            // the agent is told is stored, and a disk-full answer must not move it.
            let _ = file.set_len(offset);
            return Err(io_error("write", &path)(e));
        }
        Ok(offset + data.len() as u64)
    }

    /// Completes upload `meta.upload`, whose bytes are all stored: hashes them, moves
    /// the file into `uploads/` under a free name and lists it (see the module doc for
    /// the order). A size or SHA-256 that differs from the announcement is recorded as
    /// the record's `error`; the file is kept as it arrived.
    pub fn complete(&mut self, meta: &UploadingMeta) -> Result<UploadRecord, DatastoreError> {
        let data = self.flow.uploading_path(meta.upload);
        let (size, sha256) = hash_file(&data)?;
        let relative = sanitise_upload_path(&meta.path)?;
        let stored = self.free_name(&relative, meta.upload)?;
        let mut moving = meta.clone();
        moving.moving = Some(Moving {
            stored: stored.to_string_lossy().into_owned(),
            size,
            sha256,
        });
        let fsync = self.flow.fsync_documents();
        write_json(&self.flow.uploading_meta_path(meta.upload), &moving, fsync)?;
        self.finish_move(&moving)
    }

    /// Files announced but not complete, with the bytes stored of each (for the flow's
    /// end: each is an error).
    pub fn incomplete(&self) -> Result<Vec<(UploadingMeta, u64)>, DatastoreError> {
        let mut out = Vec::new();
        for meta in self.arriving()? {
            if !self.done.contains_key(&meta.upload) {
                let stored = self.stored_bytes(meta.upload)?;
                out.push((meta, stored));
            }
        }
        out.sort_by_key(|(m, _)| m.upload);
        Ok(out)
    }

    /// The errors of listed files (SHA-256 or size mismatches), at most
    /// `MAX_UPLOAD_ERRORS_IN_STATUS_COUNT`, in upload order.
    pub fn record_errors(&self) -> Vec<String> {
        let mut failed: Vec<&UploadRecord> =
            self.done.values().filter(|r| r.error.is_some()).collect();
        failed.sort_by_key(|r| r.upload);
        failed
            .into_iter()
            .take(MAX_UPLOAD_ERRORS_IN_STATUS_COUNT)
            .map(|r| {
                format!(
                    "upload {} `{}`: {}",
                    r.upload,
                    shown(&r.path),
                    r.error.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    fn stored_bytes(&self, upload: u32) -> Result<u64, DatastoreError> {
        let path = self.flow.uploading_path(upload);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_error("stat", &path)(e)),
        }
    }

    /// Every `uploading/<n>.json`, in no particular order. Temp files and junk are skipped.
    fn arriving(&self) -> Result<Vec<UploadingMeta>, DatastoreError> {
        let dir = self.flow.uploading_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &dir)(e)),
        };
        let mut metas = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list", &dir))?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let meta: UploadingMeta = read_json(&self.flow.uploading_meta_path(n))?;
            if meta.upload == n {
                metas.push(meta);
            }
        }
        Ok(metas)
    }

    /// Steps 2-4 of completing (module doc); also what recovery runs for an intent found
    /// on open.
    fn finish_move(&mut self, meta: &UploadingMeta) -> Result<UploadRecord, DatastoreError> {
        let moving = meta.moving.as_ref().ok_or(DatastoreError::Mismatch {
            what: "finishing a move that was never started",
        })?;
        let fsync = self.flow.fsync_documents();
        let data = self.flow.uploading_path(meta.upload);
        let target = self.flow.stored_upload_path(&moving.stored)?;
        if data.exists() {
            let parent = target.parent().unwrap_or(Path::new("/"));
            ensure_dir(parent, fsync)?;
            fs::rename(&data, &target).map_err(io_error("rename", &target))?;
            if fsync {
                sync_dir(parent)?;
                sync_dir(&self.flow.uploading_dir())?;
            }
        } else if !target.exists() {
            // Both gone: nothing to list. Forget the file so a resend starts it afresh.
            self.forget_arriving(meta.upload)?;
            return Err(DatastoreError::Corrupt {
                path: data,
                reason: "an upload being completed vanished; it starts again".into(),
            });
        }
        let error = mismatch(meta, moving);
        let record = UploadRecord {
            upload: meta.upload,
            artifact: meta.artifact.clone(),
            path: meta.path.clone(),
            stored: moving.stored.clone(),
            size: moving.size,
            sha256: moving.sha256.clone(),
            expected_size: error.as_ref().map(|_| meta.size),
            expected_sha256: error.as_ref().map(|_| meta.sha256.clone()),
            error,
            time_ms: now_ms(),
        };
        self.append_record(&record)?;
        self.forget_arriving(meta.upload)?;
        Ok(record)
    }

    fn append_record(&mut self, record: &UploadRecord) -> Result<(), DatastoreError> {
        let path = self.flow.uploads_index();
        let mut line = serde_json::to_vec(record).map_err(|source| DatastoreError::Document {
            path: path.clone(),
            source,
        })?;
        line.push(b'\n');
        self.refresh()?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let start = file.metadata().map_err(io_error("stat", &path))?.len();
        let written = file
            .write_all(&line)
            .and_then(|()| match self.flow.fsync_documents() {
                true => file.sync_data(),
                false => Ok(()),
            });
        if let Err(e) = written {
            let _ = file.set_len(start);
            return Err(io_error("append", &path)(e));
        }
        if start == 0 && self.flow.fsync_documents() {
            sync_dir(self.flow.path())?;
        }
        self.refresh()
    }

    /// Removes `uploading/<n>.json` and any data file left beside it.
    fn forget_arriving(&self, upload: u32) -> Result<(), DatastoreError> {
        for path in [
            self.flow.uploading_meta_path(upload),
            self.flow.uploading_path(upload),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path)(e)),
            }
        }
        Ok(())
    }

    /// A crash mid-append can leave a last line without its `\n`: cut it (its file's
    /// intent is still in `uploading/` and is appended again).
    fn cut_torn_index_tail(&self) -> Result<(), DatastoreError> {
        let path = self.flow.uploads_index();
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("open", &path)(e)),
        };
        let len = file.metadata().map_err(io_error("stat", &path))?.len();
        let mut end = len;
        let mut buf = vec![0u8; 4096];
        while end > 0 {
            let from = end.saturating_sub(buf.len() as u64);
            let want = (end - from) as usize;
            file.seek(SeekFrom::Start(from))
                .map_err(io_error("seek", &path))?;
            file.read_exact(&mut buf[..want])
                .map_err(io_error("read", &path))?;
            if let Some(i) = memchr::memrchr(b'\n', &buf[..want]) {
                end = from + i as u64 + 1;
                break;
            }
            end = from;
        }
        if end < len {
            tracing::warn!(path = %path.display(), "cutting a torn last line off the uploads index");
            file.set_len(end).map_err(io_error("truncate", &path))?;
        }
        Ok(())
    }

    /// `relative` if free; else with `~<n>` appended to its file name; else (a folder
    /// on the way is a file of another upload) under `~<n>/`. `~` never survives the
    /// sanitiser, so neither form can be an agent path of another upload.
    fn free_name(&self, relative: &Path, upload: u32) -> Result<PathBuf, DatastoreError> {
        let uploads = self.flow.uploads_dir();
        if self.folders_usable(&uploads, relative)? {
            if !exists(&uploads.join(relative))? {
                return Ok(relative.to_path_buf());
            }
            let mut suffixed = relative.as_os_str().to_os_string();
            suffixed.push(format!("~{upload}"));
            let suffixed = PathBuf::from(suffixed);
            if !exists(&uploads.join(&suffixed))? {
                return Ok(suffixed);
            }
        }
        Ok(PathBuf::from(format!("~{upload}")).join(relative))
    }

    /// Whether every folder on the way to `relative` is a folder or not there yet.
    fn folders_usable(&self, uploads: &Path, relative: &Path) -> Result<bool, DatastoreError> {
        let mut at = uploads.to_path_buf();
        let Some(parent) = relative.parent() else {
            return Ok(true);
        };
        for component in parent.components() {
            at.push(component);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(io_error("stat", &at)(e)),
            }
        }
        Ok(true)
    }
}

fn exists(path: &Path) -> Result<bool, DatastoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("stat", path)(e)),
    }
}

fn mismatch(meta: &UploadingMeta, moving: &Moving) -> Option<String> {
    if moving.size != meta.size {
        return Some(format!(
            "size mismatch: the agent announced {} bytes, {} are stored",
            meta.size, moving.size
        ));
    }
    (moving.sha256 != meta.sha256).then(|| {
        format!(
            "SHA-256 mismatch: the agent announced {}, the stored bytes hash to {}",
            meta.sha256, moving.sha256
        )
    })
}

/// Size and SHA-256 (hex) of the file's bytes, read back from disk: the check covers
/// what is stored, whichever frontends wrote it.
fn hash_file(path: &Path) -> Result<(u64, String), DatastoreError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_READ_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_error("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn parse_record(path: &Path, line: &[u8]) -> Result<UploadRecord, DatastoreError> {
    serde_json::from_slice(line).map_err(|e| DatastoreError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("uploads index line: {e}"),
    })
}

/// Calls `each` with every complete, non-empty line of the flow's index (without its
/// `\n`), until it returns false. A last line without its `\n` is one still being
/// written: not seen.
fn each_line(
    flow: &FlowDir,
    mut each: impl FnMut(&[u8]) -> Result<bool, DatastoreError>,
) -> Result<(), DatastoreError> {
    each_line_from(&flow.uploads_index(), 0, |line, _| match line.is_empty() {
        true => Ok(true),
        false => each(line),
    })
}

/// Calls `each` with every complete line of the index at `path` from byte `from` (the
/// line without its `\n`, and the bytes it took), until it returns false. No file: no
/// lines. A last line without its `\n` is not seen.
fn each_line_from(
    path: &Path,
    from: u64,
    mut each: impl FnMut(&[u8], u64) -> Result<bool, DatastoreError>,
) -> Result<(), DatastoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("open", path)(e)),
    };
    if from > 0 {
        file.seek(SeekFrom::Start(from))
            .map_err(io_error("seek", path))?;
    }
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error("read", path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        if !each(&line[..line.len() - 1], n as u64)? {
            return Ok(());
        }
    }
}

/// Reads `rows` records from `start_row` of the flow's uploads index, and how many there
/// are in all. A flow without uploads has none. A line that does not parse is corrupt; a
/// last line without its `\n` is one still being written and is not counted yet.
pub fn read_index(
    flow: &FlowDir,
    start_row: u64,
    rows: u64,
) -> Result<(u64, Vec<UploadRecord>), DatastoreError> {
    let path = flow.uploads_index();
    let (mut total, mut out) = (0u64, Vec::new());
    each_line(flow, |line| {
        if total >= start_row && (out.len() as u64) < rows {
            out.push(parse_record(&path, line)?);
        }
        total += 1;
        Ok(true)
    })?;
    Ok((total, out))
}

/// The listed record of upload `n`, if the file is complete.
pub fn find_record(flow: &FlowDir, upload: u32) -> Result<Option<UploadRecord>, DatastoreError> {
    let path = flow.uploads_index();
    // Lines are written by serde in field order, `upload` first: the others are skipped
    // without being parsed.
    let needle = format!("{{\"upload\":{upload},");
    let mut found = None;
    each_line(flow, |line| {
        if line.starts_with(needle.as_bytes()) {
            found = Some(parse_record(&path, line)?);
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Complete files of a flow and their bytes (for `status.json`), read from the index.
pub fn totals(flow: &FlowDir) -> Result<(u64, u64), DatastoreError> {
    let path = flow.uploads_index();
    let (mut files, mut bytes) = (0u64, 0u64);
    each_line(flow, |line| {
        files += 1;
        bytes += parse_record(&path, line)?.size;
        Ok(true)
    })?;
    Ok((files, bytes))
}

#[cfg(test)]
mod tests;
