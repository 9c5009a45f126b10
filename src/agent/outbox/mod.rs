//! What the agent still has to deliver, kept until the server acknowledges it: each
//! flow's task (from when it arrives), its collected outputs (rows per artifact, files,
//! the status to send) and how far the server has acknowledged them. On disk for the real
//! agent (`ClientSettings.outbox_dir`), so a restart resumes every flow where the
//! acknowledgements stopped; in memory for loadgen's thousands of simulated agents. One
//! implementation, two storages: with no folder every write below is skipped.
//!
//! The rules that keep two runs from being spliced into one result set:
//! - nothing of a flow is sent before its whole collection output is persisted (rows
//!   files and snapshots synced, then `collected.json` renamed into place), so a flow whose
//!   collection a restart interrupted runs again from scratch, having sent nothing;
//! - a flow with persisted outputs is never collected again;
//! - a finished flow (status acknowledged, cancelled, refused, given up) is journalled
//!   (`journal.rs`) before its folder goes, and a task for it is never run again.
//!
//! Past `max_outbox_bytes` the oldest flows are failed: their data dropped, and only a
//! FlowStatus ERROR naming the bound sent.
//!
//! Module map: `layout` cuts rows into batches, `trim` applies the task's limits,
//! `flow` holds one flow's state and the answer rules, `journal` the finished flows,
//! `disk` the folder. This file: the queue, storage, the bound, recovery at start.

/// Private folders and crash-safe file replacement, shared with the event buffer.
pub(crate) mod disk;
mod flow;
mod journal;
mod layout;
mod trim;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use prost::Message;

pub use crate::agent::collected::ArtifactOutput;
use crate::agent::collected::FileSource;
use crate::limits::{MAX_OUTBOX_FLOWS_COUNT, MIN_FILE_CHUNK_BYTES, OUTBOX_UPLOAD_SLACK_BYTES};
use crate::protocol::pb;
pub use flow::Reply;
use flow::{ArtifactDoc, Effect, FileDoc, Flow, Item, Manifest, Progress, Ready};
use journal::Journal;
pub use trim::{MAX_ROWS, MAX_UPLOAD_BYTES, TIMEOUT_S};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("agent outbox {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One upload taken from the outbox, to hand back with the server's answer.
#[derive(Debug, Clone)]
pub struct Sending {
    pub flow_id: String,
    item: Item,
    /// Bytes of rows or file data it carries, and rows.
    pub bytes: u64,
    pub rows: u64,
}

impl Sending {
    pub fn is_status(&self) -> bool {
        self.item == Item::Status
    }

    pub fn is_file_chunk(&self) -> bool {
        matches!(self.item, Item::Chunk { .. })
    }
}

/// What an answer meant, for the agent's log and observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took it (or something changed that needs no report).
    Progressed,
    /// The flow's status was acknowledged: the flow is delivered, with these rows.
    FlowDone { rows: u64 },
    /// The flow was dropped whole (refused, closed by the server): why.
    FlowDropped(String),
}

pub struct Outbox {
    /// None: memory only.
    root: Option<PathBuf>,
    max_bytes: u64,
    /// Most bytes of rows in one batch, and of data in one chunk (halved after a 413).
    max_rows_bytes: u64,
    chunk_bytes: u64,
    /// Invariant: in increasing `order`; at most `MAX_OUTBOX_FLOWS_COUNT`.
    flows: VecDeque<Flow>,
    next_order: u64,
    journal: Journal,
}

impl Outbox {
    /// An outbox in memory, lost with the process (loadgen's agents).
    pub fn memory(max_upload_bytes: u64, max_bytes: u64) -> Self {
        let max_rows_bytes = max_upload_bytes
            .saturating_sub(OUTBOX_UPLOAD_SLACK_BYTES)
            .max(MIN_FILE_CHUNK_BYTES);
        Self {
            root: None,
            max_bytes,
            max_rows_bytes,
            chunk_bytes: max_rows_bytes,
            flows: VecDeque::new(),
            next_order: 0,
            journal: Journal::memory(),
        }
    }

