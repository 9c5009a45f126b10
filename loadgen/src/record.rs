//! `--record DIR`: what every simulated agent of this process was asked for, sent, and had
//! acknowledged, written as JSON lines to one file per process under DIR, so that
//! `loadgen verify` can check the datastore against it after the run (rows lost or
//! duplicated, uploads byte-identical, flows final, events lost or duplicated).
//!
//! What makes the check exact is in the bytes the agents send: with `--record`, every
//! synthetic result row starts with `"loadgen_row":<index within its (flow, artifact)>`
//! and every synthetic event row with `"loadgen_run":<process run id>,"loadgen_seq":<n>`
//! (n counts the agent's rows of that artifact). The record holds, per flow, each
//! artifact's row count and the SHA-256 of its rows as sent; per uploaded file its size
//! and SHA-256; per (agent, artifact, run) the event rows made, acknowledged and dropped.
//!
//! Lines (`kind`): `start` (one per process), `agent` (one per agent), `scheduled` (a collection the scenario
//! driver asked for), `task` (a task an agent took, with what it will send), `flow_done`
//! (every batch of the flow acknowledged), `events` (cumulative counters, written every
//! [`EVENTS_SNAPSHOT_INTERVAL`] and at exit: the last one counts), `end` (clean exit).
//! The file is flushed every [`FLUSH_INTERVAL`], so a process killed mid-run leaves a
//! record that is whole up to a moment before.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use packhunt::agent::events::DropReason;
use packhunt::agent::run::Observer;
use packhunt::config::url::ServerUrl;
use packhunt::protocol::pb;

/// The field every recorded result row starts with: its index in its (flow, artifact).
pub const ROW_ID_FIELD: &str = "loadgen_row";
/// The fields every recorded event row starts with: the process's run id and the row's
/// number among the agent's rows of that artifact in that run.
pub const EVENT_RUN_FIELD: &str = "loadgen_run";
pub const EVENT_SEQ_FIELD: &str = "loadgen_seq";

/// How often the record file is flushed: a killed process loses at most this much.
const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// How often the agents' event counters are written (one line per agent and artifact:
/// at 19,000 agents a line per second each would be most of the file).
const EVENTS_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);

/// One line of a record file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Start {
        run: u32,
        pid: u32,
        /// `agents` (runs agents), `driver` (schedules only) or `both`.
        role: String,
        first_agent: usize,
        clients: usize,
        started_ms: u64,
    },
    /// An agent of this process (written as it is created).
    Agent {
        client: String,
    },
    Scheduled {
        client: String,
        flow: String,
    },
    Task {
        client: String,
        flow: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        hunt: String,
        artifacts: Vec<ArtifactSent>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<FileSent>,
    },
    FlowDone {
        client: String,
        flow: String,
        rows: u64,
    },
    Events {
        client: String,
        artifact: String,
        run: u32,
        /// Rows made (numbered 0..made), acknowledged by a frontend, and given up by the
        /// agent (its bounded buffer was full, or the batch was refused).
        made: u64,
        acked: u64,
        dropped: u64,
    },
    End {
        run: u32,
        ended_ms: u64,
    },
}

/// One artifact's rows as the agent sends them for a flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactSent {
    pub name: String,
    pub rows: u64,
    /// SHA-256 (hex) of the rows in index order, each followed by `\n`.
    pub sha256: String,
}

/// One file the agent uploads for a flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSent {
    pub upload: u32,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// One process's record file.
pub struct Recorder {
    run: u32,
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
    agents: Mutex<Vec<Arc<AgentRecord>>>,
    /// The first write error is reported; later ones would only repeat it.
    failed: AtomicBool,
    finished: AtomicBool,
}

/// Invariant: the critical sections on the recorder's mutexes are writes into a buffer
/// and pushes, which do not panic.
const NOT_POISONED: &str = "no recorder critical section panics";

