//! Goal: the server side of file uploads does what docs/files/server.md promises: files
//! arrive in chunks, resume from what is stored after a reconnect or a frontend's death
//! (no byte twice, none lost), are verified by SHA-256, are write-once, stay within the
//! flow's quota and inside its uploads/ folder, and download byte-identical (whole or a
//! Range); a closed, late or row-capped flow refuses more; a full disk answers 503.
//! Method: real frontend processes on loopback; agents are tests/common's `RawAgent`
//! (the real comms client) sending FileChunk frames by hand; flows that may upload are
//! written through `packhunt::datastore` as the API writes them; what landed is read
//! back from disk and through the download API.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use common::uploads::{
    acked, announced_chunk, chunk, download, finish, list_uploads, pattern, send_file, sha256,
    upload_flow, GLOB,
};
use common::{Deployment, RawAgent};
use packhunt::limits::FlowLimits;
use packhunt::protocol::pb::{self, upload::Kind, upload_ack::Status};
use serde_json::Value;

const KIB: usize = 1024;

fn flow_dir(d: &Deployment, client: &str, flow: &str) -> PathBuf {
    d.datastore()
        .join("clients")
        .join(client)
        .join("collections")
        .join(flow)
}

fn collection(d: &Deployment, client: &str, flow: &str) -> Result<Value> {
    let (status, body) = d
        .api()
        .get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
    anyhow::ensure!(status == 200, "{status} {body}");
    Ok(body)
}

fn uploads_path(client: &str, flow: &str) -> String {
    format!("/api/v1/clients/{client}/collections/{flow}/uploads")
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// A deployment with small uploads (64 KiB), so files span many chunks.
fn start() -> Result<Deployment> {
    Deployment::start_with(|text| common::set_keys(text, &[("max_upload_bytes", "65536")]))
}

// Goal: a file sent in many chunks completes, is listed, and downloads byte-identical
// whole and by Range (206, 416, several ranges answered whole), with the headers a
// browser needs. Method: 1 MiB in 48 KiB chunks; compare SHA-256s.
#[test]
fn a_multi_chunk_file_completes_and_downloads_byte_identical() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let data = pattern(1024 * KIB + 123, 1);
    let sent = send_file(
        &mut agent,
        &flow,
        0,
        "/var/log/big file.log",
        &data,
        0,
        48 * KIB,
    )?;
    assert_eq!(sent, data.len().div_ceil(48 * KIB));
    assert_eq!(collection(&d, &client, &flow)?["state"], "in_progress");

    let api = d.api();
    let list = list_uploads(&api, &client, &flow)?;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["start_row"], 0);
    let item = &list["items"][0];
    assert_eq!(item["upload"], 0);
    assert_eq!(item["path"], "/var/log/big file.log");
    assert_eq!(item["stored"], "var/log/big_file.log");
    assert_eq!(item["size"], data.len() as u64);
    assert_eq!(item["artifact"], GLOB);
    assert_eq!(item["sha256"], hex::encode(sha256(&data)));
    assert!(item.get("error").is_none(), "{item}");
    // Nothing is left arriving, and the stored file is the data.
    let dir = flow_dir(&d, &client, &flow);
    assert_eq!(
        std::fs::read(dir.join("uploads/var/log/big_file.log"))?,
        data
    );
    assert_eq!(std::fs::read_dir(dir.join("uploading"))?.count(), 0);

    let file = format!("{}/0", uploads_path(&client, &flow));
    let (status, headers, body) = download(&api, &file, None)?;
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&data), "downloaded bytes differ");
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("content-length"), Some(data.len().to_string()));
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        header("content-disposition").as_deref(),
        Some("attachment; filename=\"big_file.log\"")
    );
    assert_eq!(
        header("etag"),
        Some(format!("\"{}\"", hex::encode(sha256(&data))))
    );
    assert_eq!(header("accept-ranges").as_deref(), Some("bytes"));

    let size = data.len();
    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, size - 1),
        ("bytes=-500", size - 500, size - 1),
        ("bytes=70000-9999999", 70000, size - 1),
    ] {
        let (status, headers, body) = download(&api, &file, Some(range))?;
        assert_eq!(status, 206, "{range}");
        assert_eq!(body, data[first..=last], "{range}");
        assert_eq!(
            headers["content-range"].to_str()?,
            format!("bytes {first}-{last}/{size}")
        );
        assert_eq!(
            headers["content-length"].to_str()?,
            (last - first + 1).to_string()
        );
    }
    let (status, headers, _) = download(&api, &file, Some(&format!("bytes={size}-")))?;
    assert_eq!(status, 416);
    assert_eq!(
        headers["content-range"].to_str()?,
        format!("bytes */{size}")
    );
    let (status, _, body) = download(&api, &file, Some("bytes=0-1,5-6"))?;
    assert_eq!(
        (status, body.len()),
        (200, size),
        "several ranges: the whole file"
    );

    let (status, _, _) = download(&api, &format!("{}/1", uploads_path(&client, &flow)), None)?;
    assert_eq!(status, 404, "an unknown upload number");
    let (status, _) = api.get(&uploads_path(&client, "F.00000000000000AB"))?;
    assert_eq!(status, 404, "an unknown flow");

    assert_eq!(finish(&mut agent, &flow, "")?, 200);
    let done = collection(&d, &client, &flow)?;
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["uploaded_files"], 1);
    assert_eq!(done["uploaded_bytes"], data.len() as u64);
    assert_eq!(d.metric("packhunt_files_completed_total")?, 1);
    assert_eq!(
        d.metric("packhunt_files_bytes_written_total")?,
        data.len() as u64
    );
    assert_eq!(d.metric("packhunt_files_downloads_total")?, 6);
    Ok(())
}

