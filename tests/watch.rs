//! Goal: a live watcher on the master (`GET /api/v1/events/watch`) gets every event of
//! its artifact ingested anywhere in the deployment, on the master or on a minion, one
//! ndjson line per event with its client, artifact, time, row, seq and frontend; a
//! `client_id` watcher only that client's. Minions forward only what the master watches:
//! an unwatched artifact never crosses the link (the minion's metrics say so), and once
//! the last watcher leaves, nothing does. A watcher that stops reading is cut off with an
//! `{"end":…}` line after the events it was sent, without holding up ingest; at most
//! `MAX_WATCHERS_COUNT` watch at once (503 beyond) and one leaving frees its place. Bad
//! requests are 400/401, and a minion points at the master.
//! Method: a real master and minion on loopback; agents are `RawAgent`s posting
//! `EventBatch` uploads; watchers are raw HTTPS/1.1 requests whose bodies are read line
//! by line (or not read at all); counts come from each frontend's /metrics.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::watch::Watch;
use common::{cluster, wait_until, Api, Deployment, RawAgent};
use packhunt::limits::MAX_WATCHERS_COUNT;
use packhunt::protocol::pb::{self, upload::Kind, upload_ack::Status};
use serde_json::Value;

const STATS: &str = "Generic.Client.Stats";
const PROCESS_START: &str = "Linux.Events.ProcessStart";
const WATCH: &str = "/api/v1/events/watch";
/// 2024-03-01T00:00:00Z: any fixed day will do; rows keep their own times.
const DAY_MS: u64 = 1_709_251_200_000;

/// A batch of `rows` rows of `artifact` at DAY_MS + seq * 1000 + i; each row names its
/// seq and position, padded with `pad_bytes` bytes.
fn batch(artifact: &str, seq: u64, rows: u64, pad_bytes: usize) -> pb::EventBatch {
    let pad = "x".repeat(pad_bytes);
    let jsonl: String = (0..rows)
        .map(|i| format!("{{\"seq\":{seq},\"i\":{i},\"pad\":\"{pad}\"}}\n"))
        .collect();
    pb::EventBatch {
        artifact: artifact.into(),
        seq,
        jsonl: jsonl.into(),
        row_count: rows as u32,
        time_ms: (0..rows).map(|i| DAY_MS + seq * 1000 + i).collect(),
        dropped_before: 0,
    }
}

fn post(agent: &mut RawAgent, batch: pb::EventBatch) -> Result<()> {
    let seq = batch.seq;
    let reply = agent.upload(&pb::Upload {
        kind: Some(Kind::Events(batch)),
    })?;
    let ack = reply.ack.context("no ack")?;
    ensure!(
        reply.status == 200 && Status::try_from(ack.status) == Ok(Status::Ok),
        "batch {seq}: {} {ack:?}",
        reply.status
    );
    Ok(())
}

fn watch_on_master(deployment: &Deployment, query: &str) -> Result<Watch> {
    let path = format!("{WATCH}?{query}");
    let watch = Watch::open(deployment, &deployment.host, deployment.gui_port, &path)?;
    Ok(watch)
}

fn open_ok(deployment: &Deployment, query: &str) -> Result<Watch> {
    let watch = watch_on_master(deployment, query)?;
    ensure!(watch.status == 200, "watch {query}: {}", watch.status);
    ensure!(
        watch.content_type == "application/x-ndjson",
        "{}",
        watch.content_type
    );
    Ok(watch)
}

fn wait_metric(api: &Api, series: &str, done: impl Fn(&u64) -> bool) -> Result<u64> {
    wait_until(series, Duration::from_secs(30), || api.metric(series), done)
}

/// (client_id, seq, i, time_ms, frontend) of an event line, checked for its shape.
fn key(line: &Value) -> Result<(String, u64, u64, u64, String)> {
    ensure!(line["artifact"] == STATS, "{line}");
    let row = &line["row"];
    let seq = line["seq"].as_u64().context("seq")?;
    ensure!(
        row["seq"].as_u64() == Some(seq),
        "the row is the batch's: {line}"
    );
    let i = row["i"].as_u64().context("row i")?;
    let time_ms = line["time_ms"].as_u64().context("time_ms")?;
    ensure!(
        time_ms == DAY_MS + seq * 1000 + i,
        "each row its own time: {line}"
    );
    Ok((
        line["client_id"].as_str().context("client_id")?.to_string(),
        seq,
        i,
        time_ms,
        line["frontend"].as_str().context("frontend")?.to_string(),
    ))
}

