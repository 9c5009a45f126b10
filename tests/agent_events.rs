//! Goal: the real agent runs the event queries its client event table lists, keeps their
//! batches on disk while no frontend is reachable, also across its own restart (after
//! which it runs the table it kept, still offline), and hands
//! every batch over once a frontend is back, each answered once (a batch the server
//! refuses is dropped, not sent again and again) and stored once in the client's
//! monitoring rows. Method: a real master and a real
//! `packhunt client` tailing a log the test writes; the agent's event buffer folder is
//! read directly (8-byte check, then the prost-encoded `EventBatch`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Result};
use common::Deployment;
use packhunt::protocol::pb;
use prost::Message;
use serde_json::json;

const TABLE: &str = "/api/v1/events/client_table";
const LOG_TAIL: &str = "Linux.Events.LogTail";

/// (batch files, LogTail rows in them) in the agent's event buffer.
fn buffered(dir: &Path) -> Result<(usize, u64)> {
    let (mut files, mut rows) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((0, 0));
    };
    for entry in entries {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".evb") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue; // delivered and removed since the listing
        };
        files += 1;
        let batch = pb::EventBatch::decode(&bytes[8..])?;
        if batch.artifact == LOG_TAIL {
            rows += u64::from(batch.row_count);
        }
    }
    Ok((files, rows))
}

fn batch_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".evb") {
            names.push(name);
        }
    }
    Ok(names)
}

fn append(path: &Path, lines: std::ops::Range<u32>) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    for i in lines {
        writeln!(
            f,
            "Dec  5 01:00:00 host sshd[{i}]: Accepted publickey for alice"
        )?;
    }
    Ok(())
}

#[test]
fn an_offline_agent_keeps_its_events_across_a_restart_and_hands_them_over() -> Result<()> {
    let mut deployment = Deployment::start_with(|_| {})?;
    let log: PathBuf = deployment.path().join("auth.log");
    std::fs::write(&log, "before the agent\n")?;
    let table = json!({
        "all": [{"name": LOG_TAIL, "parameters": {"path": log.to_string_lossy()}}],
        "by_label": {}
    });
    let (status, _) = deployment.api().put(TABLE, &table)?;
    ensure!(status == 200, "PUT {TABLE}: {status}");
    let events_dir = deployment.path().join("client.writeback.events");
    let agent = common::start_agent(&deployment)?;
    deployment.wait_connected(1, Duration::from_secs(30))?;
    // The table arrives after Hello and the query starts at the end of the log, so lines
    // are written until one has gone to the server and been answered (acknowledged, or
    // refused by a server that takes no events): either leaves the buffer's state file.
    common::wait_until(
        "the agent's LogTail query delivering a line",
        Duration::from_secs(30),
        || {
            append(&log, 0..1)?;
            std::thread::sleep(Duration::from_millis(300));
            Ok(events_dir.join("state.json").exists())
        },
        |answered| *answered,
    )?;

    let exit = deployment.stop_frontend()?;
    ensure!(exit.success(), "master exited with {exit}");
    let lines = 40;
    append(&log, 1000..1000 + lines)?;
    common::wait_until(
        "every new line in a buffered batch",
        Duration::from_secs(30),
        || buffered(&events_dir),
        |(_, rows)| *rows >= u64::from(lines),
    )?;
    // Stopped and started again while offline: the batches are still there.
    drop(agent);
    let (files, rows) = buffered(&events_dir)?;
    assert!(
        files >= 1 && rows >= u64::from(lines),
        "{files} files, {rows} rows"
    );
    let before_restart = batch_names(&events_dir)?;
    let _agent = common::start_agent(&deployment)?;
    // The restarted agent runs the table it kept, before reaching any frontend.
    let more = 10;
    common::wait_until(
        "lines written after the restart buffered beside the earlier ones",
        Duration::from_secs(30),
        || {
            append(&log, 2000..2000 + more)?;
            std::thread::sleep(Duration::from_millis(500));
            buffered(&events_dir)
        },
        |(_, now)| *now >= rows + u64::from(more),
    )?;
    let missing: Vec<&String> = before_restart
        .iter()
        .filter(|name| !events_dir.join(name).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "batches lost across the restart: {missing:?}"
    );

    deployment.start_frontend()?;
    deployment.wait_connected(1, Duration::from_secs(60))?;
    common::wait_until(
        "every buffered batch answered",
        Duration::from_secs(60),
        || buffered(&events_dir),
        |(files, _)| *files == 0,
    )?;
    // Acknowledged means stored: every line written while the frontend was down, and
    // after the agent's restart, is in the client's monitoring rows as often as the log
    // holds it (the lines after the restart were appended until buffered, maybe more
    // than once; the last copies may still be in a batch the agent has not sealed), and
    // never more often.
    let (_, clients) = deployment.api().get("/api/v1/clients")?;
    let client = clients["items"][0]["client_id"]
        .as_str()
        .expect("the agent is listed")
        .to_string();
    let path = format!("/api/v1/clients/{client}/monitoring/{LOG_TAIL}?rows=1000");
    let written = std::fs::read_to_string(&log)?;
    let mismatches = common::wait_until(
        "every line in the log stored as often as written",
        Duration::from_secs(60),
        || {
            let (status, page) = deployment.api().get(&path)?;
            ensure!(status == 200, "GET {path}: {status} {page}");
            let stored: Vec<String> = page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| item["row"]["line"].as_str().unwrap_or_default().to_string())
                .collect();
            let mut wrong = Vec::new();
            for i in (1000..1000 + lines).chain(2000..2000 + more) {
                let line = format!("Dec  5 01:00:00 host sshd[{i}]: Accepted publickey for alice");
                let in_log = written.lines().filter(|l| *l == line).count();
                let copies = stored.iter().filter(|s| **s == line).count();
                // LogTail starts at the end of the file, so the restarted agent may not
                // have been reading yet when the first copy after its restart went in.
                let unread_at_restart = usize::from(i >= 2000);
                if copies == 0 || copies > in_log || in_log - copies > unread_at_restart {
                    wrong.push(format!("line {i}: stored {copies}, in the log {in_log}"));
                }
            }
            Ok(wrong)
        },
        |wrong| wrong.is_empty(),
    )?;
    ensure!(mismatches.is_empty(), "{mismatches:?}");
    Ok(())
}
