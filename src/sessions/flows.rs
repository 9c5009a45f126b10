//! The flows one agent connection is writing: their requests, statuses and open result
//! sets. Owned by the connection, so its files close when it ends and a flow is never
//! held open by two connections of one shard. Everything is re-read from disk on open,
//! because the agent may have written earlier batches through another frontend.
//!
//! All file work runs on the blocking pool (`runtime::offload`): an open flow is checked
//! out of the connection's map, moved to a pool thread for the operation, and checked
//! back in. A second upload for a flow that is checked out is refused as busy (503 with
//! a short Retry-After); the real agent sends one upload at a time and never sees it.

use std::collections::HashMap;

use crate::clock::now_ms;
use crate::datastore::uploads::FlowUploads;
use crate::datastore::{
    self, AppendOutcome, ArtifactName, ArtifactRowsDoc, ClientDir, Datastore, EndedBy, FlowDir,
    FlowRequest, FlowState, FlowStatusDoc, ResultSet,
};
use crate::ids::{ClientId, FlowId};
use crate::limits::{LATE_UPLOAD_GRACE, MAX_UPLOAD_ERRORS_IN_STATUS_COUNT};
use crate::metrics::{metrics, FlowEvent};
use crate::protocol::pb;
use crate::runtime::offload::offload;
use crate::sessions::checkout::Checkouts;
use crate::sessions::event_streams::EventStreams;
use crate::sessions::file_upload::{self, ChunkOutcome};
use crate::sessions::upload::UploadError;

pub enum BatchOutcome {
    /// `started`: this batch moved the flow from scheduled to in progress.
    Written {
        rows: u64,
        next_seq: u64,
        started: bool,
    },
    /// `started`: as for `Written`; a batch committed by an earlier try whose status
    /// write then failed (a full disk) starts the flow when it is resent.
    Duplicate {
        next_seq: u64,
        started: bool,
    },
    OutOfOrder {
        next_seq: u64,
    },
}

/// A flow's documents, cached between uploads. Result sets are not kept open: each
/// holds three files, and an agent collecting four artifacts would hold twelve while
/// its flow runs (17,000 open files for 2,000 agents in a measured run, against a
/// 20,000-file process limit). A batch opens its result set (recovering the committed
/// state from disk, which also picks up batches written through another frontend),
/// appends, and closes it.
pub struct OpenFlow {
    client: ClientDir,
    dir: FlowDir,
    request: FlowRequest,
    /// Re-read before every write: the master replaces it to cancel the flow.
    status: FlowStatusDoc,
    /// The flow's uploads, opened (and recovered) on its first file chunk.
    uploads: Option<FlowUploads>,
    /// Committed rows per artifact as last seen, for `max_rows`; filled on first need.
    /// The agent writes a flow through one connection at a time, so only this flow's
    /// own appends move them.
    rows: Option<HashMap<ArtifactName, u64>>,
}

/// What a file chunk did, and whether it moved the flow to in progress.
pub struct FileOutcome {
    pub chunk: ChunkOutcome,
    pub started: bool,
}

/// Also holds the connection's monitoring event streams, which share the connection's
/// lifetime and the same open-files rule.
#[derive(Default)]
pub struct OpenFlows {
    flows: Checkouts<FlowId, OpenFlow>,
    events: EventStreams,
}

impl OpenFlows {
    /// The event streams this connection writes (`event_streams.rs`).
    pub fn event_streams(&self) -> &EventStreams {
        &self.events
    }

    /// Runs `op` on the flow (opened from disk if this connection has not yet) on the
    /// blocking pool. The flow stays open afterwards unless it was closed.
    pub async fn with_flow<R, F>(
        &self,
        datastore: &Datastore,
        client_id: &ClientId,
        flow_id: &FlowId,
        op: F,
    ) -> Result<R, UploadError>
    where
        R: Send + 'static,
        F: FnOnce(&mut OpenFlow) -> Result<R, UploadError> + Send + 'static,
    {
        let prior = self
            .flows
            .check_out(flow_id)
            .map_err(|_| UploadError::Busy {
                flow: flow_id.clone(),
            })?;
        let (datastore, client_id, id) = (datastore.clone(), client_id.clone(), flow_id.clone());
        let (result, back) = offload(move || {
            let mut flow = match prior {
                Some(flow) => flow,
                None => match OpenFlow::open(&datastore, &client_id, &id) {
                    Ok(flow) => Box::new(flow),
                    Err(e) => return (Err(e), None),
                },
            };
            let result = op(&mut flow);
            let keep = !flow.status.state.is_terminal();
            (result, keep.then_some(flow))
        })
        .await;
        self.flows.check_in(flow_id, back);
        result
    }
}

