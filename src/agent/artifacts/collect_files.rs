//! `Generic.Collectors.File`, and the file copier `Generic.Files.Glob` uses with
//! `upload: true`: each matching regular file is copied into a snapshot (the flow's
//! outbox folder, or memory) while the same bytes are hashed, so the SHA-256 a row and
//! its upload carry is that of exactly the bytes uploaded, however the file changes while
//! it is read.
//!
//! Row fields: `path`; `size` = bytes uploaded (the upload's size); `file_size` = the
//! file's size on disk when its read ended (differs from `size` when truncated or when
//! the file changed while read); `mtime` (seconds, as stat'd when opened); `sha256` (hex
//! of the uploaded bytes); `truncated` (cut at `max_file_bytes` or the byte budget);
//! `upload` = the flow's upload number. A file that cannot be read is a row with `path`
//! and `error` only.
//!
//! Only regular files are read: a FIFO, device or socket is skipped without being opened
//! (opening a tape device rewinds it, opening a FIFO may block), and the opened file is
//! checked again in case it was swapped between stat and open.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::glob::{self, open_nonblocking};
use super::sink::{ArtifactSink, LIMIT_MAX_UPLOAD_BYTES};
use super::ArtifactError;
use crate::agent::collected::{CollectedFile, FileSource};
use crate::artifacts::{parse_glob_list, COLLECTORS_FILE};
use crate::limits::{FILE_COPY_BUFFER_BYTES, MAX_COLLECTED_FILE_MATCHES_COUNT};

/// Runs `Generic.Collectors.File` with resolved parameters.
pub(super) fn collect(
    params: &BTreeMap<String, String>,
    sink: &mut ArtifactSink<'_>,
) -> Result<(), ArtifactError> {
    let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let number = |name: &str| {
        field(name)
            .parse::<u64>()
            .map_err(|_| bad_param(name, "must be a non-negative integer".to_string()))
    };
    let mut copier = FileCopier::new(number("max_file_bytes")?, number("max_total_bytes")?);
    let globs = parse_glob_list(field("globs")).map_err(|reason| bad_param("globs", reason))?;
    let mut patterns = Vec::with_capacity(globs.len());
    for pattern in globs {
        let compiled = glob::compile(pattern)
            .map_err(|reason| bad_param("globs", format!("`{pattern}`: {reason}")))?;
        patterns.push(compiled);
    }
    // One `seen` set over all globs: a file two globs match is uploaded once.
    let mut seen = HashSet::new();
    let mut matches = 0u64;
    for segments in &patterns {
        let flow = glob::walk(&segments[..], &mut seen, &mut |path| {
            matches += 1;
            if matches > MAX_COLLECTED_FILE_MATCHES_COUNT {
                tracing::debug!("file collector: match limit reached");
                return ControlFlow::Break(());
            }
            copier.collect_with(path, sink, |_| {}, |_| None)
        });
        if flow.is_break() {
            break;
        }
    }
    Ok(())
}

/// Copies files into snapshots within the artifact's byte budget. Invariant:
/// `total_bytes <= max_total_bytes` (sizes of the files handed to the sink).
pub(super) struct FileCopier {
    max_file_bytes: u64,
    max_total_bytes: u64,
    total_bytes: u64,
    buffer: Vec<u8>,
}

/// How one read ended.
enum Copied {
    Whole {
        file: CollectedFile,
        file_size: u64,
        mtime: i64,
    },
    /// A cancel or timeout interrupted it; the partial snapshot is gone.
    Stopped,
}

impl FileCopier {
    pub(super) fn new(max_file_bytes: u64, max_total_bytes: u64) -> Self {
        Self {
            max_file_bytes,
            max_total_bytes,
            total_bytes: 0,
            buffer: vec![0; FILE_COPY_BUFFER_BYTES],
        }
    }

