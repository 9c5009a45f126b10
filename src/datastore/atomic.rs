//! Whole-document replacement: write a temp sibling, fsync as configured, rename.
//!
//! Owns the guarantee from docs/architecture.md ("Lessons"): a crash or full disk never leaves a
//! 0-byte or half-written document. Readers see the old document or the new one. With
//! `fsync = true` this holds across power loss (file data and the folder entry are
//! synced); with `fsync = false` it holds across process crashes, and across power loss
//! only as far as the filesystem orders rename after data (ext4 `auto_da_alloc` does).
//! It must not be used for append-only files (see `resultset.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::path::temp_sibling;
use super::{io_error, DatastoreError};
use crate::limits::{DATASTORE_DIR_MODE, DATASTORE_FILE_MODE, MAX_DOCUMENT_BYTES};

/// Replaces `path` with `bytes` atomically; the temp file is removed on any error.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> Result<(), DatastoreError> {
    let temp = temp_sibling(path).ok_or(DatastoreError::Mismatch {
        what: "document path has no file name",
    })?;
    let written = write_temp(&temp, bytes, fsync)
        .and_then(|()| fs::rename(&temp, path).map_err(io_error("rename", path)));
    if let Err(err) = written {
        // Best effort: the error that matters is the one we return.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    if fsync {
        // The rename is only durable once the folder entry is.
        sync_parent(path)?;
    }
    Ok(())
}

/// Writes a document under a name no one has used (a random id): created in place with
/// one write, no temp file and rename. A reader may meet it empty in the instant between
/// the create and the write, or after a crash between them: readers of such names treat
/// an empty file as not there yet (`flow::read_recruit_entry`). Not synced. Removed
/// again on a failed write, so a full disk leaves nothing behind.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), DatastoreError> {
    let mut file = create_new(path)?;
    if let Err(e) = file.write_all(bytes) {
        // Best effort: the error that matters is the one we return.
        let _ = fs::remove_file(path);
        return Err(io_error("write", path)(e));
    }
    Ok(())
}

/// Creates `path`, which must not exist: a name already taken is never written over.
fn create_new(path: &Path) -> Result<File, DatastoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DATASTORE_FILE_MODE)
        .open(path)
        .map_err(io_error("create", path))
}

fn write_temp(temp: &Path, bytes: &[u8], fsync: bool) -> Result<(), DatastoreError> {
    // create_new: a leftover temp with the same random name is never reused.
    let mut file = create_new(temp)?;
    file.write_all(bytes).map_err(io_error("write", temp))?;
    if fsync {
        file.sync_all().map_err(io_error("fsync", temp))?;
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<(), DatastoreError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    sync_dir(parent)
}

/// Makes a file written earlier without `fsync` durable (its data and size). A file
/// already replaced by a later rename is synced under its new contents; one already
/// removed reports NotFound.
pub fn sync_file(path: &Path) -> Result<(), DatastoreError> {
    File::open(path)
        .and_then(|f| f.sync_data())
        .map_err(io_error("fsync", path))
}

/// Makes everything written on the filesystem holding `path` durable (syncfs): one call
/// commits a whole batch of unsynced writes, where per-file fsyncs would cost one disk
/// flush each.
pub fn sync_filesystem(path: &Path) -> Result<(), DatastoreError> {
    use std::os::fd::AsRawFd;
    let dir = File::open(path).map_err(io_error("open for syncfs", path))?;
    // SAFETY: syncfs takes an open descriptor, which `dir` keeps alive across the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io_error("syncfs", path)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// fsyncs a folder, making entries created or renamed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DatastoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync dir", dir))
}

/// Creates `dir` and any missing parents; with `fsync`, also syncs the parent of every
/// folder it created so a crash can't lose the entry a document was renamed into.
pub fn ensure_dir(dir: &Path, fsync: bool) -> Result<(), DatastoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    // Missing ancestors, deepest first; bounded by the path's depth.
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    create_private_dirs(dir).map_err(io_error("create dir", dir))?;
    if fsync {
        for created in missing.iter().rev() {
            sync_parent(created)?;
        }
    }
    Ok(())
}