impl OpenFlow {
    fn open(
        datastore: &Datastore,
        client_id: &ClientId,
        flow_id: &FlowId,
    ) -> Result<Self, UploadError> {
        let client = datastore.client(client_id);
        let dir = client.flow(flow_id);
        // The flow must exist under this client's own folder, or be queued there as a
        // hunt recruit (whose folder its first answer makes): an agent can only write
        // into collections that were scheduled for it.
        let (request, status) = datastore::flow::open_documents(&client, flow_id).map_err(|e| {
            match e.is_not_found() {
                true => UploadError::NotYourFlow {
                    flow: flow_id.to_string(),
                    client: client_id.clone(),
                },
                false => UploadError::Datastore(e),
            }
        })?;
        Ok(Self {
            client,
            dir,
            request,
            status,
            uploads: None,
            rows: None,
        })
    }

    pub fn append(
        &mut self,
        artifact: &str,
        seq: u64,
        jsonl: &[u8],
    ) -> Result<BatchOutcome, UploadError> {
        let flow_id = self.dir.id().clone();
        if !self
            .request
            .artifacts
            .iter()
            .any(|a| a.name.as_str() == artifact)
        {
            return Err(UploadError::ArtifactNotRequested {
                flow: flow_id,
                artifact: datastore_shown(artifact),
            });
        }
        let name = ArtifactName::parse(artifact)?;
        self.refresh_status()?;
        let mut set = ResultSet::open(&self.dir.result_paths(&name))?;
        if seq >= set.next_seq() {
            self.check_open()?;
            if seq == set.next_seq() {
                self.check_max_rows(&name, set.rows(), jsonl)?;
            }
        }
        let mut outcome = match set.append_batch(seq, jsonl)? {
            AppendOutcome::Written { rows } => BatchOutcome::Written {
                rows,
                next_seq: set.next_seq(),
                started: false,
            },
            AppendOutcome::Duplicate => BatchOutcome::Duplicate {
                next_seq: set.next_seq(),
                started: false,
            },
            AppendOutcome::OutOfOrder { expected } => {
                BatchOutcome::OutOfOrder { next_seq: expected }
            }
        };
        match &mut outcome {
            BatchOutcome::Written { started, .. } => {
                if let Some(rows) = self.rows.as_mut() {
                    rows.insert(name, set.rows());
                }
                *started = self.mark_started()?;
            }
            // Rows are on disk: the flow has started, even if the status write that said
            // so failed after them (a full disk) and this is the agent's resend.
            BatchOutcome::Duplicate { started, .. } => *started = self.mark_started()?,
            BatchOutcome::OutOfOrder { .. } => {}
        }
        Ok(outcome)
    }

    /// Writes a file chunk (`file_upload.rs` has the rules) into the flow's uploads.
    pub fn write_file(&mut self, chunk: &pb::FileChunk) -> Result<FileOutcome, UploadError> {
        let announced = file_upload::parse(chunk, &self.request)?;
        let flow_id = self.dir.id().clone();
        self.refresh_status()?;
        let uploads = self.uploads()?;
        if let Some(done) = file_upload::settled(uploads, &announced, &flow_id)? {
            // The flow may still be `scheduled` if the status write after this file's
            // last chunk failed (a full disk).
            let started = self.mark_started()?;
            return Ok(FileOutcome {
                chunk: done,
                started,
            });
        }
        self.check_open()?;
        let quota_bytes = self.request.limits.max_upload_bytes;
        let uploads = self.uploads()?;
        let outcome = file_upload::ingest(uploads, &announced, chunk, quota_bytes, &flow_id)?;
        // A duplicate chunk also starts the flow: its bytes were stored by a try whose
        // status write failed after them (a full disk).
        let started = match outcome {
            ChunkOutcome::Written { .. } | ChunkOutcome::Duplicate { .. } => self.mark_started()?,
            ChunkOutcome::OutOfOrder { .. } => false,
        };
        Ok(FileOutcome {
            chunk: outcome,
            started,
        })
    }

