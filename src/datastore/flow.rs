//! Flow documents and the per-client task queue.
//!
//! Owns `request.json` (what was asked) and `status.json` (where it stands) of one
//! collection, the listing of a client's collections, and `tasks/`: one file per flow
//! the agent has not picked up yet, so a task survives a frontend restart and is
//! delivered by whichever frontend the agent reaches next. Documents are replaced
//! atomically (`atomic.rs`). It must not decide state transitions; callers do.
//!
//! A hunt's recruit is lazier: its queue entry names the hunt and the recruit time
//! ([`write_hunt_recruit`]) and it has no flow folder yet. Its request is the hunt's
//! document with the recruit's ids; the folder, request.json and status.json come into
//! being with the agent's first answer (or a cancel): [`open_documents`]. One small file
//! per recruit instead of a folder and three documents is what lets a hunt reach a whole
//! fleet at once.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::atomic::{
    ensure_dir, read_json, sync_dir, sync_file, write_atomic, write_json, write_new,
};
use super::listing::ids_in;
use super::path::{ArtifactName, ClientDir};
use super::{io_error, serde_ids, DatastoreError};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::FlowLimits;

/// `request.json`: the collection as the API accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRequest {
    #[serde(with = "serde_ids::flow_id")]
    pub flow_id: FlowId,
    #[serde(with = "serde_ids::client_id")]
    pub client_id: ClientId,
    pub artifacts: Vec<ArtifactRequestDoc>,
    pub create_time_ms: u64,
    /// Server wall clock at creation, µs: sent with the task so loadgen can measure
    /// delivery latency (docs/architecture.md, "API shapes").
    pub create_time_us: u64,
    #[serde(default)]
    pub hunt_id: Option<String>,
    /// The collection's own limits (the request's, else the config's defaults). Older
    /// requests have none stored: all zero, no limit.
    #[serde(default)]
    pub limits: FlowLimits,
}

impl FlowRequest {
    /// The task an agent is sent for this request.
    pub fn into_task(self) -> crate::protocol::pb::Task {
        crate::protocol::pb::Task {
            flow_id: self.flow_id.to_string(),
            artifacts: self
                .artifacts
                .into_iter()
                .map(|a| crate::protocol::pb::ArtifactRequest {
                    name: a.name.to_string(),
                    parameters: a.parameters.into_iter().collect(),
                })
                .collect(),
            create_time_us: self.create_time_us,
            hunt_id: self.hunt_id.unwrap_or_default(),
            limits: Some(crate::protocol::pb::FlowLimits {
                timeout_s: self.limits.timeout_s,
                max_rows: self.limits.max_rows,
                max_upload_bytes: self.limits.max_upload_bytes,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRequestDoc {
    pub name: ArtifactName,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    Scheduled,
    InProgress,
    Finished,
    Error,
    Cancelled,
}

impl FlowState {
    /// The name used in status.json, the API and the replication stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Finished => "finished",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }

    /// Finished, error and cancelled flows take no more batches.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Error | Self::Cancelled)
    }
}

/// `status.json`, also the body of `GET .../collections/{flow_id}` (docs/architecture.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatusDoc {
    #[serde(with = "serde_ids::flow_id")]
    pub flow_id: FlowId,
    pub state: FlowState,
    pub total_rows: u64,
    pub total_bytes: u64,
    pub artifacts: Vec<ArtifactRowsDoc>,
    pub errors: Vec<String>,
    pub create_time_ms: u64,
    pub start_time_ms: Option<u64>,
    pub finish_time_ms: Option<u64>,
    /// What ended the flow early, if anything did: a cancel or one of its limits.
    #[serde(default)]
    pub ended_by: Option<EndedBy>,
    /// Files complete and listed in `uploads.jsonl`, and their bytes (older documents
    /// have none stored: 0).
    #[serde(default)]
    pub uploaded_files: u64,
    #[serde(default)]
    pub uploaded_bytes: u64,
}

/// Why a flow ended before its agent finished it normally (`status.json` `ended_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// `POST .../cancel` (or a hunt stopped with `cancel_flows`): state `cancelled`.
    Cancel,
    /// The agent gave up after `timeout_s`, or the server refused what came later:
    /// state `error`.
    #[serde(rename = "timeout_s")]
    TimeoutS,
    /// The rows stop at `max_rows`: state `finished`, the result sets are complete up to it.
    MaxRows,
    /// The uploads stop at `max_upload_bytes`: state `finished`, later files not uploaded.
    MaxUploadBytes,
}

impl EndedBy {
    /// The name in status.json, the API and the agent's `FlowStatus.limit_hit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::TimeoutS => "timeout_s",
            Self::MaxRows => "max_rows",
            Self::MaxUploadBytes => "max_upload_bytes",
        }
    }

