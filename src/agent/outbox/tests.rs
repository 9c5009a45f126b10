//! Goal: the outbox delivers every row and every file byte exactly once, in order, with
//! one status last, whatever happens between: a restart (kill -9) at any step, the
//! server's answers (413, OUT_OF_ORDER, 409 for a file or for the flow, a server that
//! stores nothing), its bound, a cancel, the task's limits. Method: real folders for the
//! disk outbox, and an in-process emulation of the server's acknowledgement rules for
//! result batches and file chunks (`Server` below, the rules of proto/agent.proto).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::*;
use crate::agent::collected::CollectedFile;

/// 4 KiB of rows or file data per upload.
const MAX_UPLOAD: u64 = 4096 + OUTBOX_UPLOAD_SLACK_BYTES;
const BOUND: u64 = 1 << 30;

#[derive(Default)]
struct StoredFile {
    bytes: Vec<u8>,
    size: u64,
    sha256: Vec<u8>,
    complete: bool,
}

/// The server's side of the seam, in memory.
#[derive(Default)]
struct Server {
    /// (flow, artifact) -> batches written, in seq order.
    batches: HashMap<(String, String), Vec<Bytes>>,
    files: HashMap<(String, u32), StoredFile>,
    /// Flows closed by a status (or by the test), with the status.
    closed: HashMap<String, Option<pb::FlowStatus>>,
    statuses_received: usize,
    /// Per-flow upload quota (0 = none).
    quota: u64,
    /// Largest encoded upload taken; above it 413.
    max_upload: Option<usize>,
    /// Acknowledges file chunks without storing them (an old server).
    stores_no_files: bool,
}

impl Server {
    fn handle(&mut self, upload: &pb::Upload) -> Reply {
        if let Some(max) = self.max_upload {
            if upload.encoded_len() > max {
                return Reply::TooLarge;
            }
        }
        match upload.kind.as_ref().unwrap() {
            pb::upload::Kind::Result(b) => {
                let set = self
                    .batches
                    .entry((b.flow_id.clone(), b.artifact.clone()))
                    .or_default();
                let next = set.len() as u64;
                if b.seq < next {
                    return Reply::Duplicate { next_seq: next };
                }
                if self.closed.contains_key(&b.flow_id) {
                    return closed(&b.flow_id);
                }
                if b.seq > next {
                    return Reply::OutOfOrder { next_seq: next };
                }
                assert_eq!(
                    b.row_count as usize,
                    b.jsonl.iter().filter(|&&c| c == b'\n').count()
                );
                set.push(b.jsonl.clone());
                Reply::Ok { next_seq: next + 1 }
            }
            pb::upload::Kind::Status(s) => {
                self.statuses_received += 1;
                let entry = self.closed.entry(s.flow_id.clone()).or_insert(None);
                entry.get_or_insert_with(|| s.clone());
                Reply::Ok { next_seq: 0 }
            }
            pb::upload::Kind::File(c) => self.chunk(c),
            _ => panic!("unexpected upload"),
        }
    }