    /// The agent says the flow is done: count what is on disk (not what the agent
    /// claims), record any difference and every incomplete or mismatched file as an
    /// error, and close the flow. Returns the new state and row count, or None when the
    /// flow had already ended (a resent status, or a cancel written by the master: never
    /// overwritten).
    pub fn finish(
        &mut self,
        report: &pb::FlowStatus,
    ) -> Result<Option<(FlowState, u64)>, UploadError> {
        self.refresh_status()?;
        if self.status.state.is_terminal() {
            return Ok(None);
        }
        let mut status = self.status.clone();
        status.errors.extend(
            report
                .errors
                .iter()
                .take(100)
                .map(|e| e.chars().take(1000).collect::<String>()),
        );
        status.ended_by = EndedBy::from_limit_hit(&report.limit_hit);
        if status.ended_by == Some(EndedBy::TimeoutS) && status.errors.is_empty() {
            status.errors.push(format!(
                "the collection reached its timeout_s ({} s)",
                self.request.limits.timeout_s
            ));
        }
        let agent_failed = report.state == pb::flow_status::State::Error as i32;
        self.close(status, &report.artifacts, agent_failed)
            .map(Some)
    }

    /// Counts what is stored (rows per artifact, complete files), adds an error per
    /// artifact whose stored rows differ from `claimed` and per incomplete or mismatched
    /// file, writes the final status and dequeues the task.
    fn close(
        &mut self,
        mut status: FlowStatusDoc,
        claimed: &[pb::ArtifactRows],
        agent_failed: bool,
    ) -> Result<(FlowState, u64), UploadError> {
        let (mut total_rows, mut total_bytes) = (0u64, 0u64);
        status.artifacts.clear();
        for requested in &self.request.artifacts {
            let summary = datastore::summary(&self.dir.result_paths(&requested.name))?;
            total_rows += summary.rows;
            total_bytes += summary.bytes;
            if let Some(claimed) = claimed.iter().find(|a| a.name == requested.name.as_str()) {
                if claimed.rows != summary.rows {
                    status.errors.push(format!(
                        "{}: agent sent {} rows, {} are stored",
                        requested.name, claimed.rows, summary.rows
                    ));
                }
            }
            status.artifacts.push(ArtifactRowsDoc {
                name: requested.name.clone(),
                rows: summary.rows,
            });
        }
        self.close_uploads(&mut status)?;
        let failed =
            agent_failed || !status.errors.is_empty() || status.ended_by == Some(EndedBy::TimeoutS);
        status.state = if failed {
            FlowState::Error
        } else {
            FlowState::Finished
        };
        status.total_rows = total_rows;
        status.total_bytes = total_bytes;
        let now = now_ms();
        status.start_time_ms.get_or_insert(now);
        status.finish_time_ms = Some(now);
        datastore::write_status(&self.client, &status)?;
        datastore::remove_task(&self.client, self.dir.id())?;
        metrics().flow(if failed {
            FlowEvent::Errored
        } else {
            FlowEvent::Finished
        });
        let changed = (status.state, status.total_rows);
        self.status = status;
        Ok(changed)
    }

    /// The flow's files in `status`: counts of complete ones, an error per file still
    /// arriving and per file whose bytes did not match the announcement.
    fn close_uploads(&mut self, status: &mut FlowStatusDoc) -> Result<(), UploadError> {
        let has_uploads = self.dir.uploading_dir().exists() || self.dir.uploads_index().exists();
        if !has_uploads && self.uploads.is_none() {
            return Ok(());
        }
        let uploads = self.uploads()?;
        uploads.refresh()?;
        let (files, bytes) = uploads.done_totals();
        status.uploaded_files = files;
        status.uploaded_bytes = bytes;
        let mut errors = uploads.record_errors();
        for (meta, stored) in uploads.incomplete()? {
            errors.push(format!(
                "upload {} `{}`: incomplete, {stored} of {} bytes arrived",
                meta.upload,
                datastore_shown(&meta.path),
                meta.size
            ));
        }
        status
            .errors
            .extend(errors.into_iter().take(MAX_UPLOAD_ERRORS_IN_STATUS_COUNT));
        Ok(())
    }

