//! Replacing a file that holds secrets (server configs, keys, API client files): owner-only
//! from its first byte, and atomic, so a crash leaves the old file or the new one, never a
//! mix and never a moment where others could read it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ConfigError;

/// Owner read/write only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Replaces `path` with `text`: a temp file beside it (mode 0600, named for this process so
/// two writers never share one), fsync, rename, fsync of the folder.
pub fn replace(path: &Path, text: &str) -> Result<(), ConfigError> {
    let folder = folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)?;
        // mode() applies only to a new file; this also covers one an earlier crash left.
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&folder)?.sync_all()
    };
    write().map_err(|error| {
        let _ = std::fs::remove_file(&tmp);
        ConfigError::Write {
            path: path.to_path_buf(),
            error,
        }
    })
}

/// The folder `path` is in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_owner_only_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, PRIVATE_FILE_MODE);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the file itself");
    }

    #[test]
    fn a_missing_folder_is_a_write_error_naming_the_file() {
        let err = replace(Path::new("/nonexistent-folder/x.toml"), "x").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-folder/x.toml"),
            "{err}"
        );
    }
}
