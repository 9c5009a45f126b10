//! What a collection produces, as the outbox takes it: each artifact's rows and the
//! files it collected for upload, and what a running collection must respect (its
//! limits, a cancel). Shared by the real agent's artifacts and loadgen's synthetic ones.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::limits::FlowLimits;

/// Rows of one artifact, as collected, and the files it collected.
#[derive(Debug, Clone, Default)]
pub struct ArtifactOutput {
    pub name: String,
    /// JSON objects, each terminated by '\n'. Batches are slices of it, not copies.
    pub jsonl: Bytes,
    pub rows: u64,
    pub error: Option<String>,
    /// Files to upload, numbered by the outbox in collection order over the whole flow.
    pub uploads: Vec<CollectedFile>,
    /// Set when a limit of the task stopped this artifact early ("max_rows",
    /// "max_upload_bytes", "timeout_s"; `FlowStatus.limit_hit`).
    pub limit_hit: Option<&'static str>,
}

/// One file collected for upload. `size` and `sha256` describe exactly the bytes
/// `source` yields, so what the server stores can be checked against them.
#[derive(Debug, Clone)]
pub struct CollectedFile {
    /// The path on the endpoint, as the agent found it.
    pub path: String,
    /// Bytes to upload (after truncation at `max_file_bytes`).
    pub size: u64,
    pub sha256: [u8; 32],
    /// Cut at `max_file_bytes` (or by the file shrinking while read).
    pub truncated: bool,
    pub source: FileSource,
}

/// Where a collected file's bytes are read from while it uploads.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// A copy the agent made while reading the file, in the outbox's folder: the bytes
    /// stay what was hashed even if the original changes or goes, and survive a restart.
    Snapshot(PathBuf),
    /// Bytes held in memory (no outbox folder; tests).
    Memory(Bytes),
    /// loadgen: `size` bytes of [`synthetic_bytes`] from `seed`.
    Synthetic { seed: u64 },
}

impl FileSource {
    /// Up to `len` bytes from `offset` (fewer only at the end).
    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        match self {
            Self::Snapshot(path) => {
                use std::os::unix::fs::FileExt;
                let file = std::fs::File::open(path)?;
                let mut buf = vec![0u8; len];
                let mut filled = 0;
                while filled < len {
                    let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                Ok(buf.into())
            }
            Self::Memory(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(len).min(bytes.len());
                Ok(bytes.slice(start..end))
            }
            Self::Synthetic { seed } => Ok(synthetic_bytes(*seed, offset, len)),
        }
    }
}

/// `len` bytes at `offset` of an endless deterministic stream named by `seed`: the same
/// (seed, offset) always gives the same byte, so loadgen can send any range of a
/// synthetic file without holding it, and a test can recompute its SHA-256.
pub fn synthetic_bytes(seed: u64, offset: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut word_index = offset / 8;
    let mut skip = (offset % 8) as usize;
    while out.len() < len {
        let word = splitmix64(seed ^ word_index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let bytes = word.to_le_bytes();
        let take = (8 - skip).min(len - out.len());
        out.extend_from_slice(&bytes[skip..skip + take]);
        skip = 0;
        word_index += 1;
    }
    out.into()
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What a running collection must respect. Artifacts check `should_stop` between rows
/// and between file reads, so a cancel or a timeout ends them within moments.
#[derive(Debug, Clone)]
pub struct CollectContext {
    pub limits: FlowLimits,
    /// Set by the agent when the server cancels the flow.
    pub cancelled: Arc<AtomicBool>,
    /// When `limits.timeout_s` runs out (None: no timeout).
    pub deadline: Option<Instant>,
    /// Where snapshots of collected files go (the flow's folder in the outbox); None
    /// keeps them in memory.
    pub files_dir: Option<PathBuf>,
}

impl CollectContext {
    /// No limits, no cancel, files in memory: tests and callers that need none.
    pub fn unlimited() -> Self {
        Self {
            limits: FlowLimits::default(),
            cancelled: Arc::new(AtomicBool::new(false)),
            deadline: None,
            files_dir: None,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Cancelled or past the deadline: stop collecting.
    pub fn should_stop(&self) -> bool {
        self.is_cancelled() || self.timed_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_bytes_are_the_same_at_any_offset() {
        let whole = synthetic_bytes(7, 0, 1000);
        for (offset, len) in [(0, 1000), (3, 17), (8, 8), (999, 1), (501, 400)] {
            assert_eq!(
                synthetic_bytes(7, offset as u64, len),
                whole.slice(offset..offset + len)
            );
        }
        assert_ne!(synthetic_bytes(8, 0, 64), whole.slice(0..64));
        let source = FileSource::Synthetic { seed: 7 };
        assert_eq!(source.read_at(990, 10).unwrap(), whole.slice(990..1000));
    }
}
