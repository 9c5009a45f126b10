//! Goal: monitoring event batches posted by agents land in the day files of their rows'
//! UTC day, each batch exactly once: a resend is acknowledged DUPLICATE and writes
//! nothing, also when the agent has moved to another frontend of the deployment, and a
//! minion killed with -9 in the middle of a stream loses no acknowledged event and
//! duplicates none once the agent resumes on the master. Bad batches are refused 400 with
//! their reason and write nothing; a full disk is 503 with a long Retry-After and the
//! kept batch is written once when there is room. The read API pages rows by time range
//! across days.
//! Method: a real master and minion on loopback sharing one datastore; agents are
//! `RawAgent`s posting `EventBatch` uploads with explicit times; the day files are read
//! from disk and the rows through `GET /api/v1/clients/{id}/monitoring/{artifact}`. The
//! full disk is a 4 MiB tmpfs (skipped, counted, where mounting is not allowed).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{cluster, wait_until, Deployment, RawAgent};
use packhunt::protocol::pb::{self, upload::Kind, upload_ack::Status};
use serde_json::Value;

const STATS: &str = "Generic.Client.Stats";
/// 2024-03-01T00:00:00Z: batches before it land in 2024-02-29, after it in 2024-03-01.
const MARCH_1_MS: u64 = 1_709_251_200_000;
const FEB_29: &str = "2024-02-29";
const MAR_1: &str = "2024-03-01";

/// A batch of `rows` rows at `first_ms`, `first_ms + 1`, ...; each row names its seq and
/// position so every event on disk can be traced to the batch that carried it.
fn batch(seq: u64, first_ms: u64, rows: u64) -> pb::EventBatch {
    let time_ms: Vec<u64> = (0..rows).map(|i| first_ms + i).collect();
    let jsonl: String = (0..rows)
        .map(|i| format!("{{\"seq\":{seq},\"i\":{i},\"cpu\":0.5}}\n"))
        .collect();
    pb::EventBatch {
        artifact: STATS.into(),
        seq,
        jsonl: jsonl.into(),
        row_count: rows as u32,
        time_ms,
        dropped_before: 0,
    }
}

/// Posts `batch`; returns the HTTP status and the ack (status, next_seq, message).
fn post(agent: &mut RawAgent, batch: pb::EventBatch) -> Result<(u16, Status, u64, String)> {
    let reply = agent.upload(&pb::Upload {
        kind: Some(Kind::Events(batch)),
    })?;
    let ack = reply.ack.context("no ack")?;
    let status = Status::try_from(ack.status).context("ack status")?;
    Ok((reply.status, status, ack.next_seq, ack.message))
}

fn expect_ok(agent: &mut RawAgent, batch: pb::EventBatch) -> Result<()> {
    let seq = batch.seq;
    let answer = post(agent, batch)?;
    ensure!(
        answer.0 == 200 && answer.1 == Status::Ok && answer.2 == seq + 1,
        "batch {seq}: {answer:?}"
    );
    Ok(())
}

fn expect_duplicate(agent: &mut RawAgent, batch: pb::EventBatch, next_seq: u64) -> Result<()> {
    let seq = batch.seq;
    let answer = post(agent, batch)?;
    ensure!(
        answer.0 == 200 && answer.1 == Status::Duplicate && answer.2 == next_seq,
        "resent batch {seq}: {answer:?}"
    );
    Ok(())
}

fn day_file(deployment: &Deployment, client: &str, day: &str) -> PathBuf {
    deployment
        .datastore()
        .join(format!("clients/{client}/monitoring/{STATS}/{day}.jsonl"))
}

/// The (seq, i) of every row of a day file, in file order.
fn day_rows(deployment: &Deployment, client: &str, day: &str) -> Result<Vec<(u64, u64)>> {
    let path = day_file(deployment, client, day);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line)?;
            Ok((
                row["seq"].as_u64().context("seq")?,
                row["i"].as_u64().context("i")?,
            ))
        })
        .collect()
}

fn monitoring(deployment: &Deployment, client: &str, query: &str) -> Result<(u16, Value)> {
    deployment.api().get(&format!(
        "/api/v1/clients/{client}/monitoring/{STATS}?{query}"
    ))
}