    /// Collects `path` if it is a regular file: a row (passed through `adjust`) and an
    /// upload, or an error row. Anything else is skipped, or gets the row `other_row`
    /// makes (Glob lists directories too). `Break` stops the walk: a limit, a cancel, or
    /// the byte budget.
    pub(super) fn collect_with(
        &mut self,
        path: &Path,
        sink: &mut ArtifactSink<'_>,
        adjust: impl FnOnce(&mut Value),
        other_row: impl FnOnce(&Path) -> Option<Value>,
    ) -> ControlFlow<()> {
        sink.may_continue()?;
        let path_text = path.to_string_lossy().into_owned();
        // Follows a symlink, as `cat` would: a link to a log is the log. The type check
        // comes before any open, so a FIFO or device is never opened.
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => return sink.row(&json!({ "path": path_text, "error": e.to_string() })),
        };
        if !meta.file_type().is_file() {
            return match other_row(path) {
                Some(row) => sink.row(&row),
                None => ControlFlow::Continue(()),
            };
        }
        let cap = match self.cap_bytes(meta.len(), sink) {
            Ok(cap) => cap,
            Err(row) => {
                let _ = sink.row(&with_path(row, &path_text));
                return ControlFlow::Break(());
            }
        };
        let snapshot = sink
            .ctx
            .files_dir
            .as_ref()
            .map(|dir| snapshot_path(dir, sink.next_upload()));
        let copied = match self.copy(path, cap, snapshot.as_deref(), sink) {
            Ok(copied) => copied,
            Err(e) => return sink.row(&json!({ "path": path_text, "error": e.to_string() })),
        };
        let Copied::Whole {
            file,
            file_size,
            mtime,
        } = copied
        else {
            // Records a timeout as the limit that stopped the artifact.
            let _ = sink.may_continue();
            return ControlFlow::Break(());
        };
        let mut row = json!({
            "path": path_text,
            "size": file.size,
            "file_size": file_size,
            "mtime": mtime,
            "sha256": hex::encode(file.sha256),
            "truncated": file.truncated,
        });
        adjust(&mut row);
        let size = file.size;
        match sink.file(row, file) {
            Ok(_) => {
                self.total_bytes += size;
                debug_assert!(self.total_bytes <= self.max_total_bytes);
                ControlFlow::Continue(())
            }
            Err(dropped) => {
                remove_snapshot(&dropped.source);
                ControlFlow::Break(())
            }
        }
    }

    /// Most bytes this file may upload, or the error row that ends the artifact when
    /// even its known size does not fit the budget any more. A file that grows while
    /// read is cut at the cap (truncated) rather than pass a budget.
    fn cap_bytes(&self, stat_bytes: u64, sink: &mut ArtifactSink<'_>) -> Result<u64, Value> {
        let wanted = stat_bytes.min(self.max_file_bytes);
        let total_left = self.max_total_bytes - self.total_bytes;
        if wanted > total_left {
            return Err(json!({ "error": format!(
                "not uploaded: max_total_bytes ({}) reached; no further files are collected",
                self.max_total_bytes
            )}));
        }
        let quota_left = sink.upload_quota_left_bytes();
        if let Some(quota_left) = quota_left.filter(|&left| wanted > left) {
            sink.hit(LIMIT_MAX_UPLOAD_BYTES);
            return Err(json!({ "error": format!(
                "not uploaded: the collection's max_upload_bytes has {quota_left} bytes left; \
                 no further files are collected"
            )}));
        }
        Ok(self
            .max_file_bytes
            .min(total_left)
            .min(quota_left.unwrap_or(u64::MAX)))
    }

    /// Reads up to `cap` bytes of `path` into the snapshot (or memory), hashing them.
    fn copy(
        &mut self,
        path: &Path,
        cap: u64,
        snapshot: Option<&Path>,
        sink: &ArtifactSink<'_>,
    ) -> io::Result<Copied> {
        let mut file = open_nonblocking(path)?;
        let opened = file.metadata()?;
        if !opened.file_type().is_file() {
            // Swapped for something else between stat and open.
            return Err(io::Error::other("not a regular file when opened"));
        }
        let mut out = Destination::create(snapshot, cap)?;
        let result = self.copy_into(&mut file, cap, &mut out, sink);
        let (copied, truncated) = match result {
            Ok(Some(done)) => done,
            Ok(None) => {
                out.discard();
                return Ok(Copied::Stopped);
            }
            Err(e) => {
                out.discard();
                return Err(e);
            }
        };
        let (sha256, source) = match out.finish() {
            Ok(done) => done,
            Err(e) => return Err(io::Error::new(e.kind(), format!("snapshot: {e}"))),
        };
        let file_size = file.metadata().map(|m| m.len()).unwrap_or(opened.len());
        let path = path.to_string_lossy().into_owned();
        Ok(Copied::Whole {
            file: CollectedFile {
                path,
                size: copied,
                sha256,
                truncated,
                source,
            },
            file_size,
            mtime: opened.mtime(),
        })
    }

    /// The copy loop: (bytes copied, truncated), or None when stopped by a cancel or
    /// timeout. Reads until end of file or `cap`; at the cap one more byte is tried, so
    /// `truncated` is true only when the file really had more (a /proc file reports
    /// size 0 yet has content, so its size cannot tell).
    fn copy_into(
        &mut self,
        file: &mut fs::File,
        cap: u64,
        out: &mut Destination,
        sink: &ArtifactSink<'_>,
    ) -> io::Result<Option<(u64, bool)>> {
        let mut copied = 0u64;
        while copied < cap {
            if sink.ctx.should_stop() {
                return Ok(None);
            }
            let want = (cap - copied).min(self.buffer.len() as u64) as usize;
            let read = match file.read(&mut self.buffer[..want]) {
                Ok(0) => return Ok(Some((copied, false))),
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write(&self.buffer[..read])?;
            copied += read as u64;
        }
        let mut probe = [0u8; 1];
        let more = loop {
            match file.read(&mut probe) {
                Ok(n) => break n > 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) => return Err(e),
            }
        };
        Ok(Some((copied, more)))
    }
}