    fn chunk(&mut self, c: &pb::FileChunk) -> Reply {
        if self.closed.contains_key(&c.flow_id) {
            return closed(&c.flow_id);
        }
        let refused = |message: &str| Reply::Refused {
            code: 409,
            message: message.to_string(),
            flow_closed: false,
        };
        let key = (c.flow_id.clone(), c.upload);
        if !self.files.contains_key(&key) && self.quota > 0 {
            let used: u64 = self
                .files
                .iter()
                .filter(|((f, _), _)| *f == c.flow_id)
                .map(|(_, s)| s.size)
                .sum();
            if used + c.size > self.quota {
                return refused("the flow's max_upload_bytes quota would be exceeded");
            }
        }
        let file = self.files.entry(key).or_insert_with(|| StoredFile {
            size: c.size,
            sha256: c.sha256.to_vec(),
            ..Default::default()
        });
        let stored = file.bytes.len() as u64;
        if file.complete {
            if c.size == file.size && c.sha256 == file.sha256 {
                return Reply::Duplicate { next_seq: stored };
            }
            return refused("file is complete (write-once)");
        }
        assert_eq!(c.eof, c.offset + c.data.len() as u64 == c.size);
        if c.offset > stored {
            return Reply::OutOfOrder { next_seq: stored };
        }
        let end = c.offset + c.data.len() as u64;
        if end <= stored && !c.data.is_empty() {
            return Reply::Duplicate { next_seq: stored };
        }
        if self.stores_no_files {
            return Reply::Ok { next_seq: c.offset };
        }
        file.bytes
            .extend_from_slice(&c.data[(stored - c.offset) as usize..]);
        if c.eof {
            assert_eq!(Sha256::digest(&file.bytes).to_vec(), file.sha256, "sha256");
            file.complete = true;
        }
        Reply::Ok {
            next_seq: file.bytes.len() as u64,
        }
    }

    fn rows(&self, flow: &str, artifact: &str) -> Vec<u8> {
        self.batches
            .get(&(flow.to_string(), artifact.to_string()))
            .map(|b| b.iter().flat_map(|x| x.to_vec()).collect())
            .unwrap_or_default()
    }

    fn status(&self, flow: &str) -> pb::FlowStatus {
        self.closed[flow].clone().expect("a status arrived")
    }
}

fn closed(flow: &str) -> Reply {
    Reply::Refused {
        code: 409,
        message: format!("flow {flow} is already finished; no more results are taken"),
        flow_closed: true,
    }
}

fn task(flow: &str, limits: Option<pb::FlowLimits>) -> pb::Task {
    pb::Task {
        flow_id: flow.to_string(),
        artifacts: vec![pb::ArtifactRequest {
            name: "A".into(),
            parameters: Default::default(),
        }],
        limits,
        ..Default::default()
    }
}

fn jsonl(tag: &str, rows: usize) -> Bytes {
    (0..rows)
        .flat_map(|i| {
            format!(
                "{{\"run\":\"{tag}\",\"i\":{i},\"pad\":\"{}\"}}\n",
                "x".repeat(40)
            )
            .into_bytes()
        })
        .collect::<Vec<u8>>()
        .into()
}

fn file_bytes(seed: u8, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Outputs of two artifacts, the first with `files` (sizes), snapshotted into
/// `files_dir` as a runner would (in memory without one).
fn outputs(
    tag: &str,
    rows: usize,
    files: &[usize],
    files_dir: Option<&Path>,
) -> Vec<ArtifactOutput> {
    let uploads = files
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let bytes = file_bytes(i as u8, size);
            let source = match files_dir {
                Some(dir) => {
                    let path = dir.join(format!("snap-{i}"));
                    std::fs::write(&path, &bytes).unwrap();
                    FileSource::Snapshot(path)
                }
                None => FileSource::Memory(bytes.clone().into()),
            };
            CollectedFile {
                path: format!("/var/log/f{i}"),
                size: size as u64,
                sha256: Sha256::digest(&bytes).into(),
                truncated: false,
                source,
            }
        })
        .collect();
    vec![
        ArtifactOutput {
            name: "A".into(),
            jsonl: jsonl(tag, rows),
            rows: rows as u64,
            uploads,
            ..Default::default()
        },
        ArtifactOutput {
            name: "B".into(),
            jsonl: jsonl(tag, rows / 2),
            rows: (rows / 2) as u64,
            ..Default::default()
        },
    ]
}

/// Sends until the outbox has nothing left; returns how many uploads it took.
fn deliver(outbox: &mut Outbox, server: &mut Server) -> usize {
    let mut steps = 0;
    while let Some((upload, sending)) = outbox.next_upload() {
        let reply = server.handle(&upload);
        outbox.answered(&sending, reply);
        steps += 1;
        assert!(steps < 10_000, "delivery does not end");
    }
    steps
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(dir, MAX_UPLOAD, BOUND).unwrap().0
}

