//! The rules for one `FileChunk` (docs/files/server.md): what a chunk must say about
//! itself, which flows may take files, the per-flow quota, write-once, and the resume
//! protocol (`next_seq` = bytes stored; a chunk wholly below it is DUPLICATE, one beyond
//! it OUT_OF_ORDER, one overlapping it has only its new part written).
//! The bytes and their crash-safe completion are the datastore's (`datastore::uploads`);
//! whether the flow is still open is `flows.rs`'s. It must not answer the agent itself
//! (`upload.rs` turns outcomes and errors into acks).

use crate::artifacts::may_upload;
use crate::datastore::uploads::{Announced, FileState, FlowUploads, UploadRecord};
use crate::datastore::{sanitise_upload_path, shown, FlowRequest};
use crate::ids::FlowId;
use crate::limits::MAX_UPLOADED_FILE_BYTES;
use crate::protocol::pb;
use crate::sessions::upload::UploadError;

/// SHA-256 digests are 32 bytes.
const SHA256_BYTES: usize = 32;

/// What a chunk did.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// New bytes were stored (possibly none: a 0-byte file's only chunk).
    Written {
        next_seq: u64,
        bytes: u64,
        /// This chunk announced the file (its first on this server).
        started_file: bool,
        /// The file is now complete and listed.
        completed: Option<UploadRecord>,
    },
    Duplicate {
        next_seq: u64,
    },
    OutOfOrder {
        next_seq: u64,
    },
}

/// Checks what a chunk says about itself and its file against the flow's request
/// (400s: bad SHA-256, size, offset, eof, path; an artifact that may not upload).
pub fn parse(chunk: &pb::FileChunk, request: &FlowRequest) -> Result<Announced, UploadError> {
    let bad = |reason: String| UploadError::BadChunk { reason };
    if chunk.sha256.len() != SHA256_BYTES {
        return Err(bad(format!(
            "sha256 is {} bytes, not {SHA256_BYTES}",
            chunk.sha256.len()
        )));
    }
    if chunk.size > MAX_UPLOADED_FILE_BYTES {
        return Err(bad(format!(
            "a file of {} bytes is above the largest accepted ({MAX_UPLOADED_FILE_BYTES})",
            chunk.size
        )));
    }
    let end = chunk.offset.checked_add(chunk.data.len() as u64);
    let Some(end) = end.filter(|end| *end <= chunk.size) else {
        return Err(bad(format!(
            "offset {} + {} bytes is beyond the file's size {}",
            chunk.offset,
            chunk.data.len(),
            chunk.size
        )));
    };
    if chunk.eof != (end == chunk.size) {
        return Err(bad(
            "eof must be set on the chunk that ends the file, and only on it".into(),
        ));
    }
    sanitise_upload_path(&chunk.path)?;
    let allowed = request
        .artifacts
        .iter()
        .any(|a| a.name.as_str() == chunk.artifact && may_upload(a.name.as_str(), &a.parameters));
    if !allowed {
        return Err(UploadError::NotAnUpload {
            flow: request.flow_id.clone(),
            artifact: shown(&chunk.artifact),
        });
    }
    Ok(Announced {
        upload: chunk.upload,
        artifact: chunk.artifact.clone(),
        path: chunk.path.clone(),
        size: chunk.size,
        sha256: hex::encode(&chunk.sha256),
    })
}

/// A chunk of a file that is already complete: DUPLICATE (next_seq = its size) when it
/// announces the same file, else refused (write-once). None: the file is not complete.
/// Answered even once the flow has ended, like a resent result batch.
pub fn settled(
    uploads: &mut FlowUploads,
    a: &Announced,
    flow: &FlowId,
) -> Result<Option<ChunkOutcome>, UploadError> {
    match uploads.state(a.upload)? {
        FileState::Complete(record) if record.announced_as(a.size, &a.sha256) => {
            Ok(Some(ChunkOutcome::Duplicate {
                next_seq: record.expected_size.unwrap_or(record.size),
            }))
        }
        FileState::Complete(_) => Err(UploadError::WriteOnce {
            flow: flow.clone(),
            upload: a.upload,
        }),
        _ => Ok(None),
    }
}

/// Stores what is new in the chunk and completes the file when its last byte is
/// stored. The flow has been checked open, and the file is not complete (`settled`).
/// `quota_bytes` is the flow's `max_upload_bytes` (0: none), checked when a file starts
/// against the announced sizes of every file complete or arriving.
pub fn ingest(
    uploads: &mut FlowUploads,
    a: &Announced,
    chunk: &pb::FileChunk,
    quota_bytes: u64,
    flow: &FlowId,
) -> Result<ChunkOutcome, UploadError> {
    let (meta, stored, started_file) = match uploads.state(a.upload)? {
        FileState::Complete(_) => {
            return settled(uploads, a, flow)?.ok_or(UploadError::WriteOnce {
                flow: flow.clone(),
                upload: a.upload,
            })
        }
        FileState::Arriving { meta, stored } => {
            if !meta.matches(a) {
                return Err(UploadError::AnnouncedOtherwise {
                    flow: flow.clone(),
                    upload: a.upload,
                });
            }
            (meta, stored, false)
        }
        FileState::Unknown => {
            check_quota(uploads, a, quota_bytes, flow)?;
            (uploads.begin(a)?, 0, true)
        }
    };
    let offset = chunk.offset;
    if offset > stored {
        return Ok(ChunkOutcome::OutOfOrder { next_seq: stored });
    }
    let end = offset + chunk.data.len() as u64;
    let (mut now_stored, mut bytes) = (stored, 0u64);
    if end > stored {
        // Only the part past what is stored: the rest arrived before (a resend that
        // overlaps), and a stored byte is never written twice.
        let skip = usize::try_from(stored - offset).expect("stored - offset < chunk length");
        let new = &chunk.data[skip..];
        now_stored = uploads.write_at(a.upload, stored, new)?;
        bytes = new.len() as u64;
    }
    if now_stored >= a.size {
        let record = uploads.complete(&meta)?;
        return Ok(ChunkOutcome::Written {
            next_seq: a.size,
            bytes,
            started_file,
            completed: Some(record),
        });
    }
    if bytes == 0 && !started_file {
        return Ok(ChunkOutcome::Duplicate { next_seq: stored });
    }
    Ok(ChunkOutcome::Written {
        next_seq: now_stored,
        bytes,
        started_file,
        completed: None,
    })
}

fn check_quota(
    uploads: &FlowUploads,
    a: &Announced,
    quota_bytes: u64,
    flow: &FlowId,
) -> Result<(), UploadError> {
    if quota_bytes == 0 {
        return Ok(());
    }
    let (_, done_bytes) = uploads.done_totals();
    let arriving = uploads.arriving_bytes(a.upload)?;
    let needed = done_bytes.saturating_add(arriving).saturating_add(a.size);
    if needed > quota_bytes {
        return Err(UploadError::QuotaExceeded {
            flow: flow.clone(),
            upload: a.upload,
            quota_bytes,
            taken_bytes: done_bytes.saturating_add(arriving),
            size: a.size,
        });
    }
    Ok(())
}
