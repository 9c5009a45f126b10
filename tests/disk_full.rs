//! Goal: when the datastore's disk is full, an upload is refused with 503 and a long
//! Retry-After (so agents keep their data instead of starting a re-upload storm), the
//! result set stays whole, and once there is room the same batch is accepted. The API
//! answers a write on the full disk with 503 and the same Retry-After.
//! Method: the datastore on a 4 MiB tmpfs (skipped, counted, where mounting is not
//! allowed: `common::skip`), a real frontend, and the agent comms client uploading 512 KiB batches.

mod common;

use std::time::Duration;

use bytes::Bytes;
use packhunt::protocol::pb;

fn rows(n: usize, width: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(width)).into_bytes())
        .collect()
}

/// Writes `path` until the file system has no byte left (ENOSPC).
fn fill_up(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let block = vec![0u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[test]
fn full_disk_answers_503_with_retry_after_and_keeps_results_whole() -> anyhow::Result<()> {
    let mount_dir = tempfile::tempdir()?;
    let Some(_mount) = common::TmpfsMount::new(&mount_dir.path().join("ds"), "4m") else {
        common::skip(
            "disk_full::full_disk_answers_503_with_retry_after_and_keeps_results_whole",
            "root and mount rights, to mount a 4 MiB tmpfs",
        );
        return Ok(());
    };
    let datastore = mount_dir.path().join("ds");
    let location = datastore.display().to_string();
    let deployment = common::Deployment::start_with(|text| {
        *text = text.replace(
            "location = \"datastore\"",
            &format!("location = \"{location}\""),
        );
        // A 4 MiB mount: below the start-up check's default free space.
        common::set_keys(text, &[("min_free_bytes", "0")]);
    })?;
    let mut agent = common::RawAgent::connect(&deployment)?;
    let flow = agent.tasked(&deployment, &["Linux.Sys.Users"])?;
    let client_id = agent.client_id.clone();

    let batch = |seq: u64, jsonl: Vec<u8>| pb::Upload {
        kind: Some(pb::upload::Kind::Result(pb::ResultBatch {
            flow_id: flow.clone(),
            artifact: "Linux.Sys.Users".into(),
            seq,
            jsonl: Bytes::from(jsonl),
            row_count: 0,
        })),
    };
    // Something else on the disk that the operator can delete to make room.
    let filler = datastore.join("filler");
    std::fs::write(&filler, vec![0u8; 1536 * 1024])?;
    let chunk = rows(1000, 500); // ~512 KiB
    let mut seq = 0;
    let refusal = loop {
        let reply = agent.upload(&batch(seq, chunk.clone()))?;
        if reply.status != 200 {
            break reply;
        }
        seq += 1;
        assert!(seq < 32, "a 4 MiB disk must fill up");
    };
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(300)));
    let results = common::flow_results(&datastore, &client_id, &flow, "Linux.Sys.Users");
    let lines = common::count_lines(&results) as u64;
    assert_eq!(
        lines,
        seq * 1000,
        "only whole committed batches are on disk"
    );
    assert_eq!(
        std::fs::metadata(results.with_extension("index"))?.len(),
        lines * 8
    );

    // The API says the same to an operator scheduling work on the full disk: 503 with the
    // configured wait. The batch did not fit, a small document still would: the last
    // bytes go to a second filler first.
    let squeeze = datastore.join("squeeze");
    fill_up(&squeeze)?;
    let (status, headers, body) = deployment.api().post_with_headers(
        &format!("/api/v1/clients/{client_id}/collections"),
        &serde_json::json!({ "artifacts": ["Linux.Sys.Users"] }),
    )?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("300"),
        "{headers:?}"
    );
    assert_eq!(
        deployment.metric("packhunt_limit{name=\"disk_full_retry_after_s\"}")?,
        300
    );

    // Make room: the agent resends the very batch it kept, and it is appended once.
    std::fs::remove_file(&squeeze)?;
    std::fs::remove_file(&filler)?;
    let reply = agent.upload(&batch(seq, chunk.clone()))?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.ack.map(|a| a.status),
        Some(pb::upload_ack::Status::Ok as i32)
    );
    assert_eq!(common::count_lines(&results) as u64, (seq + 1) * 1000);
    let (_, metrics) = deployment.api().get_text("/metrics")?;
    assert!(metrics.lines().any(|l| l
        .starts_with("packhunt_upload_rejections_total{reason=\"overloaded\"}")
        && !l.ends_with(" 0")));
    Ok(())
}