#[test]
fn events_from_master_and_minion_reach_the_watcher_and_only_watched_ones_cross() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let minion = &minions[0];
    let master_name = format!("{}:{}", deployment.host, deployment.agent_port);
    let api = deployment.api();
    let minion_api = minion.metrics_api(&deployment);
    let on_master = deployment.client_config_for("master.toml", &[deployment.agent_port], None)?;
    let on_minion = deployment.client_config_for("minion.toml", &[minion.agent_port], None)?;
    let mut near = RawAgent::connect_with(&on_master)?;
    let mut far = RawAgent::connect_with(&on_minion)?;

    // Bad requests, before anyone watches.
    for (query, status, says) in [
        ("", 400, "`artifact` is required"),
        ("artifact=Linux.Nope", 400, "unknown artifact"),
        ("artifact=Linux.Sys.Pslist", 400, "is a collection artifact"),
        (
            "artifact=Generic.Client.Stats&client_id=nope",
            400,
            "client_id",
        ),
    ] {
        let (code, body) = api.get(&format!("{WATCH}?{query}"))?;
        assert_eq!(code, status, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(says),
            "{query}: {body}"
        );
    }
    let (code, _) = api
        .without_auth()
        .get(&format!("{WATCH}?artifact={STATS}"))?;
    assert_eq!(code, 401);
    let minion_answer = Watch::open(
        &deployment,
        &minion.host,
        minion.metrics_port,
        &format!("{WATCH}?artifact={STATS}"),
    )?;
    assert_eq!(minion_answer.status, 404);
    let text = minion_answer.error_text()?;
    assert!(text.contains("served by the master"), "{text}");
    assert!(text.contains(&deployment.gui_port.to_string()), "{text}");

    // Nobody watches yet: the minion forwards nothing.
    let unwatched = "packhunt_events_watch_unwatched_total";
    let forwarded = "packhunt_events_watch_forwarded_total";
    post(&mut far, batch(STATS, 1, 1, 10))?;
    wait_metric(&minion_api, unwatched, |n| *n >= 1)?;
    assert_eq!(minion_api.metric(forwarded)?, 0);

    let mut all = open_ok(&deployment, &format!("artifact={STATS}"))?;
    let mut far_only = open_ok(
        &deployment,
        &format!("artifact={STATS}&client_id={}", far.client_id),
    )?;
    wait_metric(&minion_api, "packhunt_events_watched_artifacts", |n| {
        *n == 1
    })?;
    assert_eq!(api.metric("packhunt_events_watchers")?, 2);

    post(&mut near, batch(STATS, 10, 2, 10))?;
    post(&mut far, batch(STATS, 20, 3, 10))?;
    let unwatched_before = minion_api.metric(unwatched)?;
    post(&mut far, batch(PROCESS_START, 30, 1, 10))?;
    wait_metric(&minion_api, unwatched, |n| *n > unwatched_before)?;

    let mut got: Vec<_> = all.events(5)?.iter().map(key).collect::<Result<_>>()?;
    got.sort();
    let mut want = Vec::new();
    for i in 0..2 {
        want.push((
            near.client_id.clone(),
            10,
            i,
            DAY_MS + 10_000 + i,
            master_name.clone(),
        ));
    }
    for i in 0..3 {
        want.push((
            far.client_id.clone(),
            20,
            i,
            DAY_MS + 20_000 + i,
            minion.name.clone(),
        ));
    }
    want.sort();
    assert_eq!(
        got, want,
        "every row of both frontends, once, with its fields"
    );
    let filtered: Vec<_> = far_only.events(3)?.iter().map(key).collect::<Result<_>>()?;
    assert!(
        filtered.iter().all(|k| k.0 == far.client_id),
        "{filtered:?}"
    );

    // The next line is the next Stats batch: the ProcessStart batch went nowhere, and
    // only the one watched batch crossed the link.
    post(&mut far, batch(STATS, 40, 1, 10))?;
    let next = key(&all.next_line()?.context("stream open")?)?;
    assert_eq!((next.0.as_str(), next.1), (far.client_id.as_str(), 40));
    assert_eq!(minion_api.metric(forwarded)?, 2);
    assert_eq!(api.metric("packhunt_events_watch_received_total")?, 2);

    // Both watchers leave: the master says so, and the minion forwards nothing again.
    drop(all);
    drop(far_only);
    wait_metric(&api, "packhunt_events_watchers", |n| *n == 0)?;
    wait_metric(&minion_api, "packhunt_events_watched_artifacts", |n| {
        *n == 0
    })?;
    let unwatched_before = minion_api.metric(unwatched)?;
    post(&mut far, batch(STATS, 50, 1, 10))?;
    wait_metric(&minion_api, unwatched, |n| *n > unwatched_before)?;
    assert_eq!(
        minion_api.metric(forwarded)?,
        2,
        "nothing crosses once unwatched"
    );

    // A minion that (re)links hears the watched set from the master at once.
    let mut watcher = open_ok(&deployment, &format!("artifact={STATS}"))?;
    let mut minions = minions;
    minions[0].kill()?;
    deployment.start_minion(&mut minions[0])?;
    let minion = &minions[0];
    wait_metric(&minion_api, "packhunt_events_watched_artifacts", |n| {
        *n == 1
    })?;
    let mut far = RawAgent::connect_as(&on_minion, far.identity.clone())?;
    post(&mut far, batch(STATS, 60, 1, 10))?;
    let line = key(&watcher.next_line()?.context("an event")?)?;
    assert_eq!((line.1, line.4.as_str()), (60, minion.name.as_str()));
    Ok(())
}