    fn uploads(&mut self) -> Result<&mut FlowUploads, UploadError> {
        if self.uploads.is_none() {
            self.uploads = Some(FlowUploads::open(&self.dir)?);
        }
        Ok(self.uploads.as_mut().expect("opened just above"))
    }

    /// Re-reads status.json (one small read): a cancel is the master replacing it, and
    /// whichever frontend serves the agent must see it before its next write.
    fn refresh_status(&mut self) -> Result<(), UploadError> {
        self.status = datastore::read_status(&self.client, self.dir.id())?;
        Ok(())
    }

    /// Refuses new data for an ended flow, and for one whose uploads come later than
    /// `timeout_s` + `LATE_UPLOAD_GRACE` after it started (which also ends it: `error`,
    /// `ended_by: timeout_s`).
    fn check_open(&mut self) -> Result<(), UploadError> {
        let flow = self.dir.id().clone();
        if self.status.state.is_terminal() {
            return Err(UploadError::FlowClosed {
                flow,
                state: self.status.state,
            });
        }
        let timeout_s = self.request.limits.timeout_s;
        let Some(start_ms) = self.status.start_time_ms.filter(|_| timeout_s > 0) else {
            return Ok(());
        };
        let grace_ms = LATE_UPLOAD_GRACE.as_millis() as u64;
        let deadline_ms = start_ms
            .saturating_add(timeout_s.saturating_mul(1000))
            .saturating_add(grace_ms);
        if now_ms() <= deadline_ms {
            return Ok(());
        }
        let mut status = self.status.clone();
        status.ended_by = Some(EndedBy::TimeoutS);
        status.errors.push(format!(
            "uploads arrived more than timeout_s ({timeout_s} s) + {} s after the flow \
             started; refused",
            LATE_UPLOAD_GRACE.as_secs()
        ));
        let (_, rows) = self.close(status, &[], false)?;
        Err(UploadError::TooLate {
            flow,
            timeout_s,
            closed_rows: Some(rows),
        })
    }

    /// Refuses a batch that would take the flow's rows above `max_rows`.
    fn check_max_rows(
        &mut self,
        artifact: &ArtifactName,
        artifact_rows: u64,
        jsonl: &[u8],
    ) -> Result<(), UploadError> {
        let max_rows = self.request.limits.max_rows;
        if max_rows == 0 {
            return Ok(());
        }
        if self.rows.is_none() {
            let mut rows = HashMap::new();
            for a in &self.request.artifacts {
                let summary = datastore::summary(&self.dir.result_paths(&a.name))?;
                rows.insert(a.name.clone(), summary.rows);
            }
            self.rows = Some(rows);
        }
        let rows = self.rows.as_mut().expect("filled just above");
        rows.insert(artifact.clone(), artifact_rows);
        let stored: u64 = rows.values().sum();
        // Every row of a valid batch ends with `\n` (jsonl.rs); an invalid one is
        // refused by the append that follows.
        let batch_rows = memchr::memchr_iter(b'\n', jsonl).count() as u64;
        if stored.saturating_add(batch_rows) > max_rows {
            return Err(UploadError::MaxRows {
                flow: self.dir.id().clone(),
                max_rows,
                stored_rows: stored,
                batch_rows,
            });
        }
        Ok(())
    }

    /// The first write moves a scheduled flow to in progress. Returns whether it did.
    fn mark_started(&mut self) -> Result<bool, UploadError> {
        if self.status.state != FlowState::Scheduled {
            return Ok(false);
        }
        let mut status = self.status.clone();
        status.state = FlowState::InProgress;
        status.start_time_ms = Some(now_ms());
        // Only once it is on disk: a failed write (a full disk) leaves the flow scheduled
        // here as there, and the agent's resend starts it.
        datastore::write_status(&self.client, &status)?;
        self.status = status;
        metrics().flow(FlowEvent::Started);
        Ok(true)
    }
}

fn datastore_shown(raw: &str) -> String {
    raw.chars().take(64).collect()
}