    /// The outbox in `root` (made if missing, owner-only) with what a previous run left:
    /// collected flows resume where their acknowledgements stopped, flows whose collection
    /// was interrupted run again. Also returns notes for the log (flows failed, damage).
    pub fn open(
        root: &Path,
        max_upload_bytes: u64,
        max_bytes: u64,
    ) -> Result<(Self, Vec<String>), OutboxError> {
        let io = |source| OutboxError::Io {
            path: root.display().to_string(),
            source,
        };
        disk::create_private_dir(root).map_err(io)?;
        let mut outbox = Self::memory(max_upload_bytes, max_bytes);
        outbox.journal = Journal::open(root).map_err(io)?;
        outbox.root = Some(root.to_path_buf());
        let mut found = Vec::new();
        for entry in std::fs::read_dir(root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                disk::remove_file(&entry.path());
            } else if let Some((order, id)) = disk::parse_flow_dir(name) {
                found.push((order, id, entry.path()));
            }
        }
        found.sort();
        let mut notes = Vec::new();
        for (order, id, dir) in found {
            outbox.next_order = outbox.next_order.max(order + 1);
            if outbox.journal.contains(&id) || outbox.flows.len() >= MAX_OUTBOX_FLOWS_COUNT {
                disk::remove_dir(&dir);
                continue;
            }
            match recover_flow(order, &id, &dir) {
                Ok(flow) => outbox.flows.push_back(flow),
                Err(why) => {
                    notes.push(format!("flow {id} dropped from the outbox: {why}"));
                    disk::remove_dir(&dir);
                }
            }
        }
        notes.extend(outbox.make_room(0, None));
        Ok((outbox, notes))
    }

    pub fn on_disk(&self) -> bool {
        self.root.is_some()
    }

    /// Bytes held: rows and files not yet acknowledged.
    pub fn total_bytes(&self) -> u64 {
        self.flows
            .iter()
            .filter_map(|f| f.ready.as_ref())
            .map(Ready::held_bytes)
            .sum()
    }

    /// Flows held (waiting to run, running, or delivering).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Whether a collected flow waits to be delivered.
    pub fn has_uploads(&self) -> bool {
        self.flows.iter().any(|f| f.ready.is_some())
    }

    /// Whether `flow_id` is held or was finished: a task for it must not run (again).
    pub fn knows(&self, flow_id: &str) -> bool {
        self.journal.contains(flow_id) || self.flows.iter().any(|f| f.id == flow_id)
    }

    /// Takes a new task: persisted before it runs. False when it is not taken: known
    /// already, an id that can't name a folder, or the outbox holds its most flows (the
    /// server keeps it queued and pushes it again at the next connect).
    pub fn add_task(&mut self, task: pb::Task) -> bool {
        if self.knows(&task.flow_id)
            || !disk::is_name_safe(&task.flow_id)
            || self.flows.len() >= MAX_OUTBOX_FLOWS_COUNT
        {
            return false;
        }
        let order = self.next_order;
        self.next_order += 1;
        if let Some(root) = &self.root {
            let dir = disk::flow_dir(root, order, &task.flow_id);
            let saved = disk::create_private_dir(&dir.join(disk::FILES_DIR))
                .and_then(|()| disk::sync_dir(root))
                .and_then(|()| {
                    disk::write_atomically(&dir.join(disk::TASK_FILE), &task.encode_to_vec(), true)
                });
            if let Err(e) = saved {
                // It runs all the same; its outputs then fail to persist and the flow
                // is reported failed rather than lost.
                tracing::warn!(flow = %task.flow_id, "task not saved in the outbox: {e}");
            }
        }
        self.flows.push_back(Flow {
            order,
            id: task.flow_id.clone(),
            task,
            ready: None,
        });
        true
    }

    /// The oldest task not yet collected (other than `running`), with where its
    /// collection puts file snapshots (None: in memory).
    pub fn next_to_collect(&self, running: Option<&str>) -> Option<(pb::Task, Option<PathBuf>)> {
        let flow = self
            .flows
            .iter()
            .find(|f| f.ready.is_none() && Some(f.id.as_str()) != running)?;
        let files_dir = self.flow_dir(flow).map(|d| d.join(disk::FILES_DIR));
        Some((flow.task.clone(), files_dir))
    }

    /// Queues a flow's collected outputs, after the task's limits, and persists them
    /// before anything of the flow can be sent. Returns notes for the log (flows failed
    /// to make room). Outputs of a flow no longer held (cancelled) or already reported
    /// (timed out) are discarded.
    pub fn collected(&mut self, flow_id: &str, mut outputs: Vec<ArtifactOutput>) -> Vec<String> {
        let Some(at) = self
            .position(flow_id)
            .filter(|&at| self.flows[at].ready.is_none())
        else {
            return Vec::new();
        };
        let limits = task_limits(&self.flows[at].task);
        let trimmed = trim::trim(&mut outputs, &limits);
        let needed: u64 = outputs
            .iter()
            .map(|o| {
                let files: u64 = o
                    .uploads
                    .iter()
                    .filter(|f| !matches!(f.source, FileSource::Synthetic { .. }))
                    .map(|f| f.size)
                    .sum();
                o.jsonl.len() as u64 + files
            })
            .sum();
        let mut notes = self.make_room(needed, Some(flow_id));
        let dir = self.flow_dir(&self.flows[at]);
        let ready = if self.total_bytes().saturating_add(needed) > self.max_bytes {
            let error = self.full_error(format!("this flow's {needed} bytes do not fit"));
            notes.push(format!("flow {flow_id}: {error}"));
            Ready::failed(trimmed.limit_hit, error)
        } else {
            let max_rows_bytes = self.max_rows_bytes;
            match build_ready(dir.as_deref(), outputs, &trimmed, max_rows_bytes) {
                Ok(ready) => ready,
                Err(e) => {
                    let error = format!("agent outbox cannot store the flow's outputs: {e}");
                    notes.push(format!("flow {flow_id}: {error}"));
                    Ready::failed(trimmed.limit_hit, error)
                }
            }
        };
        if ready.progress.failed.is_some() {
            self.commit_failed(dir.as_deref(), &ready);
        }
        self.flows[at].ready = Some(ready);
        notes
    }

    /// The collection of `flow_id` did not return within its timeout and grace: report
    /// the flow as ended by `timeout_s`, with no rows (whatever it collects later is
    /// discarded).
    pub fn timed_out(&mut self, flow_id: &str, error: String) {
        let Some(at) = self.position(flow_id) else {
            return;
        };
        let ready = Ready::failed(TIMEOUT_S, error);
        let dir = self.flow_dir(&self.flows[at]);
        self.commit_failed(dir.as_deref(), &ready);
        self.flows[at].ready = Some(ready);
    }

    /// The server cancelled `flow_id`: drop everything of it (files too) and journal it,
    /// so it never runs. True when it was held.
    pub fn cancel(&mut self, flow_id: &str) -> bool {
        let held = self.position(flow_id).is_some();
        self.finish(flow_id);
        if !held && disk::is_name_safe(flow_id) {
            if let Err(e) = self.journal.add(flow_id) {
                tracing::warn!(flow = %flow_id, "finished-flow journal not written: {e}");
            }
        }
        held
    }

    /// The next upload to send: the oldest collected flow's next item.
    pub fn next_upload(&mut self) -> Option<(pb::Upload, Sending)> {
        loop {
            let at = self.flows.iter().position(|f| f.ready.is_some())?;
            let chunk_bytes = self.chunk_bytes;
            let flow = &mut self.flows[at];
            let ready = flow.ready.as_mut().expect("found collected");
            let item = ready.next(chunk_bytes);
            match ready.upload(&flow.id, item) {
                Ok(upload) => {
                    let (bytes, rows) = match &upload.kind {
                        Some(pb::upload::Kind::Result(b)) => {
                            (b.jsonl.len() as u64, u64::from(b.row_count))
                        }
                        Some(pb::upload::Kind::File(c)) => (c.data.len() as u64, 0),
                        _ => (0, 0),
                    };
                    let sending = Sending {
                        flow_id: flow.id.clone(),
                        item,
                        bytes,
                        rows,
                    };
                    return Some((upload, sending));
                }
                // Unreadable bytes: the file is given up, or (rows) the flow failed; both
                // leave the flow with something else to send.
                Err(why) => {
                    let effect = match item {
                        Item::Chunk { file, .. } => ready.give_up(file, why),
                        _ => {
                            ready.fail(format!("agent outbox lost the flow's {why}"));
                            Effect::Progressed {
                                sync: true,
                                file_ended: None,
                            }
                        }
                    };
                    self.apply(at, effect);
                }
            }
        }
    }

    /// Applies the server's answer to `sending`. 503/408 must not come here: they change
    /// nothing (the caller waits and sends the same again).
    pub fn answered(&mut self, sending: &Sending, reply: Reply) -> Outcome {
        let Some(at) = self.position(&sending.flow_id) else {
            return Outcome::Progressed; // cancelled meanwhile
        };
        let Some(ready) = self.flows[at].ready.as_mut() else {
            return Outcome::Progressed;
        };
        let effect = ready.answered(sending.item, reply);
        self.apply(at, effect)
    }

    fn apply(&mut self, at: usize, effect: Effect) -> Outcome {
        let dir = self.flow_dir(&self.flows[at]);
        let flow = &mut self.flows[at];
        let ready = flow
            .ready
            .as_mut()
            .expect("only collected flows are answered");
        match effect {
            Effect::Progressed { sync, file_ended } => {
                save_progress(dir.as_deref(), &ready.progress, sync);
                if let (Some(file), Some(dir)) = (file_ended, &dir) {
                    remove_stored(dir, &ready.manifest.files[file]);
                }
                if ready.progress.failed.is_some() {
                    remove_data(dir.as_deref(), ready);
                }
                Outcome::Progressed
            }
            Effect::Relaid => {
                if let Some(dir) = &dir {
                    if let Err(e) = save_manifest(dir, &ready.manifest) {
                        tracing::warn!(flow = %flow.id, "outbox manifest not saved: {e}");
                    }
                }
                Outcome::Progressed
            }
            Effect::SmallerChunks => {
                if self.chunk_bytes / 2 < MIN_FILE_CHUNK_BYTES {
                    let Item::Chunk { file, .. } = ready.next(self.chunk_bytes) else {
                        return Outcome::Progressed;
                    };
                    let effect = ready.give_up(
                        file,
                        format!("the server refused even {} byte chunks", self.chunk_bytes),
                    );
                    return self.apply(at, effect);
                }
                self.chunk_bytes /= 2;
                Outcome::Progressed
            }
            Effect::Done => {
                let rows = ready
                    .status(&flow.id)
                    .artifacts
                    .iter()
                    .map(|a| a.rows)
                    .sum();
                let id = flow.id.clone();
                self.finish(&id);
                Outcome::FlowDone { rows }
            }
            Effect::Drop(why) => {
                let id = flow.id.clone();
                self.finish(&id);
                Outcome::FlowDropped(why)
            }
        }
    }

    /// Journals `flow_id` as finished, then forgets it and removes its folder.
    fn finish(&mut self, flow_id: &str) {
        let Some(at) = self.position(flow_id) else {
            return;
        };
        if let Err(e) = self.journal.add(flow_id) {
            tracing::warn!(flow = %flow_id, "finished-flow journal not written: {e}");
        }
        let flow = self.flows.remove(at).expect("position is in range");
        if let Some(dir) = self.flow_dir(&flow) {
            disk::remove_dir(&dir);
        }
    }

    /// Fails the oldest collected flows (not `keep`) until `needed` more bytes fit.
    fn make_room(&mut self, needed: u64, keep: Option<&str>) -> Vec<String> {
        let mut notes = Vec::new();
        let mut total = self.total_bytes();
        for at in 0..self.flows.len() {
            if total.saturating_add(needed) <= self.max_bytes {
                break;
            }
            if Some(self.flows[at].id.as_str()) == keep {
                continue;
            }
            let dir = self.flow_dir(&self.flows[at]);
            let Some(ready) = self.flows[at].ready.as_mut() else {
                continue;
            };
            let held = ready.held_bytes();
            if held == 0 {
                continue;
            }
            let error = format!(
                "agent outbox is full ({} bytes): this flow's {held} undelivered bytes were \
                 dropped to make room for newer flows",
                self.max_bytes
            );
            notes.push(format!("flow {}: {error}", self.flows[at].id));
            let ready = self.flows[at].ready.as_mut().expect("checked above");
            ready.fail(error);
            save_progress(dir.as_deref(), &ready.progress, true);
            remove_data(dir.as_deref(), ready);
            total -= held;
        }
        notes
    }

    fn full_error(&self, detail: String) -> String {
        format!("agent outbox is full ({} bytes): {detail}", self.max_bytes)
    }

    /// Persists a flow failed before delivery: its manifest (so it is not collected
    /// again) and its progress (the error), and drops whatever data its folder holds.
    fn commit_failed(&self, dir: Option<&Path>, ready: &Ready) {
        let Some(dir) = dir else { return };
        save_progress(Some(dir), &ready.progress, true);
        if let Err(e) = save_manifest(dir, &ready.manifest) {
            tracing::warn!(path = %dir.display(), "outbox manifest not saved: {e}");
        }
        remove_data(Some(dir), ready);
    }

    fn position(&self, flow_id: &str) -> Option<usize> {
        self.flows.iter().position(|f| f.id == flow_id)
    }

    fn flow_dir(&self, flow: &Flow) -> Option<PathBuf> {
        self.root
            .as_ref()
            .map(|root| disk::flow_dir(root, flow.order, &flow.id))
    }
}