// Goal: after a reconnect the agent resumes from what is stored: a resent acked chunk
// is DUPLICATE with next_seq, a chunk beyond it OUT_OF_ORDER, an overlapping one has
// only its new bytes written; the file ends byte-identical with no byte written twice.
#[test]
fn uploads_resume_after_a_reconnect_without_writing_a_byte_twice() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let c = 32 * KIB;
    let data = pattern(8 * c, 2);
    for i in 0..3 {
        let (status, next) = acked(&agent.upload(&chunk(&flow, 0, "/a", &data, i * c, c))?)?;
        assert_eq!((status, next), (Status::Ok, ((i + 1) * c) as u64));
    }
    let identity = agent.identity.clone();
    drop(agent);
    let mut agent = RawAgent::connect_as(&d.client_config(), identity)?;
    let resend = acked(&agent.upload(&chunk(&flow, 0, "/a", &data, c, c))?)?;
    assert_eq!(resend, (Status::Duplicate, (3 * c) as u64));
    let ahead = acked(&agent.upload(&chunk(&flow, 0, "/a", &data, 5 * c, c))?)?;
    assert_eq!(ahead, (Status::OutOfOrder, (3 * c) as u64));
    let overlap = acked(&agent.upload(&chunk(&flow, 0, "/a", &data, 2 * c + c / 2, c + c / 2))?)?;
    assert_eq!(overlap, (Status::Ok, (4 * c) as u64));
    let arriving = flow_dir(&d, &client, &flow).join("uploading/0");
    assert_eq!(
        std::fs::read(&arriving)?,
        data[..4 * c],
        "only the new bytes landed"
    );
    send_file(&mut agent, &flow, 0, "/a", &data, 4 * c, c)?;
    let (_, _, body) = download(
        &d.api(),
        &format!("{}/0", uploads_path(&client, &flow)),
        None,
    )?;
    assert_eq!(body, data);
    assert_eq!(
        d.metric("packhunt_files_bytes_written_total")?,
        data.len() as u64
    );
    assert_eq!(d.metric("packhunt_files_resumed_chunks_total")?, 2);
    Ok(())
}

