//! Goal: the agent's file artifacts collect real files exactly: the SHA-256 of each row
//! and upload is that of the snapshot's bytes (even for a file growing while read),
//! truncation and the byte budgets stop where they say, special files never hang a
//! collection, a cancel stops it, and upload numbers run over the whole flow.
//! Method: real files in a temp folder, `NativeRunner::collect` with a `CollectContext`
//! (snapshots in a temp outbox folder, or in memory); no server.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use packhunt::agent::collected::{ArtifactOutput, CollectContext, FileSource};
use packhunt::agent::runner::{NativeRunner, Runner};
use packhunt::artifacts::{COLLECTORS_FILE, FILES_GLOB, PSLIST};
use packhunt::limits::FlowLimits;
use packhunt::protocol::pb;

const MIB: usize = 1024 * 1024;

fn task(artifacts: &[(&str, &[(&str, &str)])]) -> pb::Task {
    pb::Task {
        flow_id: "F.TEST".into(),
        artifacts: artifacts
            .iter()
            .map(|(name, params)| pb::ArtifactRequest {
                name: name.to_string(),
                parameters: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

fn context(files_dir: Option<&Path>, limits: FlowLimits) -> CollectContext {
    CollectContext {
        limits,
        files_dir: files_dir.map(Path::to_path_buf),
        ..CollectContext::unlimited()
    }
}

fn rows(output: &ArtifactOutput) -> Vec<Value> {
    output
        .jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn whole(source: &FileSource, size: u64) -> Vec<u8> {
    source.read_at(0, size as usize + 1).unwrap().to_vec()
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that every upload's bytes hash to its sha256 and size, and that each has a
/// row with the same numbers; returns rows by file name.
fn check_uploads(outputs: &[ArtifactOutput]) -> HashMap<String, Value> {
    let mut by_name = HashMap::new();
    let mut number = 0u64;
    for output in outputs {
        let rows = rows(output);
        for file in &output.uploads {
            let bytes = whole(&file.source, file.size);
            assert_eq!(bytes.len() as u64, file.size, "{}", file.path);
            assert_eq!(
                Sha256::digest(&bytes).as_slice(),
                file.sha256,
                "{}",
                file.path
            );
            let row = rows
                .iter()
                .find(|r| r["upload"] == number)
                .unwrap_or_else(|| panic!("no row for upload {number}: {rows:?}"));
            assert_eq!(row["path"], file.path.as_str());
            assert_eq!(row["size"], file.size);
            assert_eq!(row["sha256"], hex::encode(file.sha256));
            assert_eq!(row["truncated"], file.truncated);
            let name = Path::new(&file.path).file_name().unwrap().to_string_lossy();
            by_name.insert(name.into_owned(), row.clone());
            number += 1;
        }
    }
    by_name
}

fn pattern_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn collects_real_files_into_snapshots_with_matching_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let root = dir.path();
    let big = pattern_bytes(17 * MIB + 123, 7); // more than three 5 MiB chunks
    fs::write(root.join("big.bin"), &big).unwrap();
    fs::write(root.join("small.txt"), b"hello").unwrap();
    fs::write(root.join("empty.log"), b"").unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/deep.txt"), b"deep").unwrap();
    let globs = format!("{0}/*\n{0}/**/*.txt", root.display());
    let task = task(&[(COLLECTORS_FILE, &[("globs", &globs)])]);
    let ctx = context(Some(outbox.path()), FlowLimits::default());
    let outputs = NativeRunner.collect(&task, &ctx);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].error, None);
    assert_eq!(outputs[0].limit_hit, None);
    let by_name = check_uploads(&outputs);
    // small.txt is matched by both globs but uploaded once; the directory is skipped.
    assert_eq!(outputs[0].uploads.len(), 4, "{by_name:?}");
    assert_eq!(outputs[0].rows, 4);
    let big_row = &by_name["big.bin"];
    assert_eq!(big_row["size"], big.len());
    assert_eq!(big_row["file_size"], big.len());
    assert_eq!(big_row["sha256"], sha_hex(&big));
    assert_eq!(big_row["truncated"], false);
    assert!(big_row["mtime"].as_i64().unwrap() > 1_000_000_000);
    assert_eq!(by_name["empty.log"]["size"], 0);
    assert_eq!(by_name["empty.log"]["sha256"], sha_hex(b""));
    for file in &outputs[0].uploads {
        let FileSource::Snapshot(path) = &file.source else {
            panic!("expected a snapshot for {}", file.path);
        };
        assert!(path.starts_with(outbox.path()), "{}", path.display());
    }
}

#[test]
fn a_file_growing_while_read_hashes_what_was_copied() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let path = dir.path().join("growing.log");
    fs::write(&path, pattern_bytes(8 * MIB, 1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
            let line = pattern_bytes(4096, 9);
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && written < 64 * MIB {
                file.write_all(&line).unwrap();
                written += line.len();
            }
        })
    };
    let task = task(&[(COLLECTORS_FILE, &[("globs", &path.to_string_lossy())])]);
    let outputs = NativeRunner.collect(&task, &context(Some(outbox.path()), FlowLimits::default()));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let by_name = check_uploads(&outputs);
    let row = &by_name["growing.log"];
    let file = &outputs[0].uploads[0];
    let snapshot = whole(&file.source, file.size);
    assert_eq!(row["sha256"], sha_hex(&snapshot));
    assert_eq!(row["size"], snapshot.len());
    assert!(snapshot.len() >= 8 * MIB);
    // The snapshot is a prefix of what the file holds now.
    let now = fs::read(&path).unwrap();
    assert_eq!(&now[..snapshot.len()], &snapshot[..]);
    assert!(row["file_size"].as_u64().unwrap() >= row["size"].as_u64().unwrap());
}

#[test]
fn truncation_and_the_byte_budgets_stop_where_they_say() {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("a", 1000), ("b", 3000), ("c", 500), ("d", 800)] {
        fs::write(dir.path().join(name), pattern_bytes(len, len as u8)).unwrap();
    }
    let globs = format!("{}/*", dir.path().display());
    // Truncation: every file cut at 700 bytes, flagged only when it was longer.
    let t = task(&[(
        COLLECTORS_FILE,
        &[("globs", &globs), ("max_file_bytes", "700")],
    )]);
    let outputs = NativeRunner.collect(&t, &context(None, FlowLimits::default()));
    let by_name = check_uploads(&outputs);
    assert_eq!(by_name["a"]["size"], 700);
    assert_eq!(by_name["a"]["file_size"], 1000);
    assert_eq!(by_name["a"]["truncated"], true);
    assert_eq!(
        by_name["a"]["sha256"],
        sha_hex(&pattern_bytes(1000, 232)[..700])
    );
    assert_eq!(by_name["c"]["size"], 500);
    assert_eq!(by_name["c"]["truncated"], false);

    // max_total_bytes: a (1000) fits, b (3000) would pass 2500: collection stops there
    // with an error row naming the budget, and no limit_hit (it is the artifact's own).
    let t = task(&[(
        COLLECTORS_FILE,
        &[("globs", &globs), ("max_total_bytes", "2500")],
    )]);
    let outputs = NativeRunner.collect(&t, &context(None, FlowLimits::default()));
    let rows = rows(&outputs[0]);
    assert_eq!(outputs[0].uploads.len(), 1, "{rows:?}");
    assert_eq!(outputs[0].limit_hit, None);
    let refused = rows.iter().find(|r| r.get("error").is_some()).unwrap();
    assert!(
        refused["path"].as_str().unwrap().ends_with("/b"),
        "{refused}"
    );
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("max_total_bytes"));

    // The flow's max_upload_bytes, counted over both artifacts: the first takes a (1000),
    // the second may then take only 600 more, so b does not fit and the flow's limit
    // is what stopped it; upload numbers continue across the artifacts.
    let first = format!("{}/a", dir.path().display());
    let t = task(&[
        (COLLECTORS_FILE, &[("globs", &first)]),
        (FILES_GLOB, &[("pattern", &globs), ("upload", "true")]),
        (PSLIST, &[]),
    ]);
    let limits = FlowLimits {
        max_upload_bytes: 1600,
        ..Default::default()
    };
    let outputs = NativeRunner.collect(&t, &context(None, limits));
    check_uploads(&outputs);
    assert_eq!(outputs[0].uploads.len(), 1);
    assert_eq!(outputs[0].limit_hit, None);
    // The second sees a (1000 > 600 left) first in sorted order and stops.
    assert_eq!(outputs[1].limit_hit, Some("max_upload_bytes"));
    assert!(outputs[1].uploads.is_empty());
    let total: u64 = outputs
        .iter()
        .flat_map(|o| &o.uploads)
        .map(|f| f.size)
        .sum();
    assert!(total <= 1600);
    // Later artifacts do not run once the flow hit a limit.
    assert_eq!(outputs[2].rows, 0);
    assert_eq!(outputs[2].limit_hit, Some("max_upload_bytes"));
}

