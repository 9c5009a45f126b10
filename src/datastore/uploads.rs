//! Uploaded files of a flow: `uploading/<n>` while a file arrives, `uploads/<sanitised
//! path>` once complete (write-once), and `uploads.jsonl`, one [`UploadRecord`] line per
//! finished file in the order they finished. The line number is the file's number in the
//! API (`GET .../uploads/{n}`).

use std::io::{BufRead, BufReader};

use serde::{Deserialize, Serialize};

use super::path::FlowDir;
use super::{io_error, DatastoreError};

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
}

/// Reads `rows` records from `start_row` of the flow's uploads index, and how many there
/// are in all. A flow without uploads has none. A line that does not parse is corrupt.
pub fn read_index(
    flow: &FlowDir,
    start_row: u64,
    rows: u64,
) -> Result<(u64, Vec<UploadRecord>), DatastoreError> {
    let path = flow.uploads_index();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(e) => return Err(io_error("open", &path)(e)),
    };
    let (mut total, mut out) = (0u64, Vec::new());
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io_error("read", &path))?;
        if line.is_empty() {
            continue;
        }
        if total >= start_row && (out.len() as u64) < rows {
            let record: UploadRecord =
                serde_json::from_str(&line).map_err(|e| DatastoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("line {}: {e}", total + 1),
                })?;
            out.push(record);
        }
        total += 1;
    }
    Ok((total, out))
}
