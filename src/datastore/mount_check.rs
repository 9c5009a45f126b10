//! The start-up check of the datastore's mount: before a frontend serves anyone, it tries
//! on the mount itself the few things the datastore relies on, and refuses a mount that
//! lacks one with a message naming the check and the mount option that fixes it.
//!
//! What is tried, in a scratch folder of the datastore root that is removed afterwards
//! (unique per host and process, so frontends starting together on one shared mount
//! never touch each other's files; one left by a frontend killed mid-check is removed by a
//! later start):
//! - free space (`statvfs`, what this user may use) ≥ `[datastore] min_free_bytes`;
//! - a folder and files can be created (not a read-only or foreign-owned mount);
//! - rename over an existing file replaces it, and the name then reads the new content
//!   (how `atomic.rs` replaces status.json and every other document);
//! - fsync of a file and of a folder succeed (`fsync_documents`, result batches);
//! - two `O_APPEND` handles on one file each append whole records, in order (result sets
//!   and audit days are appended through handles opened at different times).
//!
//! It proves the mount works from this host, not that it is coherent across hosts (close-
//! to-open, attribute caches: docs/operating.md says which mount options give that), nor
//! that an fsync reaches stable storage (a server may acknowledge it early). It must not
//! be used on the agent path: it runs once, on the starting thread, before any executor.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::path::MountCheckPaths;
use crate::limits::{
    DATASTORE_DIR_MODE, DATASTORE_FILE_MODE, MOUNT_CHECK_APPEND_COUNT, MOUNT_CHECK_STALE_AFTER,
};

/// One thing the datastore needs of its mount, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    FreeSpace,
    Writable,
    AtomicRename,
    FileFsync,
    FolderFsync,
    Append,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Self::FreeSpace => "free space",
            Self::Writable => "create a folder and files",
            Self::AtomicRename => "atomic rename over an existing file",
            Self::FileFsync => "fsync of a file",
            Self::FolderFsync => "fsync of a folder",
            Self::Append => "O_APPEND from two open handles",
        }
    }

    /// Why the datastore needs it.
    fn need(self) -> &'static str {
        match self {
            Self::FreeSpace => "agents' uploads land here and a full mount refuses them all",
            Self::Writable => "every frontend writes its agents' results, documents and uploads",
            Self::AtomicRename => {
                "documents (status.json, info.json, hunts) are replaced by writing a temp file \
                 and renaming it over the old one, so readers see the old or the new whole"
            }
            Self::FileFsync | Self::FolderFsync => {
                "with datastore.fsync_documents (the default) a batch is acknowledged to the \
                 agent only once it and its folder entries are synced"
            }
            Self::Append => {
                "result sets, event days and audit days are appended through handles opened \
                 at different times, by more than one writer"
            }
        }
    }

    /// What to change: the mount option or the setting that gives it.
    pub fn fix(self) -> &'static str {
        match self {
            Self::FreeSpace => {
                "free space on the mount or grow it (NFS: the export's size and quota), or \
                 lower [datastore] min_free_bytes in server.config.toml (0 turns this check off)"
            }
            Self::Writable => {
                "mount it read-write (`rw`, not `ro`) and let the frontend's user create files \
                 there (NFS: `root_squash`/`all_squash` map root to nobody; export with the \
                 user's uid or chown the folder)"
            }
            Self::AtomicRename => {
                "use a filesystem with POSIX rename (NFSv3/v4.1, EFS, Filestore, a local disk); \
                 sshfs needs the server's posix-rename@openssh.com extension (OpenSSH ≥ 4.9) \
                 and must not be mounted with `-o workaround=rename`"
            }
            Self::FileFsync | Self::FolderFsync => {
                "mount `hard` (a `soft` NFS mount turns a slow server into EIO); sshfs needs the \
                 server's fsync@openssh.com extension; or set [datastore] fsync_documents = \
                 false knowing acknowledged data then survives process crashes only"
            }
            Self::Append => {
                "mount without a write-back cache that places appends at a cached offset \
                 (sshfs: no `-o writeback_cache`; FUSE: no `writeback_cache`); NFS clients \
                 serialise one host's appends, which is what this checks"
            }
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A mount the datastore cannot run on: which check failed, what was seen, and the fix.
#[derive(Debug, thiserror::Error)]
#[error(
    "the datastore mount at {} fails the start-up check `{check}`: {seen}. packhunt needs \
     it because {}. Fix: {}",
    root.display(),
    check.need(),
    check.fix()
)]
pub struct MountCheckError {
    pub check: Check,
    pub root: PathBuf,
    /// What went wrong: the failed operation, its path and error, or what was read back.
    pub seen: String,
}