// Goal: a file whose bytes do not hash to what the agent announced is kept, listed with
// the error, and makes the flow end in error naming it.
#[test]
fn a_sha256_mismatch_is_recorded_in_the_index_and_the_status() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let data = pattern(100 * KIB, 3);
    let wrong = sha256(b"something else");
    let first = announced_chunk(&flow, 0, "/m", &data, 0, 60 * KIB, &wrong);
    assert_eq!(
        acked(&agent.upload(&first)?)?,
        (Status::Ok, (60 * KIB) as u64)
    );
    let last = announced_chunk(&flow, 0, "/m", &data, 60 * KIB, 40 * KIB, &wrong);
    assert_eq!(
        acked(&agent.upload(&last)?)?,
        (Status::Ok, data.len() as u64)
    );
    // The agent did not get the ack and resends: still the same file.
    assert_eq!(acked(&agent.upload(&last)?)?.0, Status::Duplicate);
    let list = list_uploads(&d.api(), &client, &flow)?;
    let item = &list["items"][0];
    assert!(
        item["error"].as_str().unwrap().contains("SHA-256 mismatch"),
        "{item}"
    );
    assert_eq!(item["sha256"], hex::encode(sha256(&data)));
    assert_eq!(finish(&mut agent, &flow, "")?, 200);
    let done = collection(&d, &client, &flow)?;
    assert_eq!(done["state"], "error", "{done}");
    assert!(
        done["errors"].to_string().contains("SHA-256 mismatch"),
        "{done}"
    );
    assert_eq!(d.metric("packhunt_files_mismatches_total")?, 1);
    Ok(())
}

// Goal: a complete file is write-once: other content under its number is 409 and
// changes nothing; the same final chunk resent is DUPLICATE with next_seq = size.
#[test]
fn complete_files_are_write_once() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let data = pattern(10 * KIB, 4);
    send_file(&mut agent, &flow, 0, "/w", &data, 0, 4 * KIB)?;
    let stored = flow_dir(&d, &client, &flow).join("uploads/w");
    let last = chunk(&flow, 0, "/w", &data, 8 * KIB, 2 * KIB);
    assert_eq!(
        acked(&agent.upload(&last)?)?,
        (Status::Duplicate, data.len() as u64)
    );
    let other = pattern(10 * KIB, 5);
    for upload in [
        chunk(&flow, 0, "/w", &other, 0, 4 * KIB),
        chunk(&flow, 0, "/w", &other, 8 * KIB, 2 * KIB),
        chunk(&flow, 0, "/w", &data[..5 * KIB], 0, 5 * KIB),
    ] {
        let reply = agent.upload(&upload)?;
        assert_eq!(reply.status, 409, "{reply:?}");
        // One file refused, not the flow: the agent gives up that file only.
        let ack = reply.ack.unwrap();
        assert_eq!(ack.status, Status::Rejected as i32);
        assert!(ack.message.contains("write-once"));
    }
    assert_eq!(std::fs::read(&stored)?, data);
    assert_eq!(list_uploads(&d.api(), &client, &flow)?["total"], 1);
    assert_eq!(
        d.metric("packhunt_files_refused_total{reason=\"write_once\"}")?,
        3
    );
    Ok(())
}

// Goal: the flow's max_upload_bytes is checked when a file starts, against the files
// complete and arriving: one that would exceed it is 409 and writes nothing.
#[test]
fn the_flow_quota_refuses_a_file_and_writes_nothing() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let limits = FlowLimits {
        max_upload_bytes: 10_000,
        ..FlowLimits::default()
    };
    let flow = upload_flow(&d, &client, limits)?;
    let dir = flow_dir(&d, &client, &flow);
    send_file(&mut agent, &flow, 0, "/q0", &pattern(6_000, 6), 0, 4 * KIB)?;
    // A file arriving counts with its announced size.
    let arriving = pattern(3_000, 7);
    acked(&agent.upload(&chunk(&flow, 1, "/q1", &arriving, 0, 1000))?)?;
    let before = files_under(&dir);
    let big = pattern(1_001, 8);
    let reply = agent.upload(&chunk(&flow, 2, "/q2", &big, 0, 1001))?;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.ack.unwrap().message.contains("max_upload_bytes"));
    assert_eq!(files_under(&dir), before, "a refused file wrote something");
    // What fits still goes in.
    send_file(&mut agent, &flow, 3, "/q3", &pattern(1_000, 9), 0, 4 * KIB)?;
    send_file(&mut agent, &flow, 1, "/q1", &arriving, 1000, 4 * KIB)?;
    assert_eq!(list_uploads(&d.api(), &client, &flow)?["total"], 3);
    assert_eq!(
        d.metric("packhunt_files_refused_total{reason=\"quota\"}")?,
        1
    );
    Ok(())
}