/// The task's limits (none when it carries none).
pub fn task_limits(task: &pb::Task) -> crate::limits::FlowLimits {
    task.limits
        .as_ref()
        .map_or_else(Default::default, |l| crate::limits::FlowLimits {
            timeout_s: l.timeout_s,
            max_rows: l.max_rows,
            max_upload_bytes: l.max_upload_bytes,
        })
}

/// Turns outputs into a collected flow: numbers files (position over all the flow's
/// uploads), cuts rows into batches, and, on disk, writes and syncs the rows and any
/// in-memory file bytes, syncs the snapshots, then commits `collected.json`.
fn build_ready(
    dir: Option<&Path>,
    outputs: Vec<ArtifactOutput>,
    trimmed: &trim::Trimmed,
    max_rows_bytes: u64,
) -> std::io::Result<Ready> {
    let mut manifest = Manifest {
        limit_hit: trimmed.limit_hit.to_string(),
        ..Default::default()
    };
    let (mut rows, mut files) = (Vec::new(), Vec::new());
    let mut upload = 0u32;
    for (i, output) in outputs.into_iter().enumerate() {
        if let Some(e) = &output.error {
            manifest.errors.push(format!("{}: {e}", output.name));
        }
        let batches = layout::spans(&output.jsonl, max_rows_bytes);
        rows.push(match dir {
            Some(dir) if !output.jsonl.is_empty() => {
                let path = disk::rows_file(dir, i);
                disk::write_synced(&path, &output.jsonl)?;
                FileSource::Snapshot(path)
            }
            _ => FileSource::Memory(output.jsonl.clone()),
        });
        manifest.artifacts.push(ArtifactDoc {
            name: output.name.clone(),
            bytes: output.jsonl.len() as u64,
            batches,
        });
        for file in output.uploads {
            let n = upload;
            upload += 1;
            if trimmed.dropped_files.contains(&n) {
                if let (Some(dir), FileSource::Snapshot(path)) = (dir, &file.source) {
                    if path.starts_with(dir) {
                        disk::remove_file(path);
                    }
                }
                continue;
            }
            let (source, doc) = stash_file(dir, n, &output.name, file)?;
            files.push(source);
            manifest.files.push(doc);
        }
    }
    if let Some(dir) = dir {
        save_manifest(dir, &manifest)?;
    }
    Ok(Ready::new(manifest, rows, files))
}