fn flow_dirs(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

fn assert_delivered_once(server: &Server, flow: &str, files: &[usize]) {
    assert_eq!(server.rows(flow, "A"), jsonl("one", 200));
    assert_eq!(server.rows(flow, "B"), jsonl("one", 100));
    for (i, &size) in files.iter().enumerate() {
        let stored = &server.files[&(flow.to_string(), i as u32)];
        assert!(stored.complete, "file {i} complete");
        assert_eq!(stored.bytes, file_bytes(i as u8, size));
    }
    let status = server.status(flow);
    assert_eq!(
        status.state,
        pb::flow_status::State::Finished as i32,
        "{status:?}"
    );
    assert!(status.errors.is_empty(), "{status:?}");
    assert_eq!(status.artifacts[0].rows, 200);
    assert_eq!(status.artifacts[1].rows, 100);
}

#[test]
fn a_flow_is_delivered_once_whatever_step_a_restart_interrupts() {
    const FILES: [usize; 3] = [0, 10_000, 5_000];
    // How many uploads a clean delivery takes: every step is a crash point below.
    let clean = {
        let mut server = Server::default();
        let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
        assert!(outbox.add_task(task("F.1", None)));
        outbox.collected("F.1", outputs("one", 200, &FILES, None));
        let steps = deliver(&mut outbox, &mut server);
        assert_delivered_once(&server, "F.1", &FILES);
        assert!(steps > 8, "several batches and chunks: {steps}");
        steps
    };
    for crash_at in 0..clean {
        // The server took upload `crash_at` but the agent died before it saw the ack.
        let root = tempfile::tempdir().unwrap();
        let mut server = Server::default();
        let mut outbox = open(root.path());
        assert!(outbox.add_task(task("F.1", None)));
        let (_, files_dir) = outbox.next_to_collect(None).unwrap();
        let files_dir = files_dir.unwrap();
        outbox.collected("F.1", outputs("one", 200, &FILES, Some(&files_dir)));
        for _ in 0..crash_at {
            let (upload, sending) = outbox.next_upload().unwrap();
            let reply = server.handle(&upload);
            outbox.answered(&sending, reply);
        }
        let (upload, _) = outbox.next_upload().unwrap();
        server.handle(&upload);
        drop(outbox);
        let mut outbox = open(root.path());
        assert!(
            outbox.next_to_collect(None).is_none(),
            "never collected again"
        );
        assert!(!outbox.add_task(task("F.1", None)), "the task is held");
        deliver(&mut outbox, &mut server);
        assert_delivered_once(&server, "F.1", &FILES);
        // A status the agent did not see acknowledged is sent again (the server takes a
        // resent status as already recorded).
        let resent = usize::from(crash_at == clean - 1);
        assert_eq!(server.statuses_received, 1 + resent, "crash at {crash_at}");
        assert!(
            flow_dirs(root.path()).is_empty(),
            "folder removed (crash at {crash_at})"
        );
        drop(outbox);
        let mut outbox = open(root.path());
        assert!(
            !outbox.add_task(task("F.1", None)),
            "journalled as finished"
        );
        assert!(outbox.is_empty());
    }
}

#[test]
fn an_interrupted_collection_runs_again_and_a_persisted_one_does_not() {
    let root = tempfile::tempdir().unwrap();
    let mut outbox = open(root.path());
    assert!(outbox.add_task(task("F.1", None)));
    assert!(outbox.add_task(task("F.2", None)));
    let (_, dir1) = outbox.next_to_collect(None).unwrap();
    // F.1's collection left a snapshot behind when the agent died.
    std::fs::write(dir1.unwrap().join("half"), b"partial").unwrap();
    drop(outbox);
    let mut outbox = open(root.path());
    let (first, dir1) = outbox.next_to_collect(None).unwrap();
    assert_eq!(first.flow_id, "F.1", "arrival order kept");
    assert!(
        !dir1.as_ref().unwrap().join("half").exists(),
        "leftovers cleared"
    );
    assert!(
        !outbox.has_uploads(),
        "nothing is sent before outputs are persisted"
    );
    outbox.collected("F.1", outputs("one", 200, &[], None));
    assert_eq!(
        outbox.next_to_collect(Some("F.2")).map(|t| t.0.flow_id),
        None
    );
    drop(outbox);
    let mut outbox = open(root.path());
    let (next, _) = outbox.next_to_collect(None).unwrap();
    assert_eq!(next.flow_id, "F.2", "F.1 is not collected again");
    let mut server = Server::default();
    deliver(&mut outbox, &mut server);
    assert_eq!(server.rows("F.1", "A"), jsonl("one", 200));
}

#[test]
fn past_the_bound_the_oldest_flow_fails_with_a_clear_error() {
    for on_disk in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let bound = jsonl("one", 300).len() as u64 + 10;
        let mut outbox = match on_disk {
            true => Outbox::open(root.path(), MAX_UPLOAD, bound).unwrap().0,
            false => Outbox::memory(MAX_UPLOAD, bound),
        };
        for flow in ["F.1", "F.2"] {
            assert!(outbox.add_task(task(flow, None)));
            outbox.collected(flow, outputs("one", 200, &[], None));
        }
        assert!(outbox.total_bytes() <= bound);
        let mut server = Server::default();
        deliver(&mut outbox, &mut server);
        assert!(
            server.rows("F.1", "A").is_empty(),
            "no row of the failed flow sent"
        );
        let failed = server.status("F.1");
        assert_eq!(failed.state, pb::flow_status::State::Error as i32);
        assert!(
            failed.errors[0].starts_with(&format!("agent outbox is full ({bound} bytes): ")),
            "{failed:?}"
        );
        assert_eq!(server.rows("F.2", "A"), jsonl("one", 200));
        // A flow alone above the bound fails itself.
        assert!(outbox.add_task(task("F.3", None)));
        outbox.collected("F.3", outputs("one", 400, &[], None));
        deliver(&mut outbox, &mut server);
        assert!(server.status("F.3").errors[0].contains("do not fit"));
        assert!(server.rows("F.3", "A").is_empty());
    }
}

