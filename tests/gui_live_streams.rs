//! Goal: the GUI's live streams (`GET /api/v1/live/dashboard`, `/live/hunts`,
//! `/live/hunts/{id}`) answer `text/event-stream` with `Cache-Control: no-store`, start
//! with a `retry:` field and an event whose JSON has the documented shape, send a new
//! event when the figures change (an agent connects, a hunt starts), need a user, refuse a
//! stream above `MAX_LIVE_STREAMS_COUNT` with 503 and take one again once one leaves, and
//! end when the frontend stops.
//! Method: a real master on loopback; agents are `RawAgent`s; streams are raw HTTPS/1.1
//! requests with Basic auth whose bodies are read event by event.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::live::{LiveStream, SseBlock};
use common::{wait_until, Deployment, RawAgent};
use packhunt::limits::MAX_LIVE_STREAMS_COUNT;
use serde_json::{json, Value};

/// How long a change may take to show in a stream (ticks are a second apart).
const CHANGE_LIMIT: Duration = Duration::from_secs(30);

fn open_ok(deployment: &Deployment, path: &str) -> Result<LiveStream> {
    let stream = LiveStream::open(deployment, path)?;
    ensure!(stream.status == 200, "{path}: {}", stream.status);
    ensure!(
        stream.content_type == "text/event-stream",
        "{}",
        stream.content_type
    );
    ensure!(
        stream.cache_control == "no-store",
        "{}",
        stream.cache_control
    );
    Ok(stream)
}

fn is_rate(v: &Value) -> bool {
    v.as_f64().is_some_and(|r| r >= 0.0)
}

