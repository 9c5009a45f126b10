//! The outbox's folder on disk: one sub-folder per flow, named `<order, 20 digits>-<flow
//! id>`, so a listing sorted by name is the order flows arrived in. In a flow's folder:
//!
//!   `task.pb`        the task as received (prost), written before it runs
//!   `files/`         where the collection snapshots files (`CollectContext.files_dir`)
//!   `rows.<i>`       artifact i's rows (JSONL), written before `collected.json`
//!   `upload.<n>`     file n's bytes when the collection held them in memory
//!   `collected.json` what the collection produced (the commit point of its outputs)
//!   `progress.json`  what the server has acknowledged
//!
//! Owns: names, atomic writes (temp sibling, fsync when asked, rename, fsync of the
//! folder), bounded reads. Must not: decide what a flow's state means.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::limits::MAX_OUTBOX_DOCUMENT_BYTES;

pub const TASK_FILE: &str = "task.pb";
pub const FILES_DIR: &str = "files";
pub const COLLECTED_FILE: &str = "collected.json";
pub const PROGRESS_FILE: &str = "progress.json";
/// Longest flow id that names a folder (server ids are ~18 chars).
const MAX_NAME_CHARS: usize = 128;

/// A flow id that can name a folder: letters, digits, `.`, `_`, `-`, not starting with a
/// dot. The server's ids always are; anything else is refused, never joined.
pub fn is_name_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn flow_dir(root: &Path, order: u64, flow_id: &str) -> PathBuf {
    debug_assert!(is_name_safe(flow_id));
    root.join(format!("{order:020}-{flow_id}"))
}

/// `<20 digits>-<flow id>` -> (order, flow id).
pub fn parse_flow_dir(name: &str) -> Option<(u64, String)> {
    let (digits, id) = name.split_once('-')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) || !is_name_safe(id) {
        return None;
    }
    Some((digits.parse().ok()?, id.to_string()))
}

pub fn rows_file(dir: &Path, artifact: usize) -> PathBuf {
    dir.join(format!("rows.{artifact}"))
}

pub fn upload_file(dir: &Path, upload: u32) -> PathBuf {
    dir.join(format!("upload.{upload}"))
}

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replaces `path` with `bytes`: a crash leaves the old file or the new one. With `sync`
/// the data and the rename are on disk when this returns (power loss included).
pub fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if sync {
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to a new file and syncs it (the folder is synced with the commit).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

/// Syncs a file someone else wrote (a snapshot), so it outlives a power loss once the
/// manifest naming it is committed.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a document of at most `MAX_OUTBOX_DOCUMENT_BYTES`.
pub fn read_document(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_OUTBOX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_OUTBOX_DOCUMENT_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("above {MAX_OUTBOX_DOCUMENT_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// Removes a file, quietly if it is already gone.
pub fn remove_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "outbox file not removed: {e}");
        }
    }
}

pub fn remove_dir(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "outbox folder not removed: {e}");
        }
    }
}

/// Empties a flow's folder except its task: what an interrupted collection left.
pub fn clear_outputs(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == TASK_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