#[test]
fn the_task_limits_cut_rows_and_files_and_name_the_limit() {
    let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
    let limits = pb::FlowLimits {
        max_rows: 250,
        max_upload_bytes: 12_000,
        timeout_s: 0,
    };
    assert!(outbox.add_task(task("F.1", Some(limits))));
    outbox.collected("F.1", outputs("one", 200, &[10_000, 5_000, 2_000], None));
    let mut server = Server::default();
    deliver(&mut outbox, &mut server);
    assert_eq!(server.rows("F.1", "A"), jsonl("one", 200));
    assert_eq!(server.rows("F.1", "B"), jsonl("one", 50));
    let status = server.status("F.1");
    assert_eq!(status.limit_hit, "max_rows");
    assert_eq!(status.state, pb::flow_status::State::Finished as i32);
    assert!(server.files.contains_key(&("F.1".to_string(), 0)));
    assert!(
        !server.files.contains_key(&("F.1".to_string(), 1)),
        "beyond the quota"
    );
    assert!(
        server.files[&("F.1".to_string(), 2)].complete,
        "keeps its number"
    );
}

#[test]
fn a_timed_out_flow_reports_its_limit_and_a_cancelled_one_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut outbox = open(root.path());
    assert!(outbox.add_task(task("F.1", None)));
    assert!(outbox.add_task(task("F.2", None)));
    outbox.timed_out("F.1", "abandoned".into());
    // Outputs that arrive after the timeout are discarded: the flow was reported.
    outbox.collected("F.1", outputs("late", 10, &[], None));
    outbox.collected("F.2", outputs("one", 200, &[100], None));
    assert!(outbox.cancel("F.2"));
    assert!(!outbox.cancel("F.9"), "not held, journalled all the same");
    drop(outbox);
    let mut outbox = open(root.path());
    assert!(!outbox.add_task(task("F.2", None)));
    assert!(!outbox.add_task(task("F.9", None)));
    let mut server = Server::default();
    deliver(&mut outbox, &mut server);
    let status = server.status("F.1");
    assert_eq!(status.limit_hit, "timeout_s");
    assert_eq!(status.state, pb::flow_status::State::Error as i32);
    assert!(server.rows("F.1", "A").is_empty());
    assert!(
        !server.closed.contains_key("F.2"),
        "no status for a cancelled flow"
    );
    assert!(server.rows("F.2", "A").is_empty());
    assert!(flow_dirs(root.path()).is_empty());
}

