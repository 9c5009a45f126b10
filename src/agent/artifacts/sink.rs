//! Where one artifact's rows and files go while a collection runs, under the flow's
//! limits: rows are counted against `max_rows` over the whole flow, files are numbered
//! over the whole flow (the upload numbers of `FileChunk.upload`) and their bytes counted
//! against `max_upload_bytes`, and a cancel or timeout stops the artifact.
//!
//! Owns: the flow-wide tallies and the `limit_hit` an artifact reports. Must not: read
//! files or walk directories (the artifacts do).

use std::ops::ControlFlow;

use serde_json::Value;

use crate::agent::collected::{ArtifactOutput, CollectContext, CollectedFile};
use crate::agent::runner::push_row;

/// `FlowStatus.limit_hit` values an artifact may report.
pub const LIMIT_TIMEOUT: &str = "timeout_s";
pub const LIMIT_MAX_ROWS: &str = "max_rows";
pub const LIMIT_MAX_UPLOAD_BYTES: &str = "max_upload_bytes";

/// What the flow has produced so far, over all its artifacts in request order.
/// Invariant: `uploads` is the number of `CollectedFile`s handed out, so the next file's
/// upload number is `uploads`; `upload_bytes` is the sum of their sizes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowTally {
    pub rows: u64,
    pub upload_bytes: u64,
    pub uploads: u32,
    /// The first limit that stopped an artifact: later artifacts do not run.
    pub limit_hit: Option<&'static str>,
}

/// One artifact's output being built.
pub struct ArtifactSink<'a> {
    pub ctx: &'a CollectContext,
    tally: &'a mut FlowTally,
    jsonl: Vec<u8>,
    rows: u64,
    uploads: Vec<CollectedFile>,
    limit_hit: Option<&'static str>,
}

impl<'a> ArtifactSink<'a> {
    pub fn new(ctx: &'a CollectContext, tally: &'a mut FlowTally) -> Self {
        Self {
            ctx,
            tally,
            jsonl: Vec::new(),
            rows: 0,
            uploads: Vec::new(),
            limit_hit: None,
        }
    }

    /// Whether the artifact may go on: not cancelled, not timed out, a row still fits in
    /// `max_rows`. Records the limit that stopped it.
    pub fn may_continue(&mut self) -> ControlFlow<()> {
        if self.limit_hit.is_some() {
            return ControlFlow::Break(());
        }
        if self.ctx.timed_out() {
            self.hit(LIMIT_TIMEOUT);
            return ControlFlow::Break(());
        }
        if self.ctx.is_cancelled() {
            return ControlFlow::Break(());
        }
        let max_rows = self.ctx.limits.max_rows;
        if max_rows != 0 && self.tally.rows >= max_rows {
            self.hit(LIMIT_MAX_ROWS);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Appends a row if the flow may take it; `Break` means stop the artifact.
    pub fn row(&mut self, row: &Value) -> ControlFlow<()> {
        self.may_continue()?;
        push_row(&mut self.jsonl, row);
        self.rows += 1;
        self.tally.rows += 1;
        ControlFlow::Continue(())
    }

    /// The upload number the next file added will get.
    pub fn next_upload(&self) -> u32 {
        self.tally.uploads
    }

    /// Bytes the flow's `max_upload_bytes` still allows (None: no quota).
    pub fn upload_quota_left_bytes(&self) -> Option<u64> {
        let quota = self.ctx.limits.max_upload_bytes;
        (quota != 0).then(|| quota.saturating_sub(self.tally.upload_bytes))
    }

    /// Adds a collected file and its row, which gains `"upload": n`. `Break` if the row
    /// no longer fits (the file is then not added: the caller drops its snapshot).
    pub fn file(&mut self, mut row: Value, file: CollectedFile) -> Result<u32, CollectedFile> {
        if self.may_continue().is_break() {
            return Err(file);
        }
        let number = self.tally.uploads;
        row["upload"] = Value::from(number);
        push_row(&mut self.jsonl, &row);
        self.rows += 1;
        self.tally.rows += 1;
        self.tally.uploads += 1;
        self.tally.upload_bytes += file.size;
        self.uploads.push(file);
        Ok(number)
    }

    /// Records that `limit` stopped this artifact (the first one wins).
    pub fn hit(&mut self, limit: &'static str) {
        self.limit_hit.get_or_insert(limit);
        self.tally.limit_hit.get_or_insert(limit);
    }

    /// Reports the limit that stopped an earlier artifact of the flow on this one too
    /// (it did not run because of it).
    pub fn carry_flow_limit(&mut self) {
        if let Some(limit) = self.tally.limit_hit {
            self.limit_hit.get_or_insert(limit);
        }
    }

    pub fn finish(self, name: &str, error: Option<String>) -> ArtifactOutput {
        ArtifactOutput {
            name: name.to_string(),
            jsonl: self.jsonl.into(),
            rows: self.rows,
            error,
            uploads: self.uploads,
            limit_hit: self.limit_hit,
        }
    }
}
