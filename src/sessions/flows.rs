//! The flows one agent connection is writing: their requests, statuses and open result
//! sets. Owned by the connection, so its files close when it ends and a flow is never
//! held open by two connections of one shard. Everything is re-read from disk on open,
//! because the agent may have written earlier batches through another frontend.
//!
//! All file work runs on the blocking pool (`runtime::offload`): an open flow is checked
//! out of the connection's map, moved to a pool thread for the operation, and checked
//! back in. A second upload for a flow that is checked out is refused as busy (503 with
//! a short Retry-After); the real agent sends one upload at a time and never sees it.

use crate::clock::now_ms;
use crate::limits::MAX_UPLOADED_FILE_BYTES;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::datastore::{
    self, AppendOutcome, ArtifactName, ClientDir, Datastore, FlowDir, FlowRequest, FlowState,
    FlowStatusDoc, ResultSet,
};
use crate::ids::{ClientId, FlowId};
use crate::metrics::{metrics, FlowEvent};
use crate::protocol::pb;
use crate::runtime::offload::offload;
use crate::sessions::checkout::Checkouts;
use crate::sessions::event_streams::EventStreams;
use crate::sessions::upload::UploadError;

pub enum BatchOutcome {
    /// `started`: this batch moved the flow from scheduled to in progress.
    Written {
        rows: u64,
        next_seq: u64,
        started: bool,
    },
    Duplicate {
        next_seq: u64,
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
    status: FlowStatusDoc,
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
        // The flow must exist under this client's own folder: an agent can only write
        // into collections that were scheduled for it.
        let request =
            datastore::read_request(&client, flow_id).map_err(|e| match e.is_not_found() {
                true => UploadError::NotYourFlow {
                    flow: flow_id.to_string(),
                    client: client_id.clone(),
                },
                false => UploadError::Datastore(e),
            })?;
        let status = datastore::read_status(&client, flow_id)?;
        Ok(Self {
            client,
            dir,
            request,
            status,
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
        let mut set = ResultSet::open(&self.dir.result_paths(&name))?;
        if self.status.state.is_terminal() && seq >= set.next_seq() {
            return Err(UploadError::FlowClosed {
                flow: flow_id,
                state: self.status.state,
            });
        }
        let mut outcome = match set.append_batch(seq, jsonl)? {
            AppendOutcome::Written { rows } => BatchOutcome::Written {
                rows,
                next_seq: set.next_seq(),
                started: false,
            },
            AppendOutcome::Duplicate => BatchOutcome::Duplicate {
                next_seq: set.next_seq(),
            },
            AppendOutcome::OutOfOrder { expected } => {
                BatchOutcome::OutOfOrder { next_seq: expected }
            }
        };
        if let BatchOutcome::Written { started, .. } = &mut outcome {
            if self.status.state == FlowState::Scheduled {
                self.status.state = FlowState::InProgress;
                self.status.start_time_ms = Some(now_ms());
                datastore::write_status(&self.client, &self.status)?;
                metrics().flow(FlowEvent::Started);
                *started = true;
            }
        }
        Ok(outcome)
    }

    /// The agent says the flow is done: count what is on disk (not what the agent
    /// claims), record any difference as an error, and close the flow. Returns the new
    /// state and row count, or None for a resent status (already recorded).
    pub fn finish(
        &mut self,
        report: &pb::FlowStatus,
    ) -> Result<Option<(FlowState, u64)>, UploadError> {
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
        let (mut total_rows, mut total_bytes) = (0u64, 0u64);
        status.artifacts.clear();
        for requested in &self.request.artifacts {
            let summary = datastore::summary(&self.dir.result_paths(&requested.name))?;
            total_rows += summary.rows;
            total_bytes += summary.bytes;
            if let Some(claimed) = report
                .artifacts
                .iter()
                .find(|a| a.name == requested.name.as_str())
            {
                if claimed.rows != summary.rows {
                    status.errors.push(format!(
                        "{}: agent sent {} rows, {} are stored",
                        requested.name, claimed.rows, summary.rows
                    ));
                }
            }
            status.artifacts.push(datastore::ArtifactRowsDoc {
                name: requested.name.clone(),
                rows: summary.rows,
            });
        }
        let failed =
            report.state == pb::flow_status::State::Error as i32 || !status.errors.is_empty();
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
        Ok(Some(changed))
    }

    /// Writes a chunk of an uploaded file into the flow's uploads/ folder.
    pub fn write_file(&mut self, chunk: &pb::FileChunk) -> Result<u64, UploadError> {
        let path = self.dir.upload_path(&chunk.path)?;
        let end = chunk.offset.checked_add(chunk.data.len() as u64);
        if end.is_none_or(|end| end > MAX_UPLOADED_FILE_BYTES) {
            return Err(UploadError::TooLarge {
                max_bytes: MAX_UPLOADED_FILE_BYTES,
            });
        }
        let io = |e: std::io::Error| {
            use std::io::ErrorKind::{AlreadyExists, IsADirectory, NotADirectory};
            // Two agent paths that sanitise to a file and a folder of one name: the agent's
            // input, not our disk, so 400 (not 500) and no server path in the answer.
            let error = match e.kind() {
                IsADirectory | NotADirectory | AlreadyExists => {
                    datastore::DatastoreError::BadUploadPath {
                        shown: datastore_shown(&chunk.path),
                        reason: "collides with a file or folder uploaded before",
                    }
                }
                _ => datastore::DatastoreError::Io {
                    op: "write upload",
                    path: path.clone(),
                    source: e,
                },
            };
            UploadError::Datastore(error)
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        file.write_all_at(&chunk.data, chunk.offset).map_err(io)?;
        if chunk.eof {
            (&file).flush().map_err(io)?;
        }
        Ok(chunk.data.len() as u64)
    }
}

fn datastore_shown(raw: &str) -> String {
    raw.chars().take(64).collect()
}