#[test]
fn upload_numbers_and_max_rows_run_over_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.txt", "b.txt", "c.txt"] {
        fs::write(dir.path().join(name), name).unwrap();
    }
    fs::create_dir(dir.path().join("d")).unwrap();
    let globs = format!("{}/*", dir.path().display());
    let t = task(&[
        (COLLECTORS_FILE, &[("globs", &globs)]),
        (
            FILES_GLOB,
            &[("pattern", &globs), ("upload", "true"), ("hash", "true")],
        ),
    ]);
    let outputs = NativeRunner.collect(&t, &context(None, FlowLimits::default()));
    check_uploads(&outputs);
    let numbers = |o: &ArtifactOutput| -> Vec<Value> {
        rows(o).iter().map(|r| r["upload"].clone()).collect()
    };
    assert_eq!(numbers(&outputs[0]), [0, 1, 2]);
    // Glob lists the directory too, with no upload.
    assert_eq!(
        numbers(&outputs[1]),
        [Value::from(3), 4.into(), 5.into(), Value::Null]
    );
    let glob_rows = rows(&outputs[1]);
    assert_eq!(glob_rows[0]["is_dir"], false);
    assert!(glob_rows[0]["mode"].as_str().unwrap().starts_with("100"));
    assert_eq!(glob_rows[3]["is_dir"], true);

    // max_rows = 4 over the flow: 3 rows of the first artifact, 1 of the second.
    let limits = FlowLimits {
        max_rows: 4,
        ..Default::default()
    };
    let outputs = NativeRunner.collect(&t, &context(None, limits));
    check_uploads(&outputs);
    assert_eq!(outputs[0].rows + outputs[1].rows, 4);
    assert_eq!(outputs[1].uploads.len(), 1);
    assert_eq!(outputs[1].limit_hit, Some("max_rows"));
}