/// Makes file `n`'s bytes durable (on disk: a snapshot synced, bytes held in memory
/// written out) and describes it for the manifest.
fn stash_file(
    dir: Option<&Path>,
    n: u32,
    artifact: &str,
    file: crate::agent::collected::CollectedFile,
) -> std::io::Result<(FileSource, FileDoc)> {
    let (source, stored, synthetic) = match (dir, file.source) {
        (_, FileSource::Synthetic { seed }) => (FileSource::Synthetic { seed }, None, Some(seed)),
        (Some(dir), FileSource::Memory(bytes)) => {
            let path = disk::upload_file(dir, n);
            disk::write_synced(&path, &bytes)?;
            (FileSource::Snapshot(path.clone()), Some(path), None)
        }
        (Some(_), FileSource::Snapshot(path)) => {
            disk::sync_file(&path)?;
            (FileSource::Snapshot(path.clone()), Some(path), None)
        }
        (None, source) => (source, None, None),
    };
    let doc = FileDoc {
        upload: n,
        artifact: artifact.to_string(),
        path: file.path,
        size: file.size,
        sha256: hex::encode(file.sha256),
        truncated: file.truncated,
        stored,
        synthetic,
    };
    Ok((source, doc))
}

/// A flow's folder as a previous run left it.
fn recover_flow(order: u64, id: &str, dir: &Path) -> Result<Flow, String> {
    let task_bytes = disk::read_document(&dir.join(disk::TASK_FILE))
        .map_err(|e| format!("its task is unreadable: {e}"))?;
    let task = pb::Task::decode(task_bytes.as_slice())
        .map_err(|e| format!("its task does not decode: {e}"))?;
    if task.flow_id != id {
        return Err(format!("its task is for flow {}", task.flow_id));
    }
    let manifest = match disk::read_document(&dir.join(disk::COLLECTED_FILE)) {
        Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes)
            .map_err(|e| format!("collected.json does not parse: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Collection interrupted: nothing was sent, so it runs again from scratch.
            disk::clear_outputs(dir).map_err(|e| format!("clearing its folder: {e}"))?;
            disk::create_private_dir(&dir.join(disk::FILES_DIR))
                .map_err(|e| format!("its files folder: {e}"))?;
            return Ok(Flow {
                order,
                id: id.to_string(),
                task,
                ready: None,
            });
        }
        Err(e) => return Err(format!("collected.json is unreadable: {e}")),
    };
    let rows = (0..manifest.artifacts.len())
        .map(|i| FileSource::Snapshot(disk::rows_file(dir, i)))
        .collect();
    let files = manifest
        .files
        .iter()
        .map(|doc| match (doc.synthetic, &doc.stored) {
            (Some(seed), _) => FileSource::Synthetic { seed },
            (None, Some(path)) if path.starts_with(dir) => FileSource::Snapshot(path.clone()),
            // Reading it fails and gives the file up with that reason.
            _ => FileSource::Snapshot(dir.join("missing")),
        })
        .collect();
    let mut ready = Ready::new(manifest, rows, files);
    if let Ok(bytes) = disk::read_document(&dir.join(disk::PROGRESS_FILE)) {
        match serde_json::from_slice::<Progress>(&bytes) {
            Ok(p)
                if p.acked.len() == ready.progress.acked.len()
                    && p.files.len() == ready.progress.files.len() =>
            {
                ready.progress = p
            }
            // Unknown progress: resending from the start is only duplicates.
            _ => tracing::warn!(flow = %id, "outbox progress unreadable; resending the flow"),
        }
    }
    let damaged = ready
        .manifest
        .artifacts
        .iter()
        .enumerate()
        .find_map(|(i, doc)| {
            let on_disk = std::fs::metadata(disk::rows_file(dir, i)).map_or(0, |m| m.len());
            (doc.bytes > 0 && on_disk < doc.bytes).then(|| {
                format!(
                    "agent outbox lost rows of {} ({on_disk} of {} bytes)",
                    doc.name, doc.bytes
                )
            })
        });
    if let Some(error) = damaged {
        ready.fail(error);
    }
    Ok(Flow {
        order,
        id: id.to_string(),
        task,
        ready: Some(ready),
    })
}

