//! Appending a large batch of rows to a `.jsonl` file without the page cache: the bytes
//! go from a small reused aligned buffer to the device (`O_DIRECT`), in whole blocks.
//!
//! Why: a buffered append makes the kernel copy every byte into freshly allocated page
//! cache pages (`copy_folio_from_iter_atomic`), which was the largest single cost of
//! ingest (37 % of the frontend's CPU at ~450 MB/s, tuning.md P3), and those pages then
//! crowd out the client folders a large fleet needs cached. Direct writes replace that
//! kernel copy with one into a buffer that stays warm in this thread.
//!
//! How an append at offset `start` (the file's length) goes: the committed bytes of the
//! block `start` falls in are read back into the front of the buffer, the new bytes follow
//! them, every whole block is written with `O_DIRECT` (rewriting those committed bytes
//! with themselves), and the last partial block is appended through the ordinary handle.
//! So the file never holds bytes past what was sent, a crash leaves at most an
//! uncommitted tail the row log cuts off as it always has, and readers see the same file.
//!
//! It must not decide what to append (validation and the commit record are the row
//! log's), nor sync: the caller's `fdatasync` covers both kinds of write.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::limits::{DIRECT_WRITE_ALIGN_BYTES, DIRECT_WRITE_CHUNK_BYTES};

const ALIGN: usize = DIRECT_WRITE_ALIGN_BYTES as usize;
const CHUNK: usize = DIRECT_WRITE_CHUNK_BYTES as usize;
const _: () = assert!(CHUNK % ALIGN == 0 && CHUNK >= ALIGN && ALIGN.is_power_of_two());

/// What [`append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Every byte is in the file.
    Done,
    /// The file system refused a direct write before anything was written (no
    /// `O_DIRECT` support, or a stricter alignment): the caller writes the usual way.
    Unsupported,
}

/// Opens `path` for direct writes. `Ok(None)` when the file system has no `O_DIRECT`
/// (tmpfs before Linux 6.6, some FUSE mounts): the caller appends through the page cache as before.
pub(crate) fn open(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

thread_local! {
    /// One chunk plus room to align it. Each blocking-pool thread keeps its own, so the
    /// memory this costs is bounded by the pool's threads, not by uploads in flight.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Appends `bytes` at `start`, which must be the file's length.
/// `direct` is the same file opened by [`open`]; `file` is the ordinary handle (opened
/// for reading and appending), through which the committed bytes of `start`'s block are
/// read and the last partial block is appended. On an error other than
/// [`Appended::Unsupported`] some bytes may have been written: the caller cuts the file
/// back to `start`, as after any failed append.
pub(crate) fn append(direct: &File, file: &File, start: u64, bytes: &[u8]) -> io::Result<Appended> {
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < CHUNK + ALIGN {
            buffer.resize(CHUNK + ALIGN, 0);
        }
        let skew = buffer.as_ptr().align_offset(ALIGN);
        let window = &mut buffer[skew..skew + CHUNK];
        append_through(window, direct, file, start, bytes)
    })
}

fn append_through(
    window: &mut [u8],
    direct: &File,
    mut file: &File,
    start: u64,
    bytes: &[u8],
) -> io::Result<Appended> {
    let head = (start % ALIGN as u64) as usize;
    // File offset of window[0]; moves only when whole blocks have been written.
    let mut at = start - head as u64;
    file.read_exact_at(&mut window[..head], at)?;
    let mut filled = head;
    let mut wrote_direct = false;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rest.len().min(CHUNK - filled);
        window[filled..filled + n].copy_from_slice(&rest[..n]);
        filled += n;
        rest = &rest[n..];
        if filled == CHUNK {
            if !write_blocks(direct, &window[..CHUNK], at, wrote_direct)? {
                return Ok(Appended::Unsupported);
            }
            wrote_direct = true;
            at += CHUNK as u64;
            filled = 0;
        }
    }
    let whole = filled / ALIGN * ALIGN;
    if whole > 0 {
        if !write_blocks(direct, &window[..whole], at, wrote_direct)? {
            return Ok(Appended::Unsupported);
        }
        wrote_direct = true;
        at += whole as u64;
    }
    // Bytes before `start` are in the file already; only a direct write rewrites them.
    let from = if wrote_direct { whole } else { head };
    debug_assert!(at + (filled - whole) as u64 >= start);
    file.write_all(&window[from..filled])?;
    Ok(Appended::Done)
}

/// Writes whole blocks at `at` with the direct handle. `Ok(false)`: the file system
/// refused the very first direct write of this append (nothing was written).
fn write_blocks(
    direct: &File,
    mut blocks: &[u8],
    mut at: u64,
    wrote_before: bool,
) -> io::Result<bool> {
    debug_assert!(blocks.len() % ALIGN == 0 && at % ALIGN as u64 == 0);
    let mut first = !wrote_before;
    while !blocks.is_empty() {
        match direct.write_at(blocks, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            // A short direct write leaves the rest unaligned; it only happens as the
            // disk fills, so it fails the batch like any short write would.
            Ok(n) if n % ALIGN != 0 => {
                return Err(io::Error::other("direct write ended inside a block"))
            }
            Ok(n) => {
                blocks = &blocks[n..];
                at += n as u64;
                first = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if first && e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says so and counts the skip where `.ci/run` prints it (tests/common/mod.rs does
    /// the same for the integration tests).
    fn skipped(test: &str, why: &str) {
        eprintln!("SKIPPED {test}: {why}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
        if std::fs::create_dir_all(&dir).is_ok() {
            let line = format!("datastore::direct_append::{test}: {why}\n");
            let list = dir.join("skipped-tests.txt");
            let _ = OpenOptions::new()
                .create(true)
                .append(true)
                .open(list)
                .map(|mut f| f.write_all(line.as_bytes()));
        }
    }

    fn open_pair(path: &Path) -> Option<(File, File)> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        let direct = open(path).unwrap()?;
        Some((direct, file))
    }

    /// Appends of every size class (inside one block, across blocks, across chunks) keep
    /// the file exactly the concatenation of what was appended.
    #[test]
    fn appends_are_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let Some((direct, file)) = open_pair(&path) else {
            return skipped(
                "appends_are_byte_exact",
                "the temp folder's file system has no O_DIRECT",
            );
        };
        let mut expected = Vec::new();
        let mut seed = 7u64;
        let sizes = [
            1,
            3,
            ALIGN - 1,
            ALIGN,
            ALIGN + 5,
            2,
            CHUNK,
            CHUNK + ALIGN + 17,
            100,
            3 * CHUNK - 1,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..size)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            let start = expected.len() as u64;
            let appended = append(&direct, &file, start, &bytes).unwrap();
            assert_eq!(appended, Appended::Done, "append {i} of {size} bytes");
            expected.extend_from_slice(&bytes);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk.len(), expected.len(), "length after append {i}");
            assert!(on_disk == expected, "content after append {i}");
        }
    }
}