#[test]
fn dashboard_stream_has_its_shape_and_follows_agents() -> Result<()> {
    let deployment = Deployment::start()?;
    let mut stream = open_ok(&deployment, "/api/v1/live/dashboard")?;
    let first = stream.next_block()?.context("ended at once")?;
    ensure!(first == SseBlock::Retry(3000), "first block: {first:?}");
    let event = stream.next_data()?;
    ensure!(event["time_ms"].as_u64().is_some_and(|t| t > 0), "{event}");
    let frontends = event["frontends"].as_array().context("frontends")?;
    ensure!(frontends.len() == 1, "{event}");
    let master = &frontends[0];
    ensure!(
        master["role"] == "master" && master["up"] == true,
        "{master}"
    );
    ensure!(
        master["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{master}"
    );
    ensure!(master["connected_clients"] == 0, "{master}");
    for key in [
        "accepts_per_second",
        "sheds_per_second",
        "upload_503s_per_second",
        "ingest_mb_per_second",
    ] {
        ensure!(is_rate(&master[key]), "{key}: {master}");
    }
    ensure!(
        master["replication"] == json!({"state": "master", "links_up": 0, "links_configured": 0}),
        "{master}"
    );
    ensure!(event["fleet"]["connected"] == 0, "{event}");
    ensure!(event["fleet"].get("known").is_some(), "{event}");
    let limits = &event["limits"];
    let config =
        packhunt::config::ServerConfig::load(&deployment.path().join("server.config.toml"))?;
    ensure!(
        limits["concurrency"] == config.limits.concurrency.get()
            && limits["max_upload_bytes"] == config.limits.max_upload_bytes.get()
            && limits["max_connections_per_second"]
                == config.limits.max_connections_per_second.get()
            && limits["hunt_recruitment_per_second"]
                == config.limits.hunt_recruitment_per_second.get()
            && limits["max_live_streams"] == MAX_LIVE_STREAMS_COUNT,
        "{limits}"
    );

    // An agent connects: the same stream shows it, on the master and in the fleet, and
    // the accept rate saw its connection (the rate window is a second, so it may have
    // passed again by the event read: only its presence is checked there).
    let agent = RawAgent::connect(&deployment)?;
    // `known` is at least `connected`, however stale the count of folders.
    stream.wait_data("the agent on the dashboard", CHANGE_LIMIT, |e| {
        e["frontends"][0]["connected_clients"] == 1
            && e["fleet"]["connected"] == 1
            && e["fleet"]["known"].as_u64().is_some_and(|k| k >= 1)
    })?;
    drop(agent);
    stream.wait_data("the agent gone from the dashboard", CHANGE_LIMIT, |e| {
        e["fleet"]["connected"] == 0
    })?;
    Ok(())
}

#[test]
fn hunt_streams_follow_a_hunt() -> Result<()> {
    let deployment = Deployment::start()?;
    let api = deployment.api();
    let (status, created) = api.post(
        "/api/v1/hunts",
        &json!({"artifacts": ["Generic.Client.Info"], "condition": {"labels": ["nobody-has-it"]}}),
    )?;
    ensure!(status == 200, "{status} {created}");
    let id = created["hunt_id"].as_str().context("hunt_id")?.to_string();

    let mut list = open_ok(&deployment, "/api/v1/live/hunts")?;
    let event = list.next_data()?;
    ensure!(event["total"] == 1, "{event}");
    let hunt = &event["hunts"][0];
    ensure!(
        hunt["hunt_id"] == id.as_str() && hunt["state"] == "paused",
        "{event}"
    );
    for key in [
        "scheduled",
        "completed",
        "errors",
        "cancelled",
        "total_rows",
    ] {
        ensure!(hunt[key] == 0, "{key}: {hunt}");
    }

    let mut one = open_ok(&deployment, &format!("/api/v1/live/hunts/{id}"))?;
    let event = one.next_data()?;
    ensure!(
        event["hunt_id"] == id.as_str() && event["state"] == "paused",
        "{event}"
    );
    ensure!(event["time_ms"].as_u64().is_some(), "{event}");
    let (_, plain) = api.get(&format!("/api/v1/hunts/{id}"))?;
    for (key, value) in plain.as_object().context("hunt")? {
        ensure!(event[key] == *value, "{key}: stream {event} vs GET {plain}");
    }

    let (status, _) = api.post(&format!("/api/v1/hunts/{id}/start"), &json!({}))?;
    ensure!(status == 200, "start: {status}");
    one.wait_data("running in the hunt's stream", CHANGE_LIMIT, |e| {
        e["state"] == "running"
    })?;
    list.wait_data("running in the list", CHANGE_LIMIT, |e| {
        e["hunts"][0]["state"] == "running"
    })?;

    let unknown = LiveStream::open(&deployment, "/api/v1/live/hunts/H.0000000000000000")?;
    ensure!(unknown.status == 404, "unknown hunt: {}", unknown.status);
    let malformed = LiveStream::open(&deployment, "/api/v1/live/hunts/not-a-hunt")?;
    ensure!(
        malformed.status == 400,
        "malformed id: {}",
        malformed.status
    );
    Ok(())
}

#[test]
fn streams_need_a_user_and_are_bounded() -> Result<()> {
    let deployment = Deployment::start()?;
    let anonymous = LiveStream::open_as(&deployment, "/api/v1/live/dashboard", None)?;
    ensure!(
        anonymous.status == 401,
        "no credentials: {}",
        anonymous.status
    );
    let wrong = LiveStream::open_as(
        &deployment,
        "/api/v1/live/dashboard",
        Some(("admin".into(), "wrong".into())),
    )?;
    ensure!(wrong.status == 401, "wrong password: {}", wrong.status);

    let mut open = Vec::new();
    for i in 0..MAX_LIVE_STREAMS_COUNT {
        let path = if i % 2 == 0 {
            "/api/v1/live/dashboard"
        } else {
            "/api/v1/live/hunts"
        };
        let mut stream = open_ok(&deployment, path).with_context(|| format!("stream {i}"))?;
        stream.next_data()?;
        open.push(stream);
    }
    let api = deployment.api();
    ensure!(
        api.metric("packhunt_gui_live_streams")? == MAX_LIVE_STREAMS_COUNT as u64,
        "gauge"
    );
    let refused = LiveStream::open(&deployment, "/api/v1/live/dashboard")?;
    ensure!(refused.status == 503, "above the bound: {}", refused.status);
    let text = refused.error_text()?;
    let body: Value = serde_json::from_str(&text).with_context(|| text.clone())?;
    ensure!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("live streams")),
        "{body}"
    );
    ensure!(
        api.metric("packhunt_gui_live_refused_total")? >= 1,
        "refusals counted"
    );

    // One leaves: its slot comes back once its task sees the body gone (next tick).
    drop(open.pop());
    wait_until(
        "a slot given back",
        CHANGE_LIMIT,
        || {
            let stream = LiveStream::open(&deployment, "/api/v1/live/hunts")?;
            Ok(stream.status)
        },
        |status| *status == 200,
    )?;
    Ok(())
}

