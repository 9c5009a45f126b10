//! The datastore: plain files on a shared mount (docs/architecture.md, "Datastore layout").
//!
//! Owns every byte packhunt keeps on disk for clients and flows: where it lives
//! (`path`), how whole documents are replaced (`atomic`), how result rows are checked
//! and indexed (`jsonl`) and appended exactly once (`rowlog`, under a flow's result sets
//! in `resultset` and a client's monitoring day sets in `monitoring`; large batches bypass
//! the page cache through `direct_append`), and the flow, task
//! and client documents (`flow`, `client_info`). It must not know about sessions, shards or
//! HTTP: callers map [`DatastoreError::fault`] to a status code.
//!
//! Concurrency model: each file has one writer at a time (the frontend serving the
//! agent), so there are no locks; everything a handle needs is recovered from disk when
//! it is opened, because an agent may move to another frontend between two batches.

pub mod atomic;
pub mod client_info;
mod direct_append;
pub mod flow;
pub mod hunt;
pub mod jsonl;
pub mod label;
mod listing;
pub mod monitoring;
pub mod mount_check;
pub mod path;
pub mod resultset;
mod rowlog;
pub mod rowstream;
mod serde_ids;
pub mod uploads;

use std::io;
use std::path::PathBuf;

pub use atomic::{ensure_dir, read_json, write_atomic, write_json};
pub use client_info::{
    list_clients, read_client_info, record_seen, write_client_info, ClientInfoDoc,
};
pub use flow::{
    enqueue_task, list_flows, pending_tasks, read_request, read_status, remove_task,
    sync_scheduled, unschedule, write_request, write_scheduled, write_status, ArtifactRequestDoc,
    ArtifactRowsDoc, CancelOutcome, EndedBy, FlowRequest, FlowState, FlowStatusDoc,
};
pub use jsonl::{validate_and_index, JsonlError, JsonlReason};
pub use label::Label;
pub use monitoring::{EventAppend, EventBatchError, EventStream, MonitoringPage};
pub use path::{
    sanitise_upload_path, ArtifactName, ClientDir, Datastore, FlowDir, ResultPaths, RowSetPaths,
    UtcDay,
};
pub use resultset::{read_rows, summary, AppendOutcome, ResultSet, ResultSummary};

/// Whose fault a failure was; decides the HTTP status and the metric label.
/// (Defined here until a crate-wide error module exists.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong (bad name, bad rows, bad path): 400, do not retry as is.
    Agent,
    /// The server can't take it now (full disk, limits): 503 with a long Retry-After, so
    /// agents keep the data instead of starting a re-upload storm (docs/architecture.md, "Lessons").
    Overload,
    /// Our bug or our broken disk: 500.
    Internal,
}

/// Everything the datastore can fail with. Messages never echo more than 64 characters
/// of caller input.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("bad {kind} `{shown}`: {reason}")]
    BadName {
        kind: &'static str,
        shown: String,
        reason: &'static str,
    },
    #[error("bad upload path `{shown}`: {reason}")]
    BadUploadPath { shown: String, reason: &'static str },
    #[error("invalid result batch: {source}")]
    Jsonl {
        #[from]
        source: JsonlError,
    },
    #[error("invalid event batch: {0}")]
    EventBatch(#[from] EventBatchError),
    #[error("not found: {path}")]
    NotFound { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unreadable document {path}: {source}")]
    Document {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("corrupt {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A caller passed a document that doesn't belong where it was asked to go.
    #[error("document mismatch: {what}")]
    Mismatch { what: &'static str },
}

impl DatastoreError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::BadName { .. }
            | Self::BadUploadPath { .. }
            | Self::Jsonl { .. }
            | Self::EventBatch(_)
            | Self::NotFound { .. } => Fault::Agent,
            Self::Io { source, .. } if is_disk_full(source) => Fault::Overload,
            Self::Io { .. }
            | Self::Document { .. }
            | Self::Corrupt { .. }
            | Self::Mismatch { .. } => Fault::Internal,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// ENOSPC / EDQUOT: the disk refused the write, the request was fine. Reported as
/// overload so the agent backs off for long and keeps its data.
fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

/// Maps an io error on `path` during `op`; NotFound becomes its own variant so the API
/// can answer 404 without string matching.
pub(crate) fn io_error<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> DatastoreError + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            DatastoreError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            DatastoreError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Bounds caller input before it goes into an error message or a log line.
pub(crate) fn shown(raw: &str) -> String {
    raw.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the status an error maps to follows whose fault it was.
    // Method: build one error of each kind, including a synthetic ENOSPC.
    #[test]
    fn faults_follow_the_culprit() {
        let bad = ArtifactName::parse("../x").unwrap_err();
        assert_eq!(bad.fault(), Fault::Agent);
        let full = DatastoreError::Io {
            op: "write",
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(full.fault(), Fault::Overload);
        let eio = DatastoreError::Io {
            op: "write",
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(libc::EIO),
        };
        assert_eq!(eio.fault(), Fault::Internal);
        let jsonl = validate_and_index(b"nope\n", 0, &mut Vec::new()).unwrap_err();
        assert_eq!(DatastoreError::from(jsonl).fault(), Fault::Agent);
        let missing = io_error("open", std::path::Path::new("/x"))(io::ErrorKind::NotFound.into());
        assert!(missing.is_not_found());
    }

    #[test]
    fn error_messages_do_not_echo_unbounded_input() {
        let long = "x/".repeat(10_000);
        let err = ArtifactName::parse(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{}", err.len());
    }
}