// Goal: chunks for a flow that has ended (finished by the agent, or cancelled by the
// master replacing status.json) are 409 and write nothing; the agent's later FlowStatus
// does not overwrite the cancel.
#[test]
fn chunks_for_an_ended_flow_are_refused() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let finished = upload_flow(&d, &client, FlowLimits::default())?;
    send_file(
        &mut agent,
        &finished,
        0,
        "/f",
        &pattern(1000, 10),
        0,
        4 * KIB,
    )?;
    assert_eq!(finish(&mut agent, &finished, "")?, 200);
    let reply = agent.upload(&chunk(&finished, 1, "/g", &pattern(10, 11), 0, 10))?;
    assert_eq!(reply.status, 409, "{reply:?}");
    // The flow has ended: the ack says so in a way the agent need not parse from text.
    let ack = reply.ack.unwrap();
    assert_eq!(ack.status, Status::FlowClosed as i32);
    assert!(ack.message.contains("finished"));
    assert!(!flow_dir(&d, &client, &finished)
        .join("uploading/1")
        .exists());

    // A cancel as the master writes it, noticed by the frontend serving the agent even
    // though this connection has the flow open.
    let cancelled = upload_flow(&d, &client, FlowLimits::default())?;
    let data = pattern(10 * KIB, 12);
    acked(&agent.upload(&chunk(&cancelled, 0, "/c", &data, 0, 4 * KIB))?)?;
    let ds = packhunt::datastore::Datastore::open(d.datastore(), true)?;
    let cdir = ds.client(&packhunt::ids::ClientId::parse(&client)?);
    let fid = packhunt::ids::FlowId::parse(&cancelled)?;
    let mut status = packhunt::datastore::read_status(&cdir, &fid)?;
    status.state = packhunt::datastore::FlowState::Cancelled;
    status.ended_by = Some(packhunt::datastore::EndedBy::Cancel);
    packhunt::datastore::write_status(&cdir, &status)?;
    let reply = agent.upload(&chunk(&cancelled, 0, "/c", &data, 4 * KIB, 4 * KIB))?;
    assert_eq!(reply.status, 409, "{reply:?}");
    let ack = reply.ack.unwrap();
    assert_eq!(ack.status, Status::FlowClosed as i32);
    assert!(ack.message.contains("cancelled"));
    let arriving = flow_dir(&d, &client, &cancelled).join("uploading/0");
    assert_eq!(std::fs::metadata(&arriving)?.len(), 4 * KIB as u64);
    assert_eq!(finish(&mut agent, &cancelled, "")?, 200);
    let after = collection(&d, &client, &cancelled)?;
    assert_eq!(after["state"], "cancelled", "{after}");
    assert_eq!(after["ended_by"], "cancel");
    assert_eq!(
        d.metric("packhunt_files_refused_total{reason=\"flow_closed\"}")?,
        2
    );
    Ok(())
}