impl Recorder {
    /// Creates `DIR/<role>-<first agent>-<pid>.jsonl` and writes its `start` line; a
    /// thread flushes it and writes the event counters until [`Recorder::finish`].
    pub fn create(dir: &Path, role: &str, first_agent: usize, clients: usize) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the record folder {}", dir.display()))?;
        let pid = std::process::id();
        let path = dir.join(format!("{role}-{first_agent}-{pid}.jsonl"));
        let file = File::create(&path)
            .with_context(|| format!("creating the record file {}", path.display()))?;
        let run = rand::random::<u32>();
        let recorder = Arc::new(Self {
            run,
            path,
            out: Mutex::new(BufWriter::new(file)),
            agents: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        });
        recorder.write(&Line::Start {
            run,
            pid,
            role: role.to_string(),
            first_agent,
            clients,
            started_ms: packhunt::clock::now_ms(),
        });
        recorder.flush();
        let weak = Arc::downgrade(&recorder);
        std::thread::Builder::new()
            .name("record-flusher".into())
            .spawn(move || flusher(weak))
            .context("starting the record flusher")?;
        Ok(recorder)
    }

    /// This process's run id (carried by its event rows).
    pub fn run(&self) -> u32 {
        self.run
    }

    pub fn write(&self, line: &Line) {
        let mut text = serde_json::to_vec(line).expect("record lines serialise");
        text.push(b'\n');
        let written = self.out.lock().expect(NOT_POISONED).write_all(&text);
        self.report(written);
    }

    fn flush(&self) {
        let flushed = self.out.lock().expect(NOT_POISONED).flush();
        self.report(flushed);
    }

    fn report(&self, result: std::io::Result<()>) {
        if let Err(e) = result {
            if !self.failed.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "loadgen: writing the record {}: {e}; the record is incomplete",
                    self.path.display()
                );
            }
        }
    }

    /// A collection the scenario driver scheduled.
    pub fn scheduled(&self, client: &str, flow: &str) {
        self.write(&Line::Scheduled {
            client: client.to_string(),
            flow: flow.to_string(),
        });
    }

    /// The record of one agent (its event counters), kept for the snapshots.
    pub fn agent(&self, client_id: &str) -> Arc<AgentRecord> {
        let agent = Arc::new(AgentRecord {
            client_id: client_id.to_string(),
            events: Mutex::new(BTreeMap::new()),
        });
        self.agents.lock().expect(NOT_POISONED).push(agent.clone());
        self.write(&Line::Agent {
            client: client_id.to_string(),
        });
        agent
    }

    fn write_event_counters(&self) {
        let agents = self.agents.lock().expect(NOT_POISONED).clone();
        for agent in agents {
            for (artifact, tally) in agent.tallies() {
                self.write(&Line::Events {
                    client: agent.client_id.clone(),
                    artifact,
                    run: self.run,
                    made: tally.made,
                    acked: tally.acked,
                    dropped: tally.dropped,
                });
            }
        }
    }

    /// The last event counters and the `end` line, flushed: call once the agents stopped.
    pub fn finish(&self) -> Result<()> {
        if self.finished.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.write_event_counters();
        self.write(&Line::End {
            run: self.run,
            ended_ms: packhunt::clock::now_ms(),
        });
        self.flush();
        anyhow::ensure!(
            !self.failed.load(Ordering::Relaxed),
            "the record {} is incomplete (a write failed)",
            self.path.display()
        );
        Ok(())
    }
}

/// Flushes every `FLUSH_INTERVAL` and writes the event counters every
/// `EVENTS_SNAPSHOT_INTERVAL`, until the recorder is finished or gone.
fn flusher(recorder: std::sync::Weak<Recorder>) {
    let mut since_snapshot = Duration::ZERO;
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        let Some(recorder) = recorder.upgrade() else {
            return;
        };
        if recorder.finished.load(Ordering::Relaxed) {
            return;
        }
        since_snapshot += FLUSH_INTERVAL;
        if since_snapshot >= EVENTS_SNAPSHOT_INTERVAL {
            since_snapshot = Duration::ZERO;
            recorder.write_event_counters();
        }
        recorder.flush();
    }
}

