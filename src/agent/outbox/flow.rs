//! One flow in the outbox: its task, then (once collected and persisted) what it has to
//! send and how far the server has acknowledged it, and the rules for the server's
//! answers. Delivery order within a flow: result batches (artifact by artifact, seq 0,
//! 1, ...), then files (by upload number, chunk by chunk), then the status, once every
//! file is acknowledged or given up.
//!
//! Owns: the manifest and progress documents' shapes, what to send next, what an answer
//! changes. Must not: touch the disk (the outbox persists what this decides).

use serde::{Deserialize, Serialize};

use crate::agent::collected::FileSource;
use crate::agent::outbox::layout::{self, Span};
use crate::agent::outbox::trim::TIMEOUT_S;
use crate::limits::MAX_FILE_STALLED_ANSWERS_COUNT;
use crate::protocol::pb;

/// Errors a status carries at most, and characters of each: the server keeps as many.
const MAX_STATUS_ERRORS_COUNT: usize = 100;
const MAX_STATUS_ERROR_CHARS: usize = 1000;

pub struct Flow {
    /// Position in the outbox (and its folder name): flows are delivered in this order.
    pub order: u64,
    pub id: String,
    pub task: pb::Task,
    /// None until the collection's outputs are persisted: such a flow may run again.
    pub ready: Option<Ready>,
}

/// A collected flow: what it sends and how far it got.
pub struct Ready {
    pub manifest: Manifest,
    /// Each artifact's rows (in memory, or the `rows.<i>` file).
    pub rows: Vec<FileSource>,
    /// Each manifest file's bytes.
    pub files: Vec<FileSource>,
    pub progress: Progress,
    /// Answers in a row that moved the front file nowhere.
    pub stalls: u32,
}

/// What the collection produced, after the task's limits: the commit point of a flow's
/// outputs (`collected.json`). Rewritten only when a 413 re-cuts a batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub artifacts: Vec<ArtifactDoc>,
    pub files: Vec<FileDoc>,
    /// Artifact errors and notes for the status (a row too large to send).
    pub errors: Vec<String>,
    /// "timeout_s", "max_rows", "max_upload_bytes" or "".
    pub limit_hit: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDoc {
    pub name: String,
    /// Bytes of the rows file (spans point into it).
    pub bytes: u64,
    /// Batch `seq` = index. Invariant: in order, within `bytes`.
    pub batches: Vec<Span>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDoc {
    pub upload: u32,
    pub artifact: String,
    pub path: String,
    pub size: u64,
    /// Hex.
    pub sha256: String,
    pub truncated: bool,
    /// Where the bytes are on disk (a snapshot, or `upload.<n>`); None with `synthetic`
    /// or in a memory outbox.
    #[serde(default)]
    pub stored: Option<std::path::PathBuf>,
    #[serde(default)]
    pub synthetic: Option<u64>,
}

/// What the server has acknowledged (`progress.json`). Losing an update only makes the
/// agent resend what the server already has, which it answers as DUPLICATE.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Per artifact: batches acknowledged (always the first ones).
    pub acked: Vec<u64>,
    pub files: Vec<FileProgress>,
    /// Errors met while delivering (files given up).
    pub errors: Vec<String>,
    /// The flow failed as a whole (outbox full, outputs unreadable): its data is gone and
    /// only its status is sent, with this error.
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProgress {
    /// Bytes the server has (its last `next_seq`).
    pub acked: u64,
    /// Acknowledged complete, or given up.
    pub done: bool,
}

/// What a flow sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Batch { artifact: usize, seq: u64 },
    Chunk { file: usize, offset: u64, len: u64 },
    Status,
}

/// How the server answered one upload of a flow (503/408 never get here: they change
/// nothing, the caller waits and sends the same again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok {
        next_seq: u64,
    },
    Duplicate {
        next_seq: u64,
    },
    OutOfOrder {
        next_seq: u64,
    },
    /// 413.
    TooLarge,
    /// 400, 403, 409 (and any other refusal), with the server's message.
    Refused {
        code: u16,
        message: String,
        /// The ack said FLOW_CLOSED: the flow has ended on the server.
        flow_closed: bool,
    },
}

/// What an answer does to the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Progress moved: persist it (`sync` when a file just ended: its bytes go next).
    Progressed {
        sync: bool,
        file_ended: Option<usize>,
    },
    /// The batch layout changed: persist the manifest.
    Relaid,
    /// Chunks must get smaller (413 on a file).
    SmallerChunks,
    /// The status was taken: the flow is done.
    Done,
    /// Drop the whole flow (refused, or the server closed it).
    Drop(String),
}

impl Ready {
    pub fn new(manifest: Manifest, rows: Vec<FileSource>, files: Vec<FileSource>) -> Self {
        let progress = Progress {
            acked: vec![0; manifest.artifacts.len()],
            files: vec![FileProgress::default(); manifest.files.len()],
            ..Default::default()
        };
        Self {
            manifest,
            rows,
            files,
            progress,
            stalls: 0,
        }
    }