// Goal: a chunk whose artifact may not upload (Glob without `upload`, an artifact not
// requested) or whose fields contradict each other is 400 and writes nothing.
#[test]
fn chunks_that_may_not_upload_or_contradict_themselves_get_400() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    // Through the API: Glob without `upload`.
    let (status, body) = d.api().post(
        &format!("/api/v1/clients/{client}/collections"),
        &serde_json::json!({ "artifacts": [GLOB] }),
    )?;
    assert_eq!(status, 200, "{body}");
    let plain = body["flow_id"].as_str().context("flow_id")?.to_string();
    let data = pattern(100, 13);
    let reply = agent.upload(&chunk(&plain, 0, "/x", &data, 0, 100))?;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.ack.unwrap().message.contains("does not upload files"));

    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let with = |f: &dyn Fn(&mut pb::FileChunk)| {
        let mut upload = chunk(&flow, 0, "/x", &data, 0, 100);
        if let Some(Kind::File(c)) = upload.kind.as_mut() {
            f(c);
        }
        upload
    };
    let cases: Vec<(pb::Upload, &str)> = vec![
        (
            with(&|c| c.artifact = "Generic.Collectors.File".into()),
            "does not upload",
        ),
        (
            with(&|c| c.sha256 = Bytes::from_static(b"short")),
            "sha256 is 5 bytes",
        ),
        (with(&|c| c.size = 50), "beyond the file's size"),
        (with(&|c| c.eof = false), "eof"),
        (with(&|c| c.size = 1 << 30), "eof"),
        (with(&|c| c.size = u64::MAX), "above the largest"),
        (with(&|c| c.path = "../..".into()), "bad upload path"),
    ];
    for (upload, words) in cases {
        let reply = agent.upload(&upload)?;
        assert_eq!(reply.status, 400, "{words}: {reply:?}");
        let message = reply.ack.unwrap().message;
        assert!(message.contains(words), "{words}: {message}");
    }
    for f in [&plain, &flow] {
        let dir = flow_dir(&d, &client, f);
        assert!(!dir.join("uploading").exists() && !dir.join("uploads").exists());
    }
    Ok(())
}

// Goal: agent paths that try to leave the flow (`..`, absolute, Windows drive and
// device paths) are stored strictly inside its uploads/, and names two paths share get
// the upload number instead of overwriting.
#[test]
fn upload_paths_stay_inside_the_flows_uploads_folder() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let uploads = flow_dir(&d, &client, &flow).join("uploads");
    let before = files_under(d.path());
    let cases = [
        ("../../x", "x"),
        ("/../../../../etc/passwd", "etc/passwd"),
        (
            r"C:\Windows\..\..\System32\cmd.exe",
            "Windows/System32/cmd.exe",
        ),
        (r"\\?\C:\secret", "secret"),
        (r"..\..\..\x", "x~4"),
        ("/etc/passwd/inner", "~5/etc/passwd/inner"),
        ("/etc", "etc~6"),
    ];
    for (n, (path, _)) in cases.iter().enumerate() {
        let data = path.as_bytes();
        send_file(&mut agent, &flow, n as u32, path, data, 0, 4 * KIB)?;
    }
    let list = list_uploads(&d.api(), &client, &flow)?;
    for (n, (path, stored)) in cases.iter().enumerate() {
        let item = &list["items"][n];
        assert_eq!(
            (item["upload"].as_u64(), item["stored"].as_str()),
            (Some(n as u64), Some(*stored))
        );
        assert_eq!(std::fs::read(uploads.join(stored))?, path.as_bytes());
    }
    let created: Vec<PathBuf> = files_under(d.path()).difference(&before).cloned().collect();
    let flow_root = flow_dir(&d, &client, &flow);
    for path in &created {
        assert!(
            path.starts_with(&flow_root),
            "{} outside the flow",
            path.display()
        );
        let relative = path.strip_prefix(&flow_root)?;
        assert!(
            relative.starts_with("uploads")
                || ["uploads.jsonl", "status.json"].contains(&relative.to_str().unwrap()),
            "unexpected {}",
            path.display()
        );
    }
    Ok(())
}

