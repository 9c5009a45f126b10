//! The audit trail (docs/security/audit.md): who changed what, from where, through what,
//! and how it ended, appended as one JSON line per change to `audit/<YYYY-MM-DD>.jsonl`
//! (UTC day of the entry's time) on the datastore, and read back by time range.
//!
//! Owns the entry's shape and its size cap (`entry`), the per-process writer thread fed
//! by a bounded queue (`writer`: [`AuditLog`]) and the reader of day files (`reader`).
//! Must not: block the caller of [`AuditLog::record`] (executors call it), know about
//! HTTP or roles (the API decides what to record and who may read), or join datastore
//! paths (`datastore::path` names the files).

mod entry;
mod reader;
mod writer;

pub use entry::{action, encode_line, outcome, via, AuditEntry, EncodedLine, TRUNCATION_MARKER};
pub use reader::{read_page, AuditPage, AuditRange};
pub use writer::AuditLog;

/// What reading the audit trail can fail with (a malformed line is not a failure: it is
/// skipped and counted).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