#[test]
fn special_files_are_skipped_and_unreadable_ones_are_error_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: c_path is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let socket = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    fs::write(dir.path().join("plain"), b"plain").unwrap();
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("dangling")).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.path().join("devnull")).unwrap();
    let globs = format!("{}/*", dir.path().display());
    let t = task(&[(COLLECTORS_FILE, &[("globs", &globs)])]);
    // A FIFO with no writer would block an open or read for ever: run on a thread and
    // bound the wait, so a regression fails instead of hanging the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(NativeRunner.collect(&t, &context(None, FlowLimits::default())));
    });
    let outputs = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("collection hung on a special file");
    let by_name = check_uploads(&outputs);
    assert_eq!(by_name.keys().collect::<Vec<_>>(), ["plain"]);
    let rows = rows(&outputs[0]);
    // The dangling link is an error row; the FIFO, socket and device are not rows.
    assert_eq!(rows.len(), 2, "{rows:?}");
    let dangling = rows.iter().find(|r| r.get("error").is_some()).unwrap();
    assert!(dangling["path"].as_str().unwrap().ends_with("dangling"));
}

#[test]
fn a_cancel_stops_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        fs::write(dir.path().join(format!("f{i:02}")), pattern_bytes(MIB, i)).unwrap();
    }
    let globs = format!("{}/*", dir.path().display());
    let t = task(&[(COLLECTORS_FILE, &[("globs", &globs)]), (PSLIST, &[])]);
    let ctx = context(None, FlowLimits::default());
    ctx.cancelled.store(true, Ordering::Relaxed);
    let outputs = NativeRunner.collect(&t, &ctx);
    assert!(outputs.iter().all(|o| o.rows == 0 && o.uploads.is_empty()));
    assert!(outputs.iter().all(|o| o.limit_hit.is_none()));

    // A deadline already past is a timeout: nothing runs and limit_hit says why.
    let ctx = CollectContext {
        deadline: Some(Instant::now()),
        ..context(None, FlowLimits::default())
    };
    let outputs = NativeRunner.collect(&t, &ctx);
    assert!(outputs.iter().all(|o| o.rows == 0 && o.uploads.is_empty()));
    assert!(outputs.iter().all(|o| o.limit_hit == Some("timeout_s")));

    // A cancel while running: set from another thread; whatever was collected before it
    // is intact, and the collection ends well before all 20 files once it lands.
    let ctx = context(None, FlowLimits::default());
    let cancel = ctx.cancelled.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        cancel.store(true, Ordering::Relaxed);
    });
    let outputs = NativeRunner.collect(&t, &ctx);
    canceller.join().unwrap();
    check_uploads(&outputs);
    // On a fast disk all 20 may be done before the flag lands; if not, nothing ran after.
    if outputs[0].uploads.len() < 20 {
        assert_eq!(outputs[1].rows, 0, "the artifact after the cancel ran");
    }
}