    /// A flow with nothing to send but its status, failed with `error`.
    pub fn failed(limit_hit: &str, error: String) -> Self {
        let mut ready = Self::new(
            Manifest {
                limit_hit: limit_hit.to_string(),
                ..Default::default()
            },
            Vec::new(),
            Vec::new(),
        );
        ready.progress.failed = Some(error);
        ready
    }

    /// Bytes this flow holds in the outbox: rows, and files not yet done that take room.
    pub fn held_bytes(&self) -> u64 {
        if self.progress.failed.is_some() {
            return 0;
        }
        let rows: u64 = self.manifest.artifacts.iter().map(|a| a.bytes).sum();
        let files: u64 = self
            .manifest
            .files
            .iter()
            .zip(&self.progress.files)
            .filter(|(doc, p)| !p.done && doc.synthetic.is_none())
            .map(|(doc, _)| doc.size)
            .sum();
        rows + files
    }

    pub fn next(&self, chunk_bytes: u64) -> Item {
        if self.progress.failed.is_some() {
            return Item::Status;
        }
        for (artifact, doc) in self.manifest.artifacts.iter().enumerate() {
            let acked = self.progress.acked[artifact];
            if acked < doc.batches.len() as u64 {
                return Item::Batch {
                    artifact,
                    seq: acked,
                };
            }
        }
        for (file, doc) in self.manifest.files.iter().enumerate() {
            let p = &self.progress.files[file];
            if !p.done {
                let offset = p.acked.min(doc.size);
                return Item::Chunk {
                    file,
                    offset,
                    len: (doc.size - offset).min(chunk_bytes),
                };
            }
        }
        Item::Status
    }

    /// The upload for `item`; Err says why its bytes could not be read.
    pub fn upload(&self, flow_id: &str, item: Item) -> Result<pb::Upload, String> {
        use pb::upload::Kind;
        let kind = match item {
            Item::Batch { artifact, seq } => {
                let doc = &self.manifest.artifacts[artifact];
                let span = doc.batches[seq as usize];
                let jsonl = self.rows[artifact]
                    .read_at(span.start, span.len() as usize)
                    .map_err(|e| format!("rows of {}: {e}", doc.name))?;
                if jsonl.len() as u64 != span.len() {
                    return Err(format!("rows of {} are shorter than recorded", doc.name));
                }
                Kind::Result(pb::ResultBatch {
                    flow_id: flow_id.to_string(),
                    artifact: doc.name.clone(),
                    seq,
                    jsonl,
                    row_count: span.rows,
                })
            }
            Item::Chunk { file, offset, len } => {
                let doc = &self.manifest.files[file];
                let data = self.files[file]
                    .read_at(offset, len as usize)
                    .map_err(|e| format!("reading it back: {e}"))?;
                if data.len() as u64 != len {
                    return Err("its copy is shorter than recorded".into());
                }
                Kind::File(pb::FileChunk {
                    flow_id: flow_id.to_string(),
                    path: doc.path.clone(),
                    offset,
                    eof: offset + len == doc.size,
                    data,
                    upload: doc.upload,
                    artifact: doc.artifact.clone(),
                    size: doc.size,
                    sha256: hex::decode(&doc.sha256).unwrap_or_default().into(),
                })
            }
            Item::Status => Kind::Status(self.status(flow_id)),
        };
        Ok(pb::Upload { kind: Some(kind) })
    }

    pub fn status(&self, flow_id: &str) -> pb::FlowStatus {
        let mut errors: Vec<String> = self
            .manifest
            .errors
            .iter()
            .chain(&self.progress.errors)
            .chain(&self.progress.failed)
            .take(MAX_STATUS_ERRORS_COUNT)
            .map(|e| e.chars().take(MAX_STATUS_ERROR_CHARS).collect())
            .collect();
        errors.dedup();
        let failed = !errors.is_empty() || self.manifest.limit_hit == TIMEOUT_S;
        // A failed flow's rows are not all there: claiming counts would add noise.
        let artifacts = match self.progress.failed {
            Some(_) => Vec::new(),
            None => self
                .manifest
                .artifacts
                .iter()
                .map(|a| pb::ArtifactRows {
                    name: a.name.clone(),
                    rows: a.batches.iter().map(|s| u64::from(s.rows)).sum(),
                    batches: a.batches.len() as u64,
                })
                .collect(),
        };
        pb::FlowStatus {
            flow_id: flow_id.to_string(),
            state: if failed {
                pb::flow_status::State::Error
            } else {
                pb::flow_status::State::Finished
            } as i32,
            errors,
            artifacts,
            limit_hit: self.manifest.limit_hit.clone(),
        }
    }