/// [`check_mount`], logging what a passed check found: the frontend's start-up call.
pub fn check_at_start(root: &Path, min_free_bytes: u64) -> Result<MountReport, MountCheckError> {
    let report = check_mount(root, min_free_bytes)?;
    tracing::info!(
        "datastore mount check passed at {} in {} ms: {} free, rename, fsync and append work; \
         {} stale check folders removed",
        root.display(),
        report.elapsed.as_millis(),
        mib(report.free_bytes),
        report.stale_removed_count
    );
    Ok(report)
}

/// What a passed check found.
#[derive(Debug, Clone)]
pub struct MountReport {
    /// Space this user may still use on the mount (`f_bavail × f_frsize`).
    pub free_bytes: u64,
    /// How long the whole check took: an NFS round trip shows here.
    pub elapsed: Duration,
    /// Scratch folders of frontends killed mid-check that were removed.
    pub stale_removed_count: usize,
}

/// Checks the mount holding the datastore `root` (created if missing); `min_free_bytes`
/// of 0 skips the free-space check. Leaves nothing behind but `root` itself.
pub fn check_mount(root: &Path, min_free_bytes: u64) -> Result<MountReport, MountCheckError> {
    let started = Instant::now();
    let fail = |check: Check, seen: String| MountCheckError {
        check,
        root: root.to_path_buf(),
        seen,
    };
    let free_bytes = check_free_space(root, min_free_bytes).map_err(|(c, s)| fail(c, s))?;
    super::atomic::create_private_dirs(root)
        .map_err(|e| fail(classify(Check::Writable, &e), op("create folder", root, &e)))?;
    let stale_removed_count = remove_stale(root);
    let paths = MountCheckPaths::new(root, &host_name(), std::process::id());
    fs::DirBuilder::new()
        .mode(DATASTORE_DIR_MODE)
        .create(paths.dir())
        .map_err(|e| {
            fail(
                classify(Check::Writable, &e),
                op("create folder", paths.dir(), &e),
            )
        })?;
    let tried = try_rename(&paths)
        .and_then(|()| try_fsync_and_append(&paths))
        .map_err(|(c, s)| fail(c, s));
    // Every handle is closed by now, so NFS has no silly-renamed file keeping it.
    if let Err(e) = fs::remove_dir_all(paths.dir()) {
        tracing::warn!(
            "datastore mount check: cannot remove its scratch folder {}: {e}",
            paths.dir().display()
        );
    }
    tried?;
    Ok(MountReport {
        free_bytes,
        elapsed: started.elapsed(),
        stale_removed_count,
    })
}

/// A failed step: which check, and what was seen.
type Step = Result<(), (Check, String)>;

fn check_free_space(root: &Path, min_free_bytes: u64) -> Result<u64, (Check, String)> {
    // The mount may not have the folder yet: its nearest existing ancestor is on it (or
    // on the filesystem it will be made on).
    let probe = root.ancestors().find(|a| a.exists()).unwrap_or(root);
    let free_bytes = match free_bytes(probe) {
        Ok(free) => free,
        Err(_) if min_free_bytes == 0 => return Ok(0),
        Err(e) => return Err((Check::FreeSpace, op("statvfs", probe, &e))),
    };
    if free_bytes < min_free_bytes {
        return Err((
            Check::FreeSpace,
            format!(
                "{} free for this user, below [datastore] min_free_bytes = {} ({min_free_bytes} \
                 bytes)",
                mib(free_bytes),
                mib(min_free_bytes)
            ),
        ));
    }
    Ok(free_bytes)
}