/// `create_dir_all` with `DATASTORE_DIR_MODE` (less the umask) for every folder made.
pub(crate) fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DATASTORE_DIR_MODE)
        .create(dir)
}

/// Takes others' bits off the datastore root (made by an older `config generate`, or by
/// hand, with the default 0755): without them nothing below is reachable by other users
/// whatever its own mode. Best effort: a shared mount may not let us, which is logged.
pub(crate) fn close_to_others(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::metadata(root) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o007 == 0 {
        return;
    }
    let closed = fs::Permissions::from_mode(mode & !0o007);
    if let Err(e) = fs::set_permissions(root, closed) {
        tracing::warn!(
            "datastore {} is open to other users (mode {:o}) and cannot be closed: {e}",
            root.display(),
            mode & 0o777
        );
    }
}

/// Reads a JSON document written by [`write_json`]. Missing → `NotFound`; unparsable or
/// larger than [`MAX_DOCUMENT_BYTES`] → an internal error naming the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DatastoreError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let mut bytes = Vec::new();
    // Read one byte past the cap to tell "exactly at the cap" from "over it".
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(DatastoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "document too large".into(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| DatastoreError::Document {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` as pretty JSON (operators read these by hand) via [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T, fsync: bool) -> Result<(), DatastoreError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|source| DatastoreError::Document {
            path: path.to_path_buf(),
            source,
        })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, fsync)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    // Goal: a replace leaves exactly the new content and no temp files, with and without
    // fsync. Method: write twice, read back, list the folder.
    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        for fsync in [false, true] {
            write_atomic(&path, b"first", fsync).unwrap();
            write_atomic(&path, b"second", fsync).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"second");
            assert_eq!(names_in(dir.path()), ["status.json"]);
        }
    }

    // Goal: a failed replace keeps the old document and cleans up its temp file.
    // Method: make the rename fail by putting a non-empty folder where the file goes.
    #[test]
    fn failed_rename_keeps_old_state_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("doc.json");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        let err = write_atomic(&target, b"new", true).unwrap_err();
        assert!(
            matches!(err, DatastoreError::Io { op: "rename", .. }),
            "{err}"
        );
        assert_eq!(names_in(dir.path()), ["doc.json"]);
        assert_eq!(fs::read(target.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn missing_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("no/such/doc.json"), b"x", false).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(write_atomic(Path::new("/"), b"x", false).is_err());
    }

    #[test]
    fn json_round_trip_and_hostile_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let mut value = BTreeMap::new();
        value.insert("k".to_string(), 7u64);
        write_json(&path, &value, false).unwrap();
        assert_eq!(read_json::<BTreeMap<String, u64>>(&path).unwrap(), value);

        assert!(read_json::<BTreeMap<String, u64>>(&dir.path().join("none"))
            .unwrap_err()
            .is_not_found());
        for junk in [&b""[..], b"{", b"\xff\xfe", b"[1,2]", b"{\"k\":-1}"] {
            fs::write(&path, junk).unwrap();
            let err = read_json::<BTreeMap<String, u64>>(&path).unwrap_err();
            assert!(
                matches!(err, DatastoreError::Document { .. }),
                "{junk:?}: {err}"
            );
        }
        let big = File::create(&path).unwrap();
        big.set_len(MAX_DOCUMENT_BYTES + 10).unwrap();
        let err = read_json::<BTreeMap<String, u64>>(&path).unwrap_err();
        assert!(matches!(err, DatastoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn ensure_dir_creates_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        ensure_dir(&deep, true).unwrap();
        assert!(deep.is_dir());
        ensure_dir(&deep, true).unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(ensure_dir(&dir.path().join("file/sub"), false).is_err());
    }
}