    /// Applies the server's answer to `item` (sent from this flow).
    pub fn answered(&mut self, item: Item, reply: Reply) -> Effect {
        match item {
            Item::Batch { artifact, seq } => self.batch_answered(artifact, seq, reply),
            Item::Chunk { file, offset, len } => self.chunk_answered(file, offset, len, reply),
            Item::Status => match reply {
                Reply::Ok { .. } | Reply::Duplicate { .. } | Reply::OutOfOrder { .. } => {
                    Effect::Done
                }
                Reply::TooLarge => {
                    Effect::Drop("the server refused its status as too large".into())
                }
                Reply::Refused { code, message, .. } => {
                    Effect::Drop(format!("the server refused its status ({code}): {message}"))
                }
            },
        }
    }

    fn batch_answered(&mut self, artifact: usize, seq: u64, reply: Reply) -> Effect {
        let doc = &mut self.manifest.artifacts[artifact];
        let count = doc.batches.len() as u64;
        let acked = &mut self.progress.acked[artifact];
        match reply {
            Reply::Ok { next_seq } | Reply::Duplicate { next_seq } => {
                // The server may be ahead (batches acknowledged before a lost progress
                // write): skip what it has.
                *acked = (*acked).max(seq + 1).max(next_seq.min(count));
                Effect::Progressed {
                    sync: false,
                    file_ended: None,
                }
            }
            Reply::OutOfOrder { next_seq } if next_seq > seq => {
                *acked = (*acked).max(next_seq.min(count));
                Effect::Progressed {
                    sync: false,
                    file_ended: None,
                }
            }
            Reply::OutOfOrder { next_seq } => {
                let error = format!(
                    "{}: the server expects batch {next_seq}, which it had acknowledged; \
                     the agent holds only from batch {seq}",
                    doc.name
                );
                self.fail(error);
                Effect::Progressed {
                    sync: false,
                    file_ended: None,
                }
            }
            Reply::TooLarge => {
                let span = doc.batches[seq as usize];
                let bytes = self.rows[artifact]
                    .read_at(span.start, span.len() as usize)
                    .unwrap_or_default();
                match layout::halve(span, &bytes) {
                    Some((a, b)) => {
                        doc.batches.splice(seq as usize..=seq as usize, [a, b]);
                    }
                    None => {
                        doc.batches.remove(seq as usize);
                        self.manifest.errors.push(format!(
                            "{}: a row of {} bytes is above the server's upload limit; \
                             not sent",
                            doc.name,
                            span.len()
                        ));
                    }
                }
                Effect::Relaid
            }
            Reply::Refused { code, message, .. } => Effect::Drop(format!(
                "the server refused a batch of {} ({code}): {message}",
                doc.name
            )),
        }
    }

    fn chunk_answered(&mut self, file: usize, offset: u64, len: u64, reply: Reply) -> Effect {
        let size = self.manifest.files[file].size;
        match reply {
            Reply::Ok { next_seq }
            | Reply::Duplicate { next_seq }
            | Reply::OutOfOrder { next_seq } => {
                let stalled = next_seq == offset && len > 0;
                let p = &mut self.progress.files[file];
                p.acked = next_seq.min(size);
                if next_seq >= size {
                    p.done = true;
                    self.stalls = 0;
                    return Effect::Progressed {
                        sync: true,
                        file_ended: Some(file),
                    };
                }
                self.stalls = if stalled { self.stalls + 1 } else { 0 };
                if self.stalls >= MAX_FILE_STALLED_ANSWERS_COUNT {
                    self.stalls = 0;
                    return self.give_up(
                        file,
                        format!("the server stored nothing of it {MAX_FILE_STALLED_ANSWERS_COUNT} times in a row"),
                    );
                }
                Effect::Progressed {
                    sync: false,
                    file_ended: None,
                }
            }
            Reply::TooLarge => Effect::SmallerChunks,
            Reply::Refused {
                code,
                message,
                flow_closed,
            } if flow_closed || (code == 409 && is_flow_closed(&message)) => {
                Effect::Drop(format!("the server closed the flow: {message}"))
            }
            Reply::Refused { code, message, .. } => {
                self.give_up(file, format!("refused by the server ({code}): {message}"))
            }
        }
    }

    /// Gives file `file` up with `why` in the status's errors.
    pub fn give_up(&mut self, file: usize, why: String) -> Effect {
        let doc = &self.manifest.files[file];
        self.progress
            .errors
            .push(format!("upload {} ({}): {why}", doc.upload, doc.path));
        self.progress.files[file].done = true;
        Effect::Progressed {
            sync: true,
            file_ended: Some(file),
        }
    }

    /// Fails the whole flow: nothing more but its status, with `error`.
    pub fn fail(&mut self, error: String) {
        if self.progress.failed.is_none() {
            self.progress.failed = Some(error);
        }
    }
}

/// Whether a 409's message says the flow itself is closed (finished, error, cancelled),
/// as opposed to one file being refused (write-once, quota): for servers that predate
/// the FLOW_CLOSED ack status.
fn is_flow_closed(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("closed")
        || ["already finished", "already error", "already cancelled"]
            .iter()
            .any(|s| m.contains(s))
}