// Goal: a result batch that would take the flow above max_rows is 409 and writes
// nothing; what fits is taken; the agent's limit_hit ends the flow `finished` with
// `ended_by: max_rows`.
#[test]
fn max_rows_refuses_the_batch_that_would_pass_it() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let (status, body) = d.api().post(
        &format!("/api/v1/clients/{client}/collections"),
        &serde_json::json!({ "artifacts": ["Linux.Sys.Users"], "max_rows": 5 }),
    )?;
    assert_eq!(status, 200, "{body}");
    let flow = body["flow_id"].as_str().context("flow_id")?.to_string();
    let batch = |seq: u64, rows: usize| pb::Upload {
        kind: Some(Kind::Result(pb::ResultBatch {
            flow_id: flow.clone(),
            artifact: "Linux.Sys.Users".into(),
            seq,
            jsonl: Bytes::from("{\"u\":1}\n".repeat(rows)),
            row_count: rows as u32,
        })),
    };
    assert_eq!(acked(&agent.upload(&batch(0, 3))?)?, (Status::Ok, 1));
    let reply = agent.upload(&batch(1, 3))?;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.ack.unwrap().message.contains("max_rows"));
    let results = common::flow_results(&d.datastore(), &client, &flow, "Linux.Sys.Users");
    assert_eq!(common::count_lines(&results), 3);
    assert_eq!(acked(&agent.upload(&batch(1, 2))?)?, (Status::Ok, 2));
    assert_eq!(finish(&mut agent, &flow, "max_rows")?, 200);
    let done = collection(&d, &client, &flow)?;
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["ended_by"], "max_rows");
    assert_eq!(done["total_rows"], 5);
    assert_eq!(done["errors"], serde_json::json!([]));
    assert_eq!(
        d.metric("packhunt_files_refused_total{reason=\"max_rows\"}")?,
        1
    );
    Ok(())
}

// Goal: uploads later than timeout_s + 10 minutes after the flow started are refused
// and end the flow as error with `ended_by: timeout_s`. Method: a flow whose status
// says it started two hours ago with a one-minute timeout.
#[test]
fn uploads_after_the_timeout_and_its_grace_are_refused() -> Result<()> {
    let d = start()?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let limits = FlowLimits {
        timeout_s: 60,
        ..FlowLimits::default()
    };
    let flow = upload_flow(&d, &client, limits)?;
    let ds = packhunt::datastore::Datastore::open(d.datastore(), true)?;
    let cdir = ds.client(&packhunt::ids::ClientId::parse(&client)?);
    let fid = packhunt::ids::FlowId::parse(&flow)?;
    let mut status = packhunt::datastore::read_status(&cdir, &fid)?;
    status.state = packhunt::datastore::FlowState::InProgress;
    status.start_time_ms = Some(packhunt::clock::now_ms() - 2 * 3600 * 1000);
    packhunt::datastore::write_status(&cdir, &status)?;
    let reply = agent.upload(&chunk(&flow, 0, "/late", &pattern(10, 14), 0, 10))?;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.ack.unwrap().message.contains("timeout_s"));
    let done = collection(&d, &client, &flow)?;
    assert_eq!(done["state"], "error", "{done}");
    assert_eq!(done["ended_by"], "timeout_s");
    assert!(!flow_dir(&d, &client, &flow).join("uploading").exists());
    assert_eq!(
        d.metric("packhunt_files_refused_total{reason=\"timeout\"}")?,
        1
    );
    Ok(())
}