#[test]
fn batches_land_in_their_day_once_across_frontends_and_read_back_by_time() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let to_minion = deployment.client_config_for(
        "minion.client.config.toml",
        &[minions[0].agent_port],
        None,
    )?;
    let mut agent = RawAgent::connect_with(&to_minion)?;
    let client = agent.client_id.clone();

    // Three batches over midnight UTC: 2 + 3 rows on Feb 29, 4 rows on Mar 1; seqs with gaps.
    expect_ok(&mut agent, batch(1_000, MARCH_1_MS - 10_000, 2))?;
    expect_ok(&mut agent, batch(1_005, MARCH_1_MS - 5_000, 3))?;
    expect_ok(&mut agent, batch(2_000, MARCH_1_MS + 1_000, 4))?;
    let feb = vec![(1_000, 0), (1_000, 1), (1_005, 0), (1_005, 1), (1_005, 2)];
    let mar: Vec<(u64, u64)> = (0..4).map(|i| (2_000, i)).collect();
    assert_eq!(day_rows(&deployment, &client, FEB_29)?, feb);
    assert_eq!(day_rows(&deployment, &client, MAR_1)?, mar);

    // Resends, of the newest and of an older day's batch, write nothing.
    expect_duplicate(&mut agent, batch(2_000, MARCH_1_MS + 1_000, 4), 2_001)?;
    expect_duplicate(&mut agent, batch(1_000, MARCH_1_MS - 10_000, 2), 2_001)?;
    // Bad batches: 400 with the reason, nothing written.
    let mut miscounted = batch(3_000, MARCH_1_MS + 9_000, 2);
    miscounted.time_ms.pop();
    let two_days = batch(3_000, MARCH_1_MS - 1, 2);
    let mut bad_json = batch(3_000, MARCH_1_MS + 9_000, 1);
    bad_json.jsonl = "{\"seq\":3000,\n".into();
    let mut collection = batch(3_000, MARCH_1_MS + 9_000, 1);
    collection.artifact = "Linux.Sys.Pslist".into();
    for (bad, reason) in [
        (miscounted, "1 time_ms values for 2 rows"),
        (two_days, "more than one UTC day"),
        (bad_json, "line 1"),
        (collection, "Linux.Sys.Pslist"),
    ] {
        let answer = post(&mut agent, bad)?;
        assert_eq!(answer.0, 400, "{answer:?}");
        assert!(answer.3.contains(reason), "{answer:?} should say {reason}");
    }
    assert_eq!(day_rows(&deployment, &client, FEB_29)?, feb);
    assert_eq!(day_rows(&deployment, &client, MAR_1)?, mar);
    let minion = &minions[0];
    assert_eq!(
        minion.metric(&deployment, "packhunt_events_rows_ingested_total")?,
        9
    );
    assert_eq!(
        minion.metric(&deployment, "packhunt_events_duplicate_batches_total")?,
        2
    );
    assert_eq!(
        minion.metric(
            &deployment,
            "packhunt_upload_rejections_total{reason=\"bad_event_times\"}"
        )?,
        2
    );
    assert_eq!(
        minion.metric(
            &deployment,
            "packhunt_upload_rejections_total{reason=\"not_event_artifact\"}"
        )?,
        1
    );

    // The same agent on the master: its resends are duplicates there too.
    let identity = agent.identity.clone();
    drop(agent);
    let mut moved = RawAgent::connect_as(&deployment.client_config(), identity)?;
    expect_duplicate(&mut moved, batch(1_005, MARCH_1_MS - 5_000, 3), 2_001)?;
    expect_duplicate(&mut moved, batch(2_000, MARCH_1_MS + 1_000, 4), 2_001)?;
    let mut next = batch(2_500, MARCH_1_MS + 2_000, 1);
    next.dropped_before = 7;
    expect_ok(&mut moved, next)?;
    assert_eq!(day_rows(&deployment, &client, FEB_29)?, feb);
    assert_eq!(day_rows(&deployment, &client, MAR_1)?.len(), 5);
    assert_eq!(deployment.metric("packhunt_events_rows_ingested_total")?, 1);
    assert_eq!(
        deployment.metric("packhunt_events_dropped_by_agents_total")?,
        7
    );

    read_back_by_time(&deployment, &client)
}