fn save_manifest(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(manifest).expect("manifest fields always serialise");
    disk::write_atomically(&dir.join(disk::COLLECTED_FILE), &bytes, true)
}

/// Persists progress; a failure is logged and costs only resends after a restart.
fn save_progress(dir: Option<&Path>, progress: &Progress, sync: bool) {
    let Some(dir) = dir else { return };
    let bytes = serde_json::to_vec(progress).expect("progress fields always serialise");
    if let Err(e) = disk::write_atomically(&dir.join(disk::PROGRESS_FILE), &bytes, sync) {
        tracing::warn!(path = %dir.display(), "outbox progress not saved: {e}");
    }
}

/// Deletes a file's stored copy once the server has it all (or it was given up).
fn remove_stored(dir: &Path, doc: &FileDoc) {
    if let Some(path) = &doc.stored {
        if path.starts_with(dir) {
            disk::remove_file(path);
        }
    }
}

/// Deletes a failed flow's rows and file copies (its manifest and progress stay).
fn remove_data(dir: Option<&Path>, ready: &Ready) {
    let Some(dir) = dir else { return };
    for i in 0..ready.manifest.artifacts.len() {
        disk::remove_file(&disk::rows_file(dir, i));
    }
    ready
        .manifest
        .files
        .iter()
        .for_each(|doc| remove_stored(dir, doc));
    disk::remove_dir(&dir.join(disk::FILES_DIR));
}