/// Where a file's bytes go while they are read: a snapshot file or a buffer, and the
/// hash of exactly what was written.
enum Destination {
    Snapshot {
        path: PathBuf,
        file: io::BufWriter<fs::File>,
        hasher: Sha256,
    },
    Memory {
        bytes: Vec<u8>,
        hasher: Sha256,
    },
}

impl Destination {
    fn create(snapshot: Option<&Path>, cap: u64) -> io::Result<Self> {
        let hasher = Sha256::new();
        Ok(match snapshot {
            Some(path) => {
                let file = fs::File::create(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("snapshot: {e}")))?;
                Destination::Snapshot {
                    path: path.to_path_buf(),
                    file: io::BufWriter::with_capacity(FILE_COPY_BUFFER_BYTES, file),
                    hasher,
                }
            }
            // The capacity is only a hint: never reserve more than one buffer up front
            // for a cap that may be far above the file's real size.
            None => Destination::Memory {
                bytes: Vec::with_capacity(cap.min(FILE_COPY_BUFFER_BYTES as u64) as usize),
                hasher,
            },
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Destination::Snapshot { file, hasher, .. } => {
                file.write_all(data)
                    .map_err(|e| io::Error::new(e.kind(), format!("snapshot: {e}")))?;
                hasher.update(data);
            }
            Destination::Memory { bytes, hasher } => {
                bytes.extend_from_slice(data);
                hasher.update(data);
            }
        }
        Ok(())
    }

    /// The hash and where the bytes are. The snapshot is flushed to the kernel; its
    /// durability across a power loss is the outbox's business, not the copier's.
    fn finish(self) -> io::Result<([u8; 32], FileSource)> {
        match self {
            Destination::Snapshot { path, file, hasher } => {
                if let Err(e) = file.into_inner().map_err(|e| e.into_error()) {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                Ok((hasher.finalize().into(), FileSource::Snapshot(path)))
            }
            Destination::Memory { bytes, hasher } => Ok((
                hasher.finalize().into(),
                FileSource::Memory(Bytes::from(bytes)),
            )),
        }
    }

    fn discard(self) {
        if let Destination::Snapshot { path, file, .. } = self {
            drop(file);
            let _ = fs::remove_file(path);
        }
    }
}

/// The snapshot of upload `n` in the flow's outbox folder.
fn snapshot_path(dir: &Path, upload: u32) -> PathBuf {
    dir.join(format!("file-{upload}.snapshot"))
}

fn remove_snapshot(source: &FileSource) {
    if let FileSource::Snapshot(path) = source {
        let _ = fs::remove_file(path);
    }
}

fn with_path(mut row: Value, path: &str) -> Value {
    row["path"] = Value::String(path.to_string());
    row
}

fn bad_param(parameter: &str, reason: String) -> ArtifactError {
    ArtifactError::BadParameter {
        artifact: COLLECTORS_FILE.to_string(),
        parameter: parameter.to_string(),
        reason,
    }
}