/// Space an unprivileged writer may still use on the filesystem holding `path`.
fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: a zeroed statvfs is a valid value of this plain C struct of integers.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes only into `stat`, which we own; `c_path` is a valid
    // NUL-terminated string that outlives the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Both are u64 on the 64-bit Linux targets packhunt builds for.
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Writes a document, then replaces it as `atomic::write_atomic` does, and reads it back.
fn try_rename(paths: &MountCheckPaths) -> Step {
    const OLD: &[u8] = b"{\"mount_check\":\"old\"}\n";
    const NEW: &[u8] = b"{\"mount_check\":\"new document\"}\n";
    let (document, temp) = (paths.document(), paths.document_temp());
    write_new(&document, OLD, Check::Writable)?;
    write_new(&temp, NEW, Check::Writable)?;
    fs::rename(&temp, &document).map_err(|e| {
        (
            classify(Check::AtomicRename, &e),
            op("rename over", &document, &e),
        )
    })?;
    let read = read_all(&document, Check::AtomicRename)?;
    if read != NEW {
        return Err((
            Check::AtomicRename,
            format!(
                "after renaming {} over it, {} reads {:?}, not the new document",
                temp.display(),
                document.display(),
                String::from_utf8_lossy(&read)
            ),
        ));
    }
    if temp.exists() {
        return Err((
            Check::AtomicRename,
            format!("{} still exists after it was renamed", temp.display()),
        ));
    }
    Ok(())
}

/// fsyncs a file and the folder, then appends records alternately through two `O_APPEND`
/// handles and reads back that every record is there, whole and in order.
fn try_fsync_and_append(paths: &MountCheckPaths) -> Step {
    let log = paths.log();
    let open = |what: &str| {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(DATASTORE_FILE_MODE)
            .open(&log)
            .map_err(|e| (classify(Check::Writable, &e), op(what, &log, &e)))
    };
    let mut handles = [open("open for append")?, open("open a second handle on")?];
    let mut expected = Vec::new();
    for i in 0..MOUNT_CHECK_APPEND_COUNT {
        // Records of different lengths: one written over another never reads back right.
        let record = format!(
            "{{\"handle\":{},\"record\":{i},\"pad\":\"{}\"}}\n",
            i % 2,
            "x".repeat(i)
        );
        handles[i % 2]
            .write_all(record.as_bytes())
            .map_err(|e| (classify(Check::Append, &e), op("append to", &log, &e)))?;
        expected.extend_from_slice(record.as_bytes());
        if i == 0 {
            handles[0]
                .sync_all()
                .map_err(|e| (classify(Check::FileFsync, &e), op("fsync", &log, &e)))?;
        }
    }
    drop(handles);
    File::open(paths.dir())
        .and_then(|dir| dir.sync_all())
        .map_err(|e| {
            (
                classify(Check::FolderFsync, &e),
                op("fsync", paths.dir(), &e),
            )
        })?;
    let read = read_all(&log, Check::Append)?;
    if read != expected {
        return Err((Check::Append, append_mismatch(&log, &read, &expected)));
    }
    Ok(())
}

fn append_mismatch(log: &Path, read: &[u8], expected: &[u8]) -> String {
    let first_difference = read
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(read.len().min(expected.len()));
    format!(
        "{MOUNT_CHECK_APPEND_COUNT} records appended alternately through two handles to {} \
         read back as {} bytes in {} lines, expected {} bytes in {MOUNT_CHECK_APPEND_COUNT} \
         lines; first difference at byte {first_difference} (one handle wrote over the \
         other's records)",
        log.display(),
        read.len(),
        read.iter().filter(|&&b| b == b'\n').count(),
        expected.len()
    )
}