/// One agent's event counters, per artifact.
pub struct AgentRecord {
    pub client_id: String,
    events: Mutex<BTreeMap<String, Tally>>,
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Tally {
    pub made: u64,
    pub acked: u64,
    pub dropped: u64,
}

impl AgentRecord {
    /// The number of the next event row of `artifact` (0, 1, 2.. per artifact).
    pub fn next_event(&self, artifact: &str) -> u64 {
        let mut events = self.events.lock().expect(NOT_POISONED);
        let tally = events.entry(artifact.to_string()).or_default();
        tally.made += 1;
        tally.made - 1
    }

    pub fn events_acked(&self, artifact: &str, rows: u64) {
        let mut events = self.events.lock().expect(NOT_POISONED);
        events.entry(artifact.to_string()).or_default().acked += rows;
    }

    pub fn events_dropped(&self, artifact: &str, rows: u64) {
        let mut events = self.events.lock().expect(NOT_POISONED);
        events.entry(artifact.to_string()).or_default().dropped += rows;
    }

    fn tallies(&self) -> Vec<(String, Tally)> {
        let events = self.events.lock().expect(NOT_POISONED);
        events.iter().map(|(a, t)| (a.clone(), *t)).collect()
    }
}

/// An agent's observer that also records: what each task will send (from the runner,
/// which answers it deterministically), each flow done, and the event counters; every
/// call is passed on to the fleet's statistics.
pub struct RecordingObserver {
    pub inner: Arc<crate::stats::AgentObserver>,
    pub recorder: Arc<Recorder>,
    pub agent: Arc<AgentRecord>,
    pub runner: Arc<crate::SyntheticRunner>,
}

impl Observer for RecordingObserver {
    fn connected(&self, url: &ServerUrl, connect_time: Duration, first: bool) {
        self.inner.connected(url, connect_time, first)
    }
    fn disconnected(&self, why: &str) {
        self.inner.disconnected(why)
    }
    fn task_received(&self, task: &pb::Task, received_us: u64) {
        let (artifacts, files) = self.runner.expected(task);
        self.recorder.write(&Line::Task {
            client: self.agent.client_id.clone(),
            flow: task.flow_id.clone(),
            hunt: task.hunt_id.clone(),
            artifacts,
            files,
        });
        self.inner.task_received(task, received_us)
    }
    fn uploaded(&self, bytes: u64, rows: u64) {
        self.inner.uploaded(bytes, rows)
    }
    fn file_chunk_resumed(&self) {
        self.inner.file_chunk_resumed()
    }
    fn flow_done(&self, flow_id: &str, rows: u64) {
        self.recorder.write(&Line::FlowDone {
            client: self.agent.client_id.clone(),
            flow: flow_id.to_string(),
            rows,
        });
        self.inner.flow_done(flow_id, rows)
    }
    fn error(&self, what: &str) {
        self.inner.error(what)
    }
    fn events_acked(&self, artifact: &str, rows: u64, bytes: u64) {
        self.agent.events_acked(artifact, rows);
        self.inner.events_acked(artifact, rows, bytes)
    }
    fn events_dropped(&self, artifact: &str, rows: u64, why: DropReason) {
        self.agent.events_dropped(artifact, rows);
        self.inner.events_dropped(artifact, rows, why)
    }
}

/// Appends `row` (one JSON object, no newline) with `fields` (`"k":v` pairs, comma
/// separated) inserted as its first members.
pub fn push_tagged(out: &mut Vec<u8>, fields: &str, row: &[u8]) {
    debug_assert!(row.first() == Some(&b'{') && row.last() == Some(&b'}'));
    out.push(b'{');
    out.extend_from_slice(fields.as_bytes());
    let rest = &row[1..];
    if rest.iter().any(|b| !b.is_ascii_whitespace() && *b != b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
}

/// The `loadgen_row` of a recorded result row, if it has one: read from the row's
/// first member when it is there (as written), else from the parsed row.
pub fn row_id(row: &[u8]) -> Option<u64> {
    let prefix = format!("{{\"{ROW_ID_FIELD}\":");
    if let Some(rest) = row.strip_prefix(prefix.as_bytes()) {
        if let Some(n) = leading_number(rest) {
            return Some(n);
        }
    }
    let value: serde_json::Value = serde_json::from_slice(row).ok()?;
    value.get(ROW_ID_FIELD)?.as_u64()
}

/// The (`loadgen_run`, `loadgen_seq`) of a recorded event row, if it has them.
pub fn event_id(row: &[u8]) -> Option<(u32, u64)> {
    let prefix = format!("{{\"{EVENT_RUN_FIELD}\":");
    if let Some(rest) = row.strip_prefix(prefix.as_bytes()) {
        let run = leading_number(rest)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let seq_prefix = format!(",\"{EVENT_SEQ_FIELD}\":");
        if let Some(rest) = rest[digits..].strip_prefix(seq_prefix.as_bytes()) {
            if let (Ok(run), Some(seq)) = (u32::try_from(run), leading_number(rest)) {
                return Some((run, seq));
            }
        }
    }
    let value: serde_json::Value = serde_json::from_slice(row).ok()?;
    let run = u32::try_from(value.get(EVENT_RUN_FIELD)?.as_u64()?).ok()?;
    Some((run, value.get(EVENT_SEQ_FIELD)?.as_u64()?))
}

/// The decimal number at the start of `bytes`, if it ends there at `,` or `}`.
fn leading_number(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !matches!(bytes.get(digits), Some(b',') | Some(b'}')) {
        return None;
    }
    std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    //! Goal: tagged rows stay JSON objects whose ids read back, by the fast path and by
    //! the parsed one; record lines round-trip. Method: tag rows, read them back.

    use super::*;

    #[test]
    fn tagged_rows_read_back() {
        let mut out = Vec::new();
        push_tagged(&mut out, &format!("\"{ROW_ID_FIELD}\":42"), br#"{"pid":7}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["pid"], 7);
        assert_eq!(row_id(&out), Some(42));
        let mut empty = Vec::new();
        push_tagged(&mut empty, &format!("\"{ROW_ID_FIELD}\":0"), b"{}");
        assert_eq!(row_id(&empty), Some(0));
        serde_json::from_slice::<serde_json::Value>(&empty).unwrap();
        // A row re-serialised with its members in another order still reads.
        assert_eq!(row_id(br#"{"a":1,"loadgen_row":9}"#), Some(9));
        assert_eq!(row_id(br#"{"a":1}"#), None);

        let mut event = Vec::new();
        let fields = format!("\"{EVENT_RUN_FIELD}\":7,\"{EVENT_SEQ_FIELD}\":123");
        push_tagged(&mut event, &fields, br#"{"x":"y"}"#);
        assert_eq!(event_id(&event), Some((7, 123)));
        assert_eq!(
            event_id(br#"{"x":1,"loadgen_seq":5,"loadgen_run":3}"#),
            Some((3, 5))
        );
        assert_eq!(event_id(br#"{"loadgen_run":3}"#), None);
    }

    #[test]
    fn lines_round_trip() {
        let line = Line::Task {
            client: "C.0123456789abcdef".into(),
            flow: "F.0123456789ABCDEF".into(),
            hunt: String::new(),
            artifacts: vec![ArtifactSent {
                name: "Linux.Sys.Pslist".into(),
                rows: 3,
                sha256: "ab".into(),
            }],
            files: vec![],
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with(r#"{"kind":"task""#), "{text}");
        assert!(!text.contains("hunt"), "{text}");
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line);
    }
}