#[test]
fn file_answers_are_followed_as_the_seam_says() {
    // 413 halves chunks; the quota's 409 gives one file up and the rest goes on.
    let mut server = Server {
        max_upload: Some(3_000),
        quota: 12_000,
        ..Default::default()
    };
    let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
    assert!(outbox.add_task(task("F.1", None)));
    let mut outs = outputs("one", 20, &[10_000, 5_000, 2_000], None);
    outs[0].jsonl = jsonl("one", 20);
    outbox.collected("F.1", outs);
    deliver(&mut outbox, &mut server);
    assert_eq!(
        server.rows("F.1", "A"),
        jsonl("one", 20),
        "413 split the batches"
    );
    assert!(server.files[&("F.1".to_string(), 0)].complete);
    assert!(!server.files.contains_key(&("F.1".to_string(), 1)));
    assert!(server.files[&("F.1".to_string(), 2)].complete);
    let status = server.status("F.1");
    assert_eq!(status.errors.len(), 1, "{status:?}");
    assert!(status.errors[0].starts_with("upload 1 (/var/log/f1): refused by the server (409)"));

    // The server lost bytes it had acknowledged (OUT_OF_ORDER): resend from next_seq.
    let mut server = Server::default();
    let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
    assert!(outbox.add_task(task("F.2", None)));
    outbox.collected("F.2", outputs("one", 2, &[10_000], None));
    let mut lost_once = false;
    while let Some((upload, sending)) = outbox.next_upload() {
        let reply = server.handle(&upload);
        if let (false, Some(pb::upload::Kind::File(c))) = (lost_once, &upload.kind) {
            if c.offset > 0 {
                lost_once = true;
                server
                    .files
                    .get_mut(&("F.2".to_string(), 0))
                    .unwrap()
                    .bytes
                    .truncate(100);
                outbox.answered(&sending, Reply::OutOfOrder { next_seq: 100 });
                continue;
            }
        }
        outbox.answered(&sending, reply);
    }
    assert!(lost_once);
    assert_eq!(
        server.files[&("F.2".to_string(), 0)].bytes,
        file_bytes(0, 10_000)
    );

    // The flow closed under the agent: the whole flow is dropped, no status sent.
    let mut server = Server::default();
    server.closed.insert("F.3".into(), None);
    let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
    assert!(outbox.add_task(task("F.3", None)));
    let mut outs = outputs("one", 0, &[10_000, 5_000], None);
    outs.truncate(1);
    outbox.collected("F.3", outs);
    assert_eq!(deliver(&mut outbox, &mut server), 1);
    assert_eq!(server.statuses_received, 0);
    assert!(outbox.is_empty() && !outbox.add_task(task("F.3", None)));

    // A server that acknowledges without storing gets the file given up, not a loop.
    let mut server = Server {
        stores_no_files: true,
        ..Default::default()
    };
    let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
    assert!(outbox.add_task(task("F.4", None)));
    outbox.collected("F.4", outputs("one", 2, &[10_000], None));
    deliver(&mut outbox, &mut server);
    assert!(server.status("F.4").errors[0].contains("stored nothing"));
}