fn write_new(path: &Path, bytes: &[u8], check: Check) -> Step {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DATASTORE_FILE_MODE)
        .open(path)
        .map_err(|e| (classify(check, &e), op("create", path, &e)))?;
    file.write_all(bytes)
        .map_err(|e| (classify(check, &e), op("write", path, &e)))?;
    file.sync_all()
        .map_err(|e| (classify(Check::FileFsync, &e), op("fsync", path, &e)))
}

fn read_all(path: &Path, check: Check) -> Result<Vec<u8>, (Check, String)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| (check, op("read back", path, &e)))?;
    Ok(bytes)
}

/// A full disk or quota met mid-check is the free-space check failing, whatever step met it.
fn classify(check: Check, e: &io::Error) -> Check {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Check::FreeSpace,
        _ => check,
    }
}

fn op(what: &str, path: &Path, e: &io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Removes scratch folders older than `MOUNT_CHECK_STALE_AFTER` (frontends killed
/// mid-check, here or on another host); a younger one may be another frontend's check in
/// progress. Best effort: returns how many went.
fn remove_stale(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let now = SystemTime::now();
    entries
        .flatten()
        .filter_map(|entry| stale_path(root, &entry.file_name(), now))
        .filter(|path| fs::remove_dir_all(path).is_ok())
        .count()
}

fn stale_path(root: &Path, name: &OsStr, now: SystemTime) -> Option<PathBuf> {
    let path = MountCheckPaths::scratch_in(root, name)?;
    let modified = fs::symlink_metadata(&path).ok()?.modified().ok()?;
    let age = now.duration_since(modified).unwrap_or_default();
    (age > MOUNT_CHECK_STALE_AFTER).then_some(path)
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, which we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok && len > 0 {
        String::from_utf8_lossy(&buf[..len]).into_owned()
    } else {
        "host".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_folder_passes_and_keeps_nothing_but_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("datastore");
        let report = check_mount(&root, 1).unwrap();
        assert!(report.free_bytes >= 1);
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn too_little_free_space_names_the_key_that_sets_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_mount(dir.path(), u64::MAX).unwrap_err();
        assert_eq!(err.check, Check::FreeSpace);
        let message = err.to_string();
        assert!(message.contains("min_free_bytes"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn a_folder_it_cannot_write_is_refused_as_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        // A plain file where the root should be: nothing can be created under it, even
        // by root (who ignores permission bits).
        let root = dir.path().join("file");
        fs::write(&root, b"x").unwrap();
        let err = check_mount(&root, 0).unwrap_err();
        assert_eq!(err.check, Check::Writable);
        assert!(err.to_string().contains("`rw`"), "{err}");
    }

    #[test]
    fn a_stale_scratch_folder_is_removed_and_a_fresh_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let stale = MountCheckPaths::new(dir.path(), "other-host", 1);
        let fresh = MountCheckPaths::new(dir.path(), "other-host", 2);
        fs::create_dir(stale.dir()).unwrap();
        fs::create_dir(fresh.dir()).unwrap();
        let old = SystemTime::now() - MOUNT_CHECK_STALE_AFTER - Duration::from_secs(60);
        File::open(stale.dir()).unwrap().set_modified(old).unwrap();
        let report = check_mount(dir.path(), 0).unwrap();
        assert_eq!(report.stale_removed_count, 1);
        assert!(!stale.dir().exists());
        assert!(fresh.dir().exists());
    }

    #[test]
    fn an_append_mismatch_says_where_the_records_differ() {
        let message = append_mismatch(Path::new("/d/x"), b"abcX\n", b"abcd\nefg\n");
        assert!(message.contains("first difference at byte 3"), "{message}");
        assert!(message.contains("1 lines"), "{message}");
    }
}