    /// Reads the agent's `FlowStatus.limit_hit` (empty: none; unknown: none).
    pub fn from_limit_hit(text: &str) -> Option<Self> {
        [Self::TimeoutS, Self::MaxRows, Self::MaxUploadBytes]
            .into_iter()
            .find(|e| e.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRowsDoc {
    pub name: ArtifactName,
    pub rows: u64,
}

impl FlowStatusDoc {
    /// The status of a flow that was just requested.
    pub fn scheduled(request: &FlowRequest) -> Self {
        Self {
            flow_id: request.flow_id.clone(),
            state: FlowState::Scheduled,
            total_rows: 0,
            total_bytes: 0,
            artifacts: request
                .artifacts
                .iter()
                .map(|a| ArtifactRowsDoc {
                    name: a.name.clone(),
                    rows: 0,
                })
                .collect(),
            errors: Vec::new(),
            create_time_ms: request.create_time_ms,
            start_time_ms: None,
            finish_time_ms: None,
            ended_by: None,
            uploaded_files: 0,
            uploaded_bytes: 0,
        }
    }
}

/// Writes `request.json`, creating the flow folder. The request must be this client's.
pub fn write_request(client: &ClientDir, request: &FlowRequest) -> Result<(), DatastoreError> {
    write_request_synced(client, request, client.fsync_documents())
}

fn write_request_synced(
    client: &ClientDir,
    request: &FlowRequest,
    fsync: bool,
) -> Result<(), DatastoreError> {
    if &request.client_id != client.id() {
        return Err(DatastoreError::Mismatch {
            what: "request.json client_id is not this client",
        });
    }
    let flow = client.flow(&request.flow_id);
    ensure_dir(flow.path(), fsync)?;
    write_json(&flow.request_json(), request, fsync)
}

/// Reads `request.json`; a document naming another flow or client is corrupt.
pub fn read_request(client: &ClientDir, flow_id: &FlowId) -> Result<FlowRequest, DatastoreError> {
    let path = client.flow(flow_id).request_json();
    let request: FlowRequest = read_json(&path)?;
    if &request.flow_id != flow_id || &request.client_id != client.id() {
        return Err(DatastoreError::Corrupt {
            path,
            reason: "names another flow or client".into(),
        });
    }
    Ok(request)
}

/// A hunt recruit's queue entry (`tasks/<flow_id>`): which hunt, and when it was
/// recruited. A collection's entry holds its flow id instead (its request.json is on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HuntRecruitEntry {
    #[serde(with = "serde_ids::hunt_id")]
    hunt_id: HuntId,
    create_time_us: u64,
}

/// Queues a hunt's flow for its agent with one small file, and nothing else: the flow's
/// folder and documents are made from the hunt's document when its agent first answers
/// ([`open_documents`]). Not synced (the recruiter makes a batch durable at once).
pub fn write_hunt_recruit(client: &ClientDir, request: &FlowRequest) -> Result<(), DatastoreError> {
    if &request.client_id != client.id() {
        return Err(DatastoreError::Mismatch {
            what: "a hunt recruit's client_id is not this client",
        });
    }
    let Some(hunt_id) = request
        .hunt_id
        .as_deref()
        .and_then(|h| HuntId::parse(h).ok())
    else {
        return Err(DatastoreError::Mismatch {
            what: "a hunt recruit names no hunt",
        });
    };
    let entry = HuntRecruitEntry {
        hunt_id,
        create_time_us: request.create_time_us,
    };
    let bytes = serde_json::to_vec(&entry).map_err(|source| DatastoreError::Document {
        path: client.task_path(&request.flow_id),
        source,
    })?;
    // The queue folder is made with the client's facts at first contact: looked for only
    // when the write finds it missing (a stat per recruit was ~18 % of recruiting). The
    // entry's name is a new random flow id, so it is created in place: a temp file and a
    // rename per recruit were a third of the recruiter's file calls.
    let path = client.task_path(&request.flow_id);
    match write_new(&path, &bytes) {
        Err(e) if e.is_not_found() => {
            ensure_dir(&client.tasks_dir(), false)?;
            write_new(&path, &bytes)
        }
        written => written,
    }
}

/// The request of a queued flow: its request.json, or, for a hunt recruit not yet
/// answered, the one its queue entry and hunt document make (nothing is written).
pub fn queued_request(client: &ClientDir, flow_id: &FlowId) -> Result<FlowRequest, DatastoreError> {
    match read_request(client, flow_id) {
        Err(e) if e.is_not_found() => recruit_request(client, flow_id),
        other => other,
    }
}

/// The flow's request and status. A hunt recruit's flow that has none yet gets them now,
/// from its queue entry and hunt document (its agent's first answer, or a cancel, is
/// opening it); a flow neither on disk nor queued as a recruit is not found.
pub fn open_documents(
    client: &ClientDir,
    flow_id: &FlowId,
) -> Result<(FlowRequest, FlowStatusDoc), DatastoreError> {
    // `recruit`: its queue entry was just read (no second read to tell it is one).
    let (request, recruit) = match read_request(client, flow_id) {
        Err(e) if e.is_not_found() => {
            let request = recruit_request(client, flow_id)?;
            write_request(client, &request)?;
            (request, true)
        }
        other => (other?, false),
    };
    let status = match read_status(client, flow_id) {
        Err(e) if e.is_not_found() && (recruit || has_recruit_entry(client, flow_id)) => {
            // Two frontends may open the same recruit at once (an agent that moved): both
            // write the same request; only a missing status is written, so neither undoes
            // the other's progress (a race in that instant costs a status rewrite at most).
            let status = FlowStatusDoc::scheduled(&request);
            write_status(client, &status)?;
            status
        }
        other => other?,
    };
    Ok((request, status))
}

/// Whether the flow's queue entry is a hunt recruit's.
pub fn has_recruit_entry(client: &ClientDir, flow_id: &FlowId) -> bool {
    read_recruit_entry(client, flow_id).is_ok()
}

fn read_recruit_entry(
    client: &ClientDir,
    flow_id: &FlowId,
) -> Result<HuntRecruitEntry, DatastoreError> {
    let path = client.task_path(flow_id);
    let bytes = fs::read(&path).map_err(io_error("read", &path))?;
    if bytes.first() != Some(&b'{') {
        // A collection's entry (its request.json is what is missing), or a recruit's
        // being written (created empty, then written: `write_new`), or one a crash left
        // empty, which its hunt's recruiting journal takes back at the next start.
        return Err(DatastoreError::NotFound { path });
    }
    serde_json::from_slice(&bytes).map_err(|source| DatastoreError::Document { path, source })
}

/// The request a hunt recruit's queue entry and its hunt's document make.
fn recruit_request(client: &ClientDir, flow_id: &FlowId) -> Result<FlowRequest, DatastoreError> {
    let entry = read_recruit_entry(client, flow_id)?;
    let path = client.hunt_path(&entry.hunt_id);
    let hunt: super::hunt::HuntDoc = read_json(&path)?;
    if hunt.hunt_id != entry.hunt_id {
        return Err(DatastoreError::Corrupt {
            path,
            reason: "names another hunt".into(),
        });
    }
    Ok(FlowRequest {
        flow_id: flow_id.clone(),
        client_id: client.id().clone(),
        artifacts: hunt.artifacts,
        create_time_ms: entry.create_time_us / 1000,
        create_time_us: entry.create_time_us,
        hunt_id: Some(entry.hunt_id.to_string()),
        limits: hunt.limits,
    })
}

/// Schedules a flow: `request.json`, `status.json` (scheduled) and the agent's queue
/// entry, written without waiting for the disk so that the agent can be told at once;
/// [`sync_scheduled`] then makes them durable, and only after it may the scheduler
/// report success. A crash in between loses a flow nobody was told exists, at worst
/// one its agent already started, whose uploads are then refused as unknown.
///
/// All or nothing: if a write fails (a full disk), what was written is removed again
/// ([`unschedule`]), so no flow is left with a request and no status, or a status and no
/// queue entry, for the caller to forget about.
pub fn write_scheduled(client: &ClientDir, request: &FlowRequest) -> Result<(), DatastoreError> {
    if &request.client_id != client.id() {
        return Err(DatastoreError::Mismatch {
            what: "request.json client_id is not this client",
        });
    }
    let flow = client.flow(&request.flow_id);
    let written = write_request_synced(client, request, false)
        .and_then(|()| {
            write_json(
                &flow.status_json(),
                &FlowStatusDoc::scheduled(request),
                false,
            )
        })
        .and_then(|()| enqueue_task_synced(client, &request.flow_id, false));
    if written.is_err() {
        unschedule(client, &request.flow_id);
    }
    written
}

/// Takes back a flow that [`write_scheduled`] wrote (or began to) and that nobody was
/// told exists: its queue entry, status, request, the temporary files of any of them a
/// stopped process left, and its folder. Best effort: a file that cannot be removed stays
/// (and is logged); a folder holding anything else (results, uploads) is never removed.
pub fn unschedule(client: &ClientDir, flow_id: &FlowId) {
    let flow = client.flow(flow_id);
    let (task, status, request) = (
        client.task_path(flow_id),
        flow.status_json(),
        flow.request_json(),
    );
    let mut doomed = vec![task.clone(), status.clone(), request.clone()];
    for document in [&task, &status, &request] {
        doomed.extend(temp_siblings_of(document));
    }
    for path in doomed {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "cannot take back a flow never scheduled: {e}");
            }
            _ => {}
        }
    }
    // Fails (and is meant to) unless the folder is empty.
    let _ = fs::remove_dir(flow.path());
}