#[test]
fn a_row_too_large_to_send_is_dropped_and_reported() {
    let mut server = Server {
        max_upload: Some(300),
        ..Default::default()
    };
    let mut outbox = Outbox::memory(MAX_UPLOAD, BOUND);
    assert!(outbox.add_task(task("F.1", None)));
    let mut outs = outputs("one", 4, &[], None);
    let big = format!("{{\"big\":\"{}\"}}\n", "y".repeat(500));
    let mut rows = outs[0].jsonl.to_vec();
    rows.extend_from_slice(big.as_bytes());
    outs[0].jsonl = rows.into();
    outs.truncate(1);
    outbox.collected("F.1", outs);
    deliver(&mut outbox, &mut server);
    assert_eq!(server.rows("F.1", "A"), jsonl("one", 4));
    let status = server.status("F.1");
    assert_eq!(status.artifacts[0].rows, 4);
    assert!(status.errors[0].contains("above the server's upload limit"));
}

#[test]
fn a_folder_that_cannot_be_used_is_an_error_to_fall_back_from() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let err = Outbox::open(&file, MAX_UPLOAD, BOUND).err().unwrap();
    assert!(err.to_string().starts_with("agent outbox "), "{err}");
}

#[test]
fn damaged_documents_at_start_lose_only_their_flow() {
    let root = tempfile::tempdir().unwrap();
    let mut outbox = open(root.path());
    for flow in ["F.1", "F.2", "F.3"] {
        assert!(outbox.add_task(task(flow, None)));
        outbox.collected(flow, outputs("one", 200, &[], None));
    }
    drop(outbox);
    let dirs = {
        let mut d = flow_dirs(root.path());
        d.sort();
        d
    };
    std::fs::write(dirs[0].join("task.pb"), b"\xff\xff garbage").unwrap();
    std::fs::write(dirs[1].join("rows.0"), b"short").unwrap();
    std::fs::write(dirs[2].join("progress.json"), b"{not json").unwrap();
    std::fs::write(root.path().join("junk.tmp"), b"x").unwrap();
    let (mut outbox, notes) = Outbox::open(root.path(), MAX_UPLOAD, BOUND).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("F.1"), "{notes:?}");
    let mut server = Server::default();
    deliver(&mut outbox, &mut server);
    assert!(server.status("F.2").errors[0].contains("lost rows of A"));
    assert_eq!(
        server.rows("F.3", "A"),
        jsonl("one", 200),
        "unknown progress: resent"
    );
    assert!(!root.path().join("junk.tmp").exists());
}

#[test]
fn a_snapshot_goes_once_its_file_is_acknowledged_and_the_folder_with_the_status() {
    let root = tempfile::tempdir().unwrap();
    let mut outbox = open(root.path());
    assert!(outbox.add_task(task("F.1", None)));
    let (_, files_dir) = outbox.next_to_collect(None).unwrap();
    let files_dir = files_dir.unwrap();
    outbox.collected("F.1", outputs("one", 10, &[6_000, 6_000], Some(&files_dir)));
    let held = outbox.total_bytes();
    let mut server = Server::default();
    let (first, second) = (files_dir.join("snap-0"), files_dir.join("snap-1"));
    while let Some((upload, sending)) = outbox.next_upload() {
        let reply = server.handle(&upload);
        outbox.answered(&sending, reply);
        let done = |n: u32| {
            server
                .files
                .get(&("F.1".to_string(), n))
                .is_some_and(|f| f.complete)
        };
        if done(0) && !done(1) {
            assert!(
                !first.exists() && second.exists(),
                "only the finished file's copy goes"
            );
            assert_eq!(outbox.total_bytes(), held - 6_000);
        }
    }
    assert!(server.files[&("F.1".to_string(), 1)].complete);
    assert!(flow_dirs(root.path()).is_empty());
}