// Goal: a full disk answers a chunk 503 with the long Retry-After, stores nothing of it,
// and once there is room the agent resumes from what is stored.
// Method: the datastore on a 4 MiB tmpfs (skipped, counted, where mounting is not allowed).
#[test]
fn a_full_disk_answers_503_with_retry_after_and_the_file_resumes() -> Result<()> {
    let mount_dir = tempfile::tempdir()?;
    let Some(_mount) = common::TmpfsMount::new(&mount_dir.path().join("ds"), "4m") else {
        common::skip(
            "uploads::a_full_disk_answers_503_with_retry_after_and_the_file_resumes",
            "root and mount rights, to mount a 4 MiB tmpfs",
        );
        return Ok(());
    };
    let datastore = mount_dir.path().join("ds");
    let location = datastore.display().to_string();
    let d = Deployment::start_with(|text| {
        common::set_keys(text, &[("max_upload_bytes", "600000")]);
        *text = text.replace(
            "location = \"datastore\"",
            &format!("location = \"{location}\""),
        );
        // A 4 MiB mount: below the start-up check's default free space.
        common::set_keys(text, &[("min_free_bytes", "0")]);
    })?;
    let mut agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    let flow = common::uploads::upload_flow_at(&datastore, &client, FlowLimits::default())?;
    let filler = datastore.join("filler");
    std::fs::write(&filler, vec![0u8; 1536 * 1024])?;
    let c = 512 * KIB;
    let data = pattern(8 * c, 15);
    let mut offset = 0;
    let refusal = loop {
        let reply = agent.upload(&chunk(&flow, 0, "/big", &data, offset, c))?;
        if reply.status != 200 {
            break reply;
        }
        offset = reply.ack.as_ref().unwrap().next_seq as usize;
        assert!(offset < data.len(), "a 4 MiB disk must fill up");
    };
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(300)));
    let arriving = datastore
        .join("clients")
        .join(&client)
        .join("collections")
        .join(&flow)
        .join("uploading/0");
    assert_eq!(
        std::fs::metadata(&arriving)?.len(),
        offset as u64,
        "only acked bytes stored"
    );
    std::fs::remove_file(&filler)?;
    let reply = agent.upload(&chunk(&flow, 0, "/big", &data, offset, c))?;
    assert_eq!(acked(&reply)?, (Status::Ok, (offset + c) as u64));
    Ok(())
}

// Goal: a minion killed (kill -9) in the middle of a file loses nothing: the agent
// resumes on the master from what the minion stored, and the file ends byte-identical.
// Method: a master and a minion on one datastore; the agent streams chunks to the
// minion while another thread kills it once half the file is acknowledged; the agent
// then reconnects to the master with the same identity and resumes.
#[test]
fn a_minion_killed_mid_file_and_the_upload_resumes_on_the_master() -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (d, mut minions) = common::cluster(1)?;
    let minion = minions.remove(0);
    let on_minion = d.client_config_for("minion.client.toml", &[minion.agent_port], Some(65536))?;
    let on_master = d.client_config_for("master.client.toml", &[d.agent_port], Some(65536))?;
    let mut agent = RawAgent::connect_with(&on_minion)?;
    let client = agent.client_id.clone();
    let flow = upload_flow(&d, &client, FlowLimits::default())?;
    let c = 48 * KIB;
    let data = pattern(8 * 1024 * KIB, 16);
    let acked_bytes = Arc::new(AtomicU64::new(0));
    let killer = {
        let acked_bytes = acked_bytes.clone();
        let half = data.len() as u64 / 2;
        let mut minion = minion;
        std::thread::spawn(move || {
            while acked_bytes.load(Ordering::Relaxed) < half {
                std::thread::sleep(Duration::from_millis(1));
            }
            minion.kill()
        })
    };
    let mut offset = 0usize;
    loop {
        match agent.upload(&chunk(&flow, 0, "/dump.bin", &data, offset, c)) {
            Ok(reply) if reply.status == 200 => {
                offset = reply.ack.unwrap().next_seq as usize;
                acked_bytes.store(offset as u64, Ordering::Relaxed);
                assert!(offset < data.len(), "the minion must die before the end");
            }
            _ => break,
        }
    }
    killer.join().expect("the killer thread")?;
    let identity = agent.identity.clone();
    drop(agent);
    let mut agent = RawAgent::connect_as(&on_master, identity)?;
    let first = acked(&agent.upload(&chunk(&flow, 0, "/dump.bin", &data, offset, c))?)?;
    assert!(
        first.1 as usize >= offset,
        "resumed at {} below the acked {offset}",
        first.1
    );
    send_file(
        &mut agent,
        &flow,
        0,
        "/dump.bin",
        &data,
        first.1 as usize,
        c,
    )?;
    let (_, _, body) = download(
        &d.api(),
        &format!("{}/0", uploads_path(&client, &flow)),
        None,
    )?;
    assert_eq!(body.len(), data.len(), "bytes lost or stored twice");
    assert_eq!(sha256(&body), sha256(&data));
    assert_eq!(list_uploads(&d.api(), &client, &flow)?["total"], 1);
    Ok(())
}