/// Times on disk: Feb 29 at -10000, -9999, -5000, -4999, -4998; Mar 1 at +1000..+1003 and
/// +2000 (ms from midnight).
fn read_back_by_time(deployment: &Deployment, client: &str) -> Result<()> {
    let all = format!("start_ms=0&end_ms={}", MARCH_1_MS * 2);
    let (status, body) = monitoring(deployment, client, &all)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_rows"], 10, "{body}");
    assert_eq!(body["client_id"], client);
    assert_eq!(body["artifact"], STATS);

    // [-5000, +1002) spans midnight: 3 rows on Feb 29, 2 on Mar 1; pages of 2 from row 1.
    let (start, end) = (MARCH_1_MS - 5_000, MARCH_1_MS + 1_002);
    let range = format!("start_ms={start}&end_ms={end}");
    let mut seen = Vec::new();
    for start_row in [1, 3, 5] {
        let (status, page) = monitoring(
            deployment,
            client,
            &format!("{range}&start_row={start_row}&rows=2"),
        )?;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total_rows"], 5, "{page}");
        assert_eq!(page["start_row"], start_row);
        assert_eq!(
            (page["start_ms"].as_u64(), page["end_ms"].as_u64()),
            (Some(start), Some(end))
        );
        for item in page["items"].as_array().context("items")? {
            let row = &item["row"];
            seen.push((
                item["time_ms"].as_u64().context("time_ms")?,
                row["seq"].as_u64().context("seq")?,
                row["i"].as_u64().context("i")?,
            ));
        }
    }
    let expected = vec![
        (MARCH_1_MS - 4_999, 1_005, 1),
        (MARCH_1_MS - 4_998, 1_005, 2),
        (MARCH_1_MS + 1_000, 2_000, 0),
        (MARCH_1_MS + 1_001, 2_000, 1),
    ];
    assert_eq!(seen, expected);

    let (_, listed) = deployment
        .api()
        .get(&format!("/api/v1/clients/{client}/monitoring"))?;
    assert_eq!(
        listed["artifacts"][0]["days"],
        serde_json::json!([{"day": FEB_29, "rows": 5}, {"day": MAR_1, "rows": 5}]),
        "{listed}"
    );

    // Bad parameters are 400, an unknown client 404, no credentials 401.
    for query in ["start_ms=5&end_ms=4", "start_ms=x", "rows=-1"] {
        let (status, body) = monitoring(deployment, client, query)?;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, body) = deployment.api().get(&format!(
        "/api/v1/clients/{client}/monitoring/Linux.Sys.Pslist"
    ))?;
    assert_eq!(status, 400, "{body}");
    let (status, _) = monitoring(deployment, "C.0000000000000000", "")?;
    assert_eq!(status, 404);
    let (status, _) = deployment
        .api()
        .without_auth()
        .get(&format!("/api/v1/clients/{client}/monitoring/{STATS}"))?;
    assert_eq!(status, 401);
    Ok(())
}

/// What the streaming agent saw before its minion died.
struct Streamed {
    /// Seqs acknowledged OK, each one batch of `ROWS` rows.
    acked: Vec<u64>,
    /// The seq being posted when the connection broke (maybe written, never acknowledged).
    in_flight: Option<u64>,
}

const ROWS: u64 = 3;