#[test]
fn streams_end_when_the_frontend_stops() -> Result<()> {
    let mut deployment = Deployment::start()?;
    let mut stream = open_ok(&deployment, "/api/v1/live/dashboard")?;
    stream.next_data()?;
    deployment.stop_frontend()?;
    // Whatever was queued may still come; then the body ends (or the connection closes).
    loop {
        match stream.next_block() {
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(()),
            Err(e) if format!("{e:#}").contains("no event within the limit") => {
                anyhow::bail!("the stream outlived the frontend: {e:#}")
            }
            Err(_) => return Ok(()),
        }
    }
}

#[test]
fn a_minion_shows_with_its_link_and_without_the_rates_it_does_not_report() -> Result<()> {
    let (deployment, minions) = common::cluster(1)?;
    let minion = &minions[0].name;
    let mut stream = open_ok(&deployment, "/api/v1/live/dashboard")?;
    let event = stream.wait_data("the minion linked", CHANGE_LIMIT, |e| {
        e["frontends"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["name"] == minion.as_str() && f["up"] == true)
        })
    })?;
    let frontends = event["frontends"].as_array().context("frontends")?;
    let entry = frontends
        .iter()
        .find(|f| f["name"] == minion.as_str())
        .context("minion")?;
    ensure!(entry["role"] == "minion", "{entry}");
    for key in [
        "accepts_per_second",
        "sheds_per_second",
        "upload_503s_per_second",
        "ingest_mb_per_second",
    ] {
        ensure!(
            entry[key].is_null(),
            "a minion's {key} is not known: {entry}"
        );
    }
    ensure!(entry["replication"]["state"] == "up", "{entry}");
    ensure!(
        entry["replication"]["since_ms"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "the link came up since the master started: {entry}"
    );
    let master = frontends
        .iter()
        .find(|f| f["role"] == "master")
        .context("master")?;
    ensure!(
        master["replication"] == json!({"state": "master", "links_up": 1, "links_configured": 1}),
        "{master}"
    );
    ensure!(is_rate(&master["accepts_per_second"]), "{master}");
    Ok(())
}

#[test]
fn a_quiet_stream_sends_keepalives() -> Result<()> {
    let deployment = Deployment::start()?;
    let mut stream = open_ok(&deployment, "/api/v1/live/hunts")?;
    stream.next_data()?;
    // Nothing changes (no hunt, no agent): what comes next is a comment, not data.
    let next = stream.next_block()?.context("the stream ended")?;
    ensure!(next == SseBlock::Comment("keepalive".into()), "{next:?}");
    Ok(())
}

/// Goal: a collection's stream starts with its status as `GET .../collections/{flow}`
/// answers it and follows it as it changes (here: cancelled), so the collection view needs
/// no polling; unknown and malformed ids are refused before a stream opens.
/// Method: a RawAgent is tasked through the API; the collection is cancelled through the API.
#[test]
fn a_collection_stream_follows_its_status() -> Result<()> {
    let deployment = Deployment::start()?;
    let api = deployment.api();
    let mut agent = RawAgent::connect(&deployment)?;
    let flow = agent.tasked(&deployment, &["Generic.Client.Info"])?;
    let client = agent.client_id.clone();
    let path = format!("/api/v1/live/clients/{client}/collections/{flow}");
    let mut stream = open_ok(&deployment, &path)?;
    let event = stream.next_data()?;
    ensure!(event["time_ms"].as_u64().is_some(), "{event}");
    let (_, plain) = api.get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
    for (key, value) in plain.as_object().context("status")? {
        ensure!(event[key] == *value, "{key}: stream {event} vs GET {plain}");
    }

    let (status, _) = api.post(
        &format!("/api/v1/clients/{client}/collections/{flow}/cancel"),
        &json!({}),
    )?;
    ensure!(status == 200, "cancel: {status}");
    stream.wait_data("the cancel in the stream", CHANGE_LIMIT, |e| {
        e["state"] == "cancelled" && e["ended_by"] == "cancel"
    })?;

    let unknown = LiveStream::open(
        &deployment,
        &format!("/api/v1/live/clients/{client}/collections/F.0000000000000000"),
    )?;
    ensure!(unknown.status == 404, "unknown flow: {}", unknown.status);
    let malformed = LiveStream::open(
        &deployment,
        &format!("/api/v1/live/clients/{client}/collections/not-a-flow"),
    )?;
    ensure!(malformed.status == 400, "malformed: {}", malformed.status);
    Ok(())
}