/// The temporary files (`<name>.tmp.<hex>`, see `path::temp_sibling`) an atomic write of
/// `document` left behind.
fn temp_siblings_of(document: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (document.parent(), document.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.tmp.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Makes what [`write_scheduled`] wrote durable (nothing to do without
/// `fsync_documents`). The queue entry may already be gone (delivered), and status.json
/// already replaced by the agent's progress: both are fine.
pub fn sync_scheduled(client: &ClientDir, flow_id: &FlowId) -> Result<(), DatastoreError> {
    if !client.fsync_documents() {
        return Ok(());
    }
    let flow = client.flow(flow_id);
    sync_file(&flow.request_json())?;
    sync_file(&flow.status_json())?;
    match sync_file(&client.task_path(flow_id)) {
        Err(e) if e.is_not_found() => {}
        other => other?,
    }
    // The folder entries: the renames, and the folders made for this flow.
    for dir in [
        flow.path(),
        client.collections_dir().as_path(),
        client.tasks_dir().as_path(),
        client.path(),
    ] {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Replaces `status.json` of `status.flow_id`, creating the flow folder if needed.
pub fn write_status(client: &ClientDir, status: &FlowStatusDoc) -> Result<(), DatastoreError> {
    let flow = client.flow(&status.flow_id);
    ensure_dir(flow.path(), flow.fsync_documents())?;
    write_json(&flow.status_json(), status, flow.fsync_documents())
}

/// Reads `status.json`; a document naming another flow is corrupt.
pub fn read_status(client: &ClientDir, flow_id: &FlowId) -> Result<FlowStatusDoc, DatastoreError> {
    let path = client.flow(flow_id).status_json();
    let status: FlowStatusDoc = read_json(&path)?;
    if &status.flow_id != flow_id {
        return Err(DatastoreError::Corrupt {
            path,
            reason: "names another flow".into(),
        });
    }
    Ok(status)
}

/// What [`cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// status.json now says cancelled (this document), and the queue entry is gone.
    Cancelled(FlowStatusDoc),
    /// The flow had ended already, in this state: nothing was written.
    AlreadyEnded(FlowState),
}

/// Cancels a flow that has not ended: status.json becomes `cancelled` with `ended_by`
/// cancel, the finish time `now_ms`, and the rows and bytes of the result sets as they
/// stand (what arrived is kept), then the task queue entry is removed so an agent that
/// connects later is not given the task. In that order: a crash between the two leaves a
/// queued task for a closed flow, whose uploads are refused, never an open flow that no
/// queue remembers. A flow that does not exist is a not-found error.
///
/// The frontend serving the agent may write this status.json too (its end); both writers
/// re-read it before they write and leave a terminal state alone, which leaves the window
/// of one read and one rename between them (docs/files/cancel.md).
pub fn cancel(
    client: &ClientDir,
    flow_id: &FlowId,
    now_ms: u64,
) -> Result<CancelOutcome, DatastoreError> {
    // A hunt recruit not answered yet is made a flow here, to be closed like any other.
    let (request, mut status) = open_documents(client, flow_id)?;
    if status.state.is_terminal() {
        return Ok(CancelOutcome::AlreadyEnded(status.state));
    }
    let dir = client.flow(flow_id);
    let (mut total_rows, mut total_bytes) = (0, 0);
    status.artifacts.clear();
    for requested in &request.artifacts {
        let summary = super::resultset::summary(&dir.result_paths(&requested.name))?;
        total_rows += summary.rows;
        total_bytes += summary.bytes;
        status.artifacts.push(ArtifactRowsDoc {
            name: requested.name.clone(),
            rows: summary.rows,
        });
    }
    status.state = FlowState::Cancelled;
    status.ended_by = Some(EndedBy::Cancel);
    status.total_rows = total_rows;
    status.total_bytes = total_bytes;
    status.finish_time_ms = Some(now_ms);
    write_status(client, &status)?;
    remove_task(client, flow_id)?;
    Ok(CancelOutcome::Cancelled(status))
}

/// The client's flows, newest first (by request create time; flows whose request is
/// missing or unreadable sort last, still listed so they can be inspected), hunt recruits
/// not answered yet among them. Entries that are not flow folders (temp files, junk) are
/// skipped.
pub fn list_flows(client: &ClientDir) -> Result<Vec<FlowId>, DatastoreError> {
    let dir = client.collections_dir();
    let mut flows: Vec<(u64, u64, FlowId)> = Vec::new();
    for listed in ids_in(&dir, "", FlowId::parse)? {
        let (flow_id, entry) = listed?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let (ms, us) =
            read_request(client, &flow_id).map_or((0, 0), |r| (r.create_time_ms, r.create_time_us));
        flows.push((ms, us, flow_id));
    }
    // Hunt recruits its agent has not answered yet have no folder, only a queue entry.
    for listed in ids_in(&client.tasks_dir(), "", FlowId::parse)? {
        let (flow_id, _) = listed?;
        if let Ok(entry) = read_recruit_entry(client, &flow_id) {
            if !client.flow(&flow_id).path().exists() {
                let us = entry.create_time_us;
                flows.push((us / 1000, us, flow_id));
            }
        }
    }
    flows.sort_unstable_by(|a, b| b.cmp(a));
    Ok(flows.into_iter().map(|(_, _, id)| id).collect())
}

/// Queues `flow_id` for the agent: `tasks/<flow_id>` (content: the id, for humans).
/// Idempotent.
pub fn enqueue_task(client: &ClientDir, flow_id: &FlowId) -> Result<(), DatastoreError> {
    enqueue_task_synced(client, flow_id, client.fsync_documents())
}

fn enqueue_task_synced(
    client: &ClientDir,
    flow_id: &FlowId,
    fsync: bool,
) -> Result<(), DatastoreError> {
    ensure_dir(&client.tasks_dir(), fsync)?;
    write_atomic(
        &client.task_path(flow_id),
        flow_id.as_str().as_bytes(),
        fsync,
    )
}

/// Flows queued for the agent, oldest first (file mtime, then id). Files that are not
/// a flow id (temp files of an unfinished enqueue, junk) are skipped.
pub fn pending_tasks(client: &ClientDir) -> Result<Vec<FlowId>, DatastoreError> {
    let dir = client.tasks_dir();
    let mut tasks: Vec<(SystemTime, FlowId)> = Vec::new();
    for listed in ids_in(&dir, "", FlowId::parse)? {
        let (flow_id, entry) = listed?;
        // A task removed between listing and stat is simply no longer pending.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            tasks.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), flow_id));
        }
    }
    tasks.sort_unstable();
    Ok(tasks.into_iter().map(|(_, id)| id).collect())
}

/// Dequeues `flow_id`. Returns whether it was pending; removing twice is fine (an
/// agent may take the task on two frontends in turn).
pub fn remove_task(client: &ClientDir, flow_id: &FlowId) -> Result<bool, DatastoreError> {
    let path = client.task_path(flow_id);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("remove", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::path::Datastore;

    fn setup() -> (tempfile::TempDir, ClientDir) {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), true).unwrap();
        let client = ds.client(&ClientId::parse("C.0123456789abcdef").unwrap());
        (dir, client)
    }

    fn request(client: &ClientDir, n: u64, create_time_ms: u64) -> FlowRequest {
        let mut parameters = BTreeMap::new();
        parameters.insert("pattern".to_string(), "/etc/*.conf".to_string());
        FlowRequest {
            flow_id: FlowId::parse(&format!("F.{n:016X}")).unwrap(),
            client_id: client.id().clone(),
            artifacts: vec![ArtifactRequestDoc {
                name: ArtifactName::parse("Generic.Files.Glob").unwrap(),
                parameters,
            }],
            create_time_ms,
            create_time_us: create_time_ms * 1000,
            hunt_id: None,
            limits: FlowLimits::default(),
        }
    }

    #[test]
    fn scheduled_flows_are_readable_before_and_after_the_sync() {
        let (_dir, client) = setup();
        // The client folder exists: scheduling is only for agents that have connected.
        std::fs::create_dir_all(client.path()).unwrap();
        let req = request(&client, 7, 1_700_000_000_000);
        write_scheduled(&client, &req).unwrap();
        assert_eq!(read_request(&client, &req.flow_id).unwrap(), req);
        assert_eq!(
            read_status(&client, &req.flow_id).unwrap(),
            FlowStatusDoc::scheduled(&req)
        );
        assert_eq!(
            pending_tasks(&client).unwrap(),
            std::slice::from_ref(&req.flow_id)
        );
        sync_scheduled(&client, &req.flow_id).unwrap();
        // Delivered (queue entry gone) before the sync ran: still fine.
        let second = request(&client, 8, 1_700_000_000_001);
        write_scheduled(&client, &second).unwrap();
        remove_task(&client, &second.flow_id).unwrap();
        sync_scheduled(&client, &second.flow_id).unwrap();
        assert_eq!(
            pending_tasks(&client).unwrap(),
            std::slice::from_ref(&req.flow_id)
        );
        // Another client's request is refused, and writes nothing.
        let mut foreign = request(&client, 9, 1);
        foreign.client_id = ClientId::parse("C.00000000000000aa").unwrap();
        assert!(matches!(
            write_scheduled(&client, &foreign),
            Err(DatastoreError::Mismatch { .. })
        ));
        assert!(read_request(&client, &foreign.flow_id).is_err());
    }

    // Goal: a flow whose scheduling fails halfway (a full disk) leaves nothing behind: no
    // request without a status, no status without a queue entry.
    // Method: make the last write (the queue entry) fail by putting a non-empty folder
    // where it goes; then schedule again once it is gone.
    #[test]
    fn failed_scheduling_takes_back_what_it_wrote() {
        let (_dir, client) = setup();
        std::fs::create_dir_all(client.path()).unwrap();
        let req = request(&client, 5, 1_700_000_000_000);
        let blocker = client.task_path(&req.flow_id);
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        assert!(write_scheduled(&client, &req).is_err());
        assert!(read_request(&client, &req.flow_id)
            .unwrap_err()
            .is_not_found());
        assert!(
            !client.flow(&req.flow_id).path().exists(),
            "flow folder removed"
        );
        assert!(blocker.join("x").exists(), "what was not ours stays");
        std::fs::remove_dir_all(&blocker).unwrap();
        write_scheduled(&client, &req).unwrap();
        assert_eq!(
            pending_tasks(&client).unwrap(),
            std::slice::from_ref(&req.flow_id)
        );
        // A flow that holds results is never removed by a take-back.
        let paths = client
            .flow(&req.flow_id)
            .result_paths(&req.artifacts[0].name);
        let mut set = crate::datastore::ResultSet::open(&paths).unwrap();
        set.append_batch(0, b"{\"a\":1}\n").unwrap();
        unschedule(&client, &req.flow_id);
        assert!(client.flow(&req.flow_id).path().exists());
    }

    // Goal: a hunt recruit is one queue entry until its agent answers: its task (built
    // from the entry and the hunt's document) is what a collection's would be; its first
    // answer (or a cancel) makes the folder, request.json and status.json, once, without
    // undoing what is already there; an entry that is not a recruit's, or none, is not a
    // flow an agent may open.
    #[test]
    fn a_hunt_recruit_is_a_queue_entry_until_its_first_answer() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let client = ds.client(&ClientId::parse("C.0123456789abcdef").unwrap());
        std::fs::create_dir_all(client.path()).unwrap();
        let template = request(&client, 9, 1_700_000_000_000);
        let hunt = crate::datastore::hunt::HuntDoc {
            hunt_id: HuntId::random(),
            artifacts: template.artifacts.clone(),
            condition: Default::default(),
            create_time_ms: 1,
            expires_ms: 0,
            state: crate::datastore::hunt::HuntState::Running,
            start_time_ms: Some(1),
            stop_time_ms: None,
            limits: FlowLimits {
                timeout_s: 60,
                ..Default::default()
            },
        };
        crate::datastore::hunt::write_hunt(&ds, &hunt).unwrap();
        let recruit = FlowRequest {
            hunt_id: Some(hunt.hunt_id.to_string()),
            limits: hunt.limits,
            create_time_ms: 1_700_000_000_123,
            create_time_us: 1_700_000_000_123_456,
            ..template
        };
        // The first recruit finds no queue folder (made at first contact otherwise).
        assert!(!client.tasks_dir().exists());
        write_hunt_recruit(&client, &recruit).unwrap();
        let flow = client.flow(&recruit.flow_id);
        assert!(!flow.path().exists(), "no folder before the first answer");
        assert_eq!(
            pending_tasks(&client).unwrap(),
            vec![recruit.flow_id.clone()]
        );
        assert_eq!(queued_request(&client, &recruit.flow_id).unwrap(), recruit);
        assert!(read_request(&client, &recruit.flow_id)
            .unwrap_err()
            .is_not_found());

        let (opened, status) = open_documents(&client, &recruit.flow_id).unwrap();
        assert_eq!(opened, recruit);
        assert_eq!(status, FlowStatusDoc::scheduled(&recruit));
        assert_eq!(read_request(&client, &recruit.flow_id).unwrap(), recruit);
        // Progress made elsewhere is kept by a second opening.
        let mut started = status.clone();
        started.state = FlowState::InProgress;
        write_status(&client, &started).unwrap();
        let (_, again) = open_documents(&client, &recruit.flow_id).unwrap();
        assert_eq!(again.state, FlowState::InProgress);

        // A cancel of a recruit never answered closes it like any flow.
        let other = FlowRequest {
            flow_id: FlowId::random(),
            ..recruit.clone()
        };
        write_hunt_recruit(&client, &other).unwrap();
        let CancelOutcome::Cancelled(doc) = cancel(&client, &other.flow_id, 42).unwrap() else {
            panic!("a queued recruit is cancelled");
        };
        assert_eq!(doc.state, FlowState::Cancelled);
        assert_eq!(
            read_status(&client, &other.flow_id).unwrap().state,
            FlowState::Cancelled
        );
        assert!(!pending_tasks(&client).unwrap().contains(&other.flow_id));

        // An entry created but not written yet (or left so by a crash) is not there yet:
        // no task, no flow, not listed; and its name is never written over.
        let being_written = FlowId::random();
        fs::write(client.task_path(&being_written), b"").unwrap();
        assert!(queued_request(&client, &being_written)
            .unwrap_err()
            .is_not_found());
        assert!(open_documents(&client, &being_written)
            .unwrap_err()
            .is_not_found());
        assert!(!has_recruit_entry(&client, &being_written));
        assert!(!list_flows(&client).unwrap().contains(&being_written));
        let late = FlowRequest {
            flow_id: being_written.clone(),
            ..recruit.clone()
        };
        assert!(write_hunt_recruit(&client, &late).is_err());
        assert!(fs::read(client.task_path(&being_written))
            .unwrap()
            .is_empty());

        // Neither a collection's entry without its request nor no entry opens a flow.
        let plain = FlowId::random();
        enqueue_task(&client, &plain).unwrap();
        assert!(open_documents(&client, &plain).unwrap_err().is_not_found());
        assert!(open_documents(&client, &FlowId::random())
            .unwrap_err()
            .is_not_found());
        // A recruit without a hunt is refused at the write.
        let no_hunt = FlowRequest {
            hunt_id: None,
            ..recruit
        };
        assert!(write_hunt_recruit(&client, &no_hunt).is_err());
    }

    // Goal: a take-back of a flow a stopped process was writing removes its half-written
    // documents too (the temporary files of the atomic writes), and with them the folder,
    // which would otherwise be a flow without a status for ever.
    #[test]
    fn a_take_back_removes_the_temporary_files_a_stopped_write_left() {
        let (_dir, client) = setup();
        std::fs::create_dir_all(client.path()).unwrap();
        let req = request(&client, 4, 1_700_000_000_000);
        let flow = client.flow(&req.flow_id);
        std::fs::create_dir_all(flow.path()).unwrap();
        let request_tmp = crate::datastore::path::temp_sibling(&flow.request_json()).unwrap();
        let status_tmp = crate::datastore::path::temp_sibling(&flow.status_json()).unwrap();
        std::fs::write(&request_tmp, b"{\"flow_id\":").unwrap();
        std::fs::write(&status_tmp, b"").unwrap();
        std::fs::write(flow.request_json(), b"{}").unwrap();
        std::fs::create_dir_all(client.tasks_dir()).unwrap();
        let task_tmp =
            crate::datastore::path::temp_sibling(&client.task_path(&req.flow_id)).unwrap();
        std::fs::write(&task_tmp, b"").unwrap();
        // Another flow's queue entry is not this take-back's to remove.
        let other = FlowId::random();
        std::fs::write(client.task_path(&other), other.as_str()).unwrap();
        unschedule(&client, &req.flow_id);
        assert!(!flow.path().exists(), "flow folder removed");
        assert!(
            !task_tmp.exists(),
            "the queue entry's temporary file removed"
        );
        assert_eq!(pending_tasks(&client).unwrap(), vec![other]);
    }

    // Goal: a cancel keeps the rows that arrived, closes the flow, unqueues its task, and
    // leaves an ended flow (or a missing one) alone.
    #[test]
    fn cancel_closes_an_open_flow_once_and_keeps_its_rows() {
        let (_dir, client) = setup();
        std::fs::create_dir_all(client.path()).unwrap();
        let req = request(&client, 3, 1_700_000_000_000);
        write_scheduled(&client, &req).unwrap();
        let paths = client
            .flow(&req.flow_id)
            .result_paths(&req.artifacts[0].name);
        let mut set = crate::datastore::ResultSet::open(&paths).unwrap();
        set.append_batch(0, b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        let CancelOutcome::Cancelled(doc) = cancel(&client, &req.flow_id, 42).unwrap() else {
            panic!("an open flow is cancelled");
        };
        assert_eq!(read_status(&client, &req.flow_id).unwrap(), doc);
        assert_eq!(
            (doc.state, doc.ended_by, doc.total_rows, doc.finish_time_ms),
            (FlowState::Cancelled, Some(EndedBy::Cancel), 2, Some(42))
        );
        assert_eq!(doc.total_bytes, 16);
        assert_eq!(doc.artifacts[0].rows, 2);
        assert!(pending_tasks(&client).unwrap().is_empty(), "task unqueued");
        assert_eq!(
            cancel(&client, &req.flow_id, 43).unwrap(),
            CancelOutcome::AlreadyEnded(FlowState::Cancelled)
        );
        let missing = FlowId::parse("F.00000000000000EE").unwrap();
        assert!(cancel(&client, &missing, 1).unwrap_err().is_not_found());
    }

    #[test]
    fn request_and_status_round_trip() {
        let (_dir, client) = setup();
        let req = request(&client, 1, 1_700_000_000_000);
        write_request(&client, &req).unwrap();
        assert_eq!(read_request(&client, &req.flow_id).unwrap(), req);
        let mut status = FlowStatusDoc::scheduled(&req);
        write_status(&client, &status).unwrap();
        assert_eq!(read_status(&client, &req.flow_id).unwrap(), status);
        status.state = FlowState::Finished;
        status.finish_time_ms = Some(5);
        write_status(&client, &status).unwrap();
        assert_eq!(
            read_status(&client, &req.flow_id).unwrap().state,
            FlowState::Finished
        );
        let missing = FlowId::parse("F.00000000000000FF").unwrap();
        assert!(read_status(&client, &missing).unwrap_err().is_not_found());
    }

    // Goal: status.json is exactly the API's collection shape (docs/architecture.md, "API shapes").
    #[test]
    fn status_json_has_the_api_shape() {
        let (_dir, client) = setup();
        let mut status = FlowStatusDoc::scheduled(&request(&client, 1, 9));
        status.state = FlowState::InProgress;
        let json: serde_json::Value = serde_json::to_value(&status).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = [
            "flow_id",
            "state",
            "total_rows",
            "total_bytes",
            "artifacts",
            "errors",
            "create_time_ms",
            "start_time_ms",
            "finish_time_ms",
            "ended_by",
            "uploaded_files",
            "uploaded_bytes",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(json["state"], "in_progress");
        assert_eq!(json["flow_id"], "F.0000000000000001");
        assert_eq!(
            json["artifacts"][0],
            serde_json::json!({"name": "Generic.Files.Glob", "rows": 0})
        );
        for (state, text) in [
            (FlowState::Scheduled, "scheduled"),
            (FlowState::Cancelled, "cancelled"),
            (FlowState::Error, "error"),
            (FlowState::Finished, "finished"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
    }

    // Goal: a status.json written before `uploaded_files`/`uploaded_bytes` existed
    // still reads, as zero uploads.
    #[test]
    fn old_status_documents_read_without_upload_counts() {
        let (_dir, client) = setup();
        let status = FlowStatusDoc::scheduled(&request(&client, 3, 9));
        let mut json = serde_json::to_value(&status).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("uploaded_files");
        object.remove("uploaded_bytes");
        object.remove("ended_by");
        let read: FlowStatusDoc = serde_json::from_value(json).unwrap();
        assert_eq!(read, status);
    }

    #[test]
    fn hostile_documents_are_rejected_on_read() {
        let (_dir, client) = setup();
        let req = request(&client, 1, 1);
        write_request(&client, &req).unwrap();
        let path = client.flow(&req.flow_id).request_json();
        let text = fs::read_to_string(&path).unwrap();
        for (from, to) in [
            ("Generic.Files.Glob", "../../etc"),
            ("F.0000000000000001", "F.0000000000000002"),
            ("C.0123456789abcdef", "C.fedcba9876543210"),
            ("C.0123456789abcdef", "../x"),
        ] {
            fs::write(&path, text.replace(from, to)).unwrap();
            assert!(read_request(&client, &req.flow_id).is_err(), "{to}");
        }
        let mut other = req.clone();
        other.client_id = ClientId::parse("C.fedcba9876543210").unwrap();
        assert!(matches!(
            write_request(&client, &other),
            Err(DatastoreError::Mismatch { .. })
        ));
    }

    #[test]
    fn list_flows_is_newest_first_and_skips_junk() {
        let (_dir, client) = setup();
        for (n, t) in [(1, 100), (2, 300), (3, 200)] {
            write_request(&client, &request(&client, n, t)).unwrap();
        }
        let cdir = client.collections_dir();
        fs::create_dir(cdir.join("F.0000000000000009")).unwrap(); // no request.json yet
        fs::create_dir(cdir.join("F.000000000000000a")).unwrap(); // not an id
        fs::create_dir(cdir.join("..F.0000000000000004")).unwrap();
        fs::write(cdir.join("F.0000000000000005"), b"a file, not a flow").unwrap();
        fs::write(cdir.join("F.0000000000000006.tmp.0123456789abcdef"), b"").unwrap();
        let ids: Vec<String> = list_flows(&client)
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "F.0000000000000002",
                "F.0000000000000003",
                "F.0000000000000001",
                "F.0000000000000009"
            ]
        );
        let (_dir2, empty) = setup();
        assert!(list_flows(&empty).unwrap().is_empty());
    }

    #[test]
    fn task_queue_enqueue_list_remove() {
        let (_dir, client) = setup();
        assert!(pending_tasks(&client).unwrap().is_empty());
        let ids: Vec<FlowId> = (1..=3)
            .map(|n| FlowId::parse(&format!("F.{n:016X}")).unwrap())
            .collect();
        for id in &ids {
            enqueue_task(&client, id).unwrap();
        }
        enqueue_task(&client, &ids[0]).unwrap(); // idempotent
        fs::write(
            client
                .tasks_dir()
                .join("F.0000000000000007.tmp.00000000000000aa"),
            b"",
        )
        .unwrap();
        fs::write(client.tasks_dir().join("notes"), b"").unwrap();
        let mut pending = pending_tasks(&client).unwrap();
        pending.sort();
        assert_eq!(pending, ids);
        assert!(remove_task(&client, &ids[1]).unwrap());
        assert!(!remove_task(&client, &ids[1]).unwrap());
        let mut pending = pending_tasks(&client).unwrap();
        pending.sort();
        assert_eq!(pending, [ids[0].clone(), ids[2].clone()]);
    }

    // Goal: tasks come out oldest first. Method: set the mtimes explicitly (the kernel's
    // coarse clock can give equal mtimes to quick successive writes).
    #[test]
    fn pending_tasks_are_oldest_first() {
        let (_dir, client) = setup();
        let ids: Vec<FlowId> = (1..=3)
            .map(|n| FlowId::parse(&format!("F.{n:016X}")).unwrap())
            .collect();
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for (id, age_s) in ids.iter().zip([10u64, 30, 20]) {
            enqueue_task(&client, id).unwrap();
            let file = fs::File::options()
                .write(true)
                .open(client.task_path(id))
                .unwrap();
            file.set_modified(base - std::time::Duration::from_secs(age_s))
                .unwrap();
        }
        assert_eq!(
            pending_tasks(&client).unwrap(),
            [ids[1].clone(), ids[2].clone(), ids[0].clone()]
        );
    }
}