#[test]
fn a_minion_killed_mid_stream_keeps_every_acknowledged_event_exactly_once() -> Result<()> {
    let (deployment, mut minions) = cluster(1)?;
    let to_minion = deployment.client_config_for(
        "minion.client.config.toml",
        &[minions[0].agent_port],
        None,
    )?;
    let identity = packhunt::tls::agent_key::AgentIdentity::generate()?;
    let client = identity.client_id().to_string();
    let acked_count = Arc::new(AtomicU64::new(0));
    let streamer = {
        let (identity, acked_count) = (identity.clone(), acked_count.clone());
        std::thread::spawn(move || -> Result<Streamed> {
            let mut agent = RawAgent::connect_as(&to_minion, identity)?;
            let mut acked = Vec::new();
            // Batches every 10 ms of event time, crossing midnight as the stream goes on.
            for n in 0..100_000u64 {
                let seq = 1_000 + 2 * n;
                let time = MARCH_1_MS - 2_000 + 10 * n;
                match post(&mut agent, batch(seq, time, ROWS)) {
                    Ok((200, Status::Ok, _, _)) => {
                        acked.push(seq);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => anyhow::bail!("batch {seq}: {other:?}"),
                    Err(_) => {
                        return Ok(Streamed {
                            acked,
                            in_flight: Some(seq),
                        })
                    }
                }
            }
            Ok(Streamed {
                acked,
                in_flight: None,
            })
        })
    };
    wait_until(
        "the stream crossed midnight on the minion",
        Duration::from_secs(60),
        || Ok(acked_count.load(Ordering::Relaxed)),
        |n| *n >= 300,
    )?;
    minions[0].kill()?;
    let streamed = streamer.join().expect("streamer thread")?;
    let in_flight = streamed.in_flight.context("the kill ended the stream")?;
    ensure!(streamed.acked.len() >= 300, "{}", streamed.acked.len());

    // The agent resumes on the master: it resends what was never acknowledged (the batch
    // in flight), and goes on.
    let mut agent = RawAgent::connect_as(&deployment.client_config(), identity)?;
    let n_of = |seq: u64| (seq - 1_000) / 2;
    let resend = batch(in_flight, MARCH_1_MS - 2_000 + 10 * n_of(in_flight), ROWS);
    let answer = post(&mut agent, resend)?;
    ensure!(
        answer.0 == 200 && matches!(answer.1, Status::Ok | Status::Duplicate),
        "{answer:?}"
    );
    // A resend of an acknowledged batch is a duplicate on the master too.
    let last_acked = *streamed.acked.last().context("acked")?;
    let old = batch(last_acked, MARCH_1_MS - 2_000 + 10 * n_of(last_acked), ROWS);
    expect_duplicate(&mut agent, old, in_flight.max(last_acked) + 1)?;
    let after = in_flight + 2;
    expect_ok(
        &mut agent,
        batch(after, MARCH_1_MS - 2_000 + 10 * n_of(after), ROWS),
    )?;

    let mut on_disk: HashMap<(u64, u64), u64> = HashMap::new();
    for day in [FEB_29, MAR_1] {
        for row in day_rows(&deployment, &client, day)? {
            *on_disk.entry(row).or_default() += 1;
        }
    }
    let mut expected: Vec<u64> = streamed.acked.clone();
    expected.extend([in_flight, after]);
    for seq in &expected {
        for i in 0..ROWS {
            assert_eq!(
                on_disk.get(&(*seq, i)),
                Some(&1),
                "event ({seq}, {i}) is on disk exactly once"
            );
        }
    }
    assert_eq!(
        on_disk.len() as u64,
        expected.len() as u64 * ROWS,
        "nothing else is on disk"
    );
    ensure!(
        !day_rows(&deployment, &client, FEB_29)?.is_empty()
            && !day_rows(&deployment, &client, MAR_1)?.is_empty(),
        "the stream crossed midnight"
    );
    let (status, body) = monitoring(&deployment, &client, "rows=1")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_rows"], expected.len() as u64 * ROWS);
    Ok(())
}

#[test]
fn a_full_disk_refuses_events_with_503_and_takes_the_kept_batch_once_there_is_room() -> Result<()> {
    let mount_dir = tempfile::tempdir()?;
    let datastore = mount_dir.path().join("ds");
    let Some(_mount) = common::TmpfsMount::new(&datastore, "4m") else {
        common::skip(
            "monitoring::a_full_disk_refuses_events_with_503_and_takes_the_kept_batch_once_there_is_room",
            "root and mount rights, to mount a 4 MiB tmpfs",
        );
        return Ok(());
    };
    let location = datastore.display().to_string();
    let deployment = Deployment::start_with(|text| {
        *text = text.replace(
            "location = \"datastore\"",
            &format!("location = \"{location}\""),
        );
        // A 4 MiB mount: below the start-up check's default free space.
        common::set_keys(text, &[("min_free_bytes", "0")]);
    })?;
    let mut agent = RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();
    // Something else on the disk that the operator can delete to make room.
    let filler = datastore.join("filler");
    std::fs::write(&filler, vec![0u8; 1536 * 1024])?;
    // ~512 KiB batches of 1,000 padded rows, one ms apart.
    let big = |seq: u64| {
        let mut b = batch(seq, MARCH_1_MS + seq * 1_000, 1_000);
        let pad = "x".repeat(500);
        b.jsonl = (0..1_000)
            .map(|i| format!("{{\"seq\":{seq},\"i\":{i},\"pad\":\"{pad}\"}}\n"))
            .collect::<String>()
            .into();
        b
    };
    let mut seq = 1;
    let refusal = loop {
        let reply = agent.upload(&pb::Upload {
            kind: Some(Kind::Events(big(seq))),
        })?;
        if reply.status != 200 {
            break reply;
        }
        seq += 1;
        ensure!(seq < 32, "a 4 MiB disk must fill up");
    };
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(300)));
    let day = datastore.join(format!("clients/{client}/monitoring/{STATS}/{MAR_1}"));
    let lines = common::count_lines(&day.with_extension("jsonl")) as u64;
    assert_eq!(
        lines,
        (seq - 1) * 1_000,
        "only whole committed batches are on disk"
    );
    assert_eq!(
        std::fs::metadata(day.with_extension("index"))?.len(),
        lines * 16
    );

    std::fs::remove_file(&filler)?;
    expect_ok(&mut agent, big(seq))?;
    expect_duplicate(&mut agent, big(seq), seq + 1)?;
    assert_eq!(
        common::count_lines(&day.with_extension("jsonl")) as u64,
        seq * 1_000
    );
    assert!(deployment.metric("packhunt_upload_rejections_total{reason=\"overloaded\"}")? >= 1);
    Ok(())
}