#[test]
fn a_slow_watcher_is_cut_off_with_an_end_line_and_watchers_are_capped() -> Result<()> {
    let deployment = Deployment::start()?;
    let api = deployment.api();
    let mut agent = RawAgent::connect(&deployment)?;
    let mut slow = open_ok(&deployment, &format!("artifact={STATS}"))?;
    wait_metric(&api, "packhunt_events_watchers", |n| *n == 1)?;

    // About 1 MiB per batch, never read: socket buffers fill, then the watcher's queue.
    const MAX_BATCHES: u64 = 200;
    let cut_off = "packhunt_events_watch_cut_off_total";
    let mut posted = 0;
    while api.metric(cut_off)? == 0 {
        ensure!(posted < MAX_BATCHES, "no cut-off after {posted} batches");
        posted += 1;
        post(&mut agent, batch(STATS, posted, 1000, 1000))?;
    }
    // Ingest went on regardless: every batch was acknowledged above.

    // What it was sent is a gapless prefix of what was posted, then the end line.
    let mut last: Option<(u64, u64)> = None;
    let end = loop {
        let line = slow
            .next_line()?
            .context("the stream ends with an end line")?;
        if let Some(reason) = line.get("end") {
            break reason.as_str().context("end reason")?.to_string();
        }
        let seq = line["seq"].as_u64().context("seq")?;
        let i = line["row"]["i"].as_u64().context("i")?;
        let expected = match last {
            None => (1, 0),
            Some((seq, 999)) => (seq + 1, 0),
            Some((seq, i)) => (seq, i + 1),
        };
        assert_eq!((seq, i), expected, "no event skipped before the end");
        last = Some((seq, i));
    };
    eprintln!("posted {posted} batches, the watcher got through batch {last:?}");
    assert!(end.contains("fell behind"), "{end}");
    assert!(slow.next_line()?.is_none(), "nothing after the end line");
    let sent_through = last.map_or(0, |(seq, _)| seq);
    assert!(
        sent_through < posted,
        "the cut-off watcher did not get everything"
    );
    wait_metric(&api, "packhunt_events_watchers", |n| *n == 0)?;

    // The cap: MAX_WATCHERS_COUNT watch, one more is refused, one leaving frees a place.
    let mut watchers = (0..MAX_WATCHERS_COUNT)
        .map(|_| open_ok(&deployment, &format!("artifact={STATS}")))
        .collect::<Result<Vec<_>>>()?;
    let refused = watch_on_master(&deployment, &format!("artifact={STATS}"))?;
    assert_eq!(refused.status, 503);
    let text = refused.error_text()?;
    assert!(text.contains("watchers are connected"), "{text}");
    watchers.pop();
    wait_metric(&api, "packhunt_events_watchers", |n| {
        *n == MAX_WATCHERS_COUNT as u64 - 1
    })?;
    let mut again = open_ok(&deployment, &format!("artifact={STATS}"))?;
    post(&mut agent, batch(STATS, posted + 1, 1, 10))?;
    let line = again.next_line()?.context("an event")?;
    assert_eq!(line["seq"].as_u64(), Some(posted + 1));
    let mut seen = BTreeSet::new();
    for w in watchers.iter_mut().take(3) {
        seen.insert(w.next_line()?.context("an event")?["seq"].as_u64());
    }
    assert_eq!(seen, BTreeSet::from([Some(posted + 1)]));

    // A stopping master ends every stream with a line that says so.
    let mut deployment = deployment;
    drop(agent);
    deployment.stop_frontend()?;
    let last = again.next_line()?.context("an end line")?;
    let reason = last["end"].as_str().context("end")?;
    assert!(reason.contains("shutting down"), "{last}");
    assert!(again.next_line()?.is_none());
    Ok(())
}
