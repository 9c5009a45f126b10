//! Goal: cancelling a collection through the master's API stops it wherever its agent is
//! connected (a minion or the master), keeps the rows that arrived, closes the flow to
//! later uploads, and is never undone; an ended, unknown or forbidden cancel is refused; an
//! offline agent is not given a cancelled task when it returns; a hunt stopped with
//! `cancel_flows` cancels its unfinished participants, leaves the finished ones, and its
//! numbers add up, also after a master restart. Method: a real master and minion on
//! loopback, agents played by `RawAgent` (the real comms client, driven by the test)
//! reading their task streams; what the flows hold is read from the API and from disk.

mod common;

use anyhow::{ensure, Context, Result};
use common::cancel::{
    cancel, expect_cancel, next_task, queued, reconnect, send_end, send_rows, status, stored_rows,
    ARTIFACT, WAIT_LIMIT,
};
use common::{cluster, wait_until, Deployment, RawAgent};
use packhunt::config::Role;
use serde_json::{json, Value};

/// Cancels a flow of `agent` that has rows in, and checks what every side sees: the
/// agent gets the Cancel, the flow says cancelled with the rows that arrived, and a later
/// batch (on a connection that never saw the flow open) is refused and writes nothing.
fn cancel_mid_flow(
    deployment: &Deployment,
    agent: RawAgent,
    config: &std::path::Path,
) -> Result<()> {
    let mut agent = agent;
    let api = deployment.api();
    let client = agent.client_id.clone();
    let flow = agent.tasked(deployment, &[ARTIFACT])?;
    ensure!(
        send_rows(&mut agent, &flow, 0, 3)? == 200,
        "first batch refused"
    );

    let (code, body) = cancel(&api, &client, &flow)?;
    ensure!(code == 200, "cancel answered {code} {body}");
    assert_eq!(body, json!({"flow_id": flow, "state": "cancelled"}));
    let told = expect_cancel(&mut agent, &flow)?;
    assert!(!told.reason.is_empty(), "the agent's log says why");

    let doc = status(&api, &client, &flow)?;
    assert_eq!(doc["state"], "cancelled", "{doc}");
    assert_eq!(doc["ended_by"], "cancel", "{doc}");
    assert_eq!(
        doc["total_rows"], 3,
        "the rows that arrived are kept: {doc}"
    );
    assert!(doc["finish_time_ms"].as_u64().is_some(), "{doc}");
    assert!(!queued(&deployment.datastore(), &client, &flow));

    // The agent, on a new connection, sends what it had collected meanwhile and its end.
    let mut agent = reconnect(agent, config)?;
    assert_eq!(
        send_rows(&mut agent, &flow, 1, 2)?,
        409,
        "a batch after the cancel"
    );
    assert_eq!(stored_rows(&deployment.datastore(), &client, &flow), 3);
    send_end(&mut agent, &flow, 5, 2)?;
    let doc = status(&api, &client, &flow)?;
    assert_eq!(
        (doc["state"].as_str(), doc["total_rows"].as_u64()),
        (Some("cancelled"), Some(3)),
        "the agent's end does not reopen or finish a cancelled flow: {doc}"
    );
    let (code, body) = cancel(&api, &client, &flow)?;
    assert_eq!(code, 409, "{body}");
    Ok(())
}

#[test]
fn cancel_reaches_the_agent_on_a_minion_and_on_the_master_and_keeps_what_arrived() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let minion = &minions[0];
    let to_minion =
        deployment.client_config_for("minion.client.config.toml", &[minion.agent_port], None)?;
    let to_master = deployment.client_config();

    let on_minion = RawAgent::connect_with(&to_minion)?;
    common::wait_frontend_of(&deployment, &on_minion.client_id, &minion.name)?;
    cancel_mid_flow(&deployment, on_minion, &to_minion)?;
    assert!(
        minion.metric(&deployment, "packhunt_cancel_frames_pushed_total")? >= 1,
        "the minion pushed the Cancel"
    );

    let on_master = RawAgent::connect_with(&to_master)?;
    cancel_mid_flow(&deployment, on_master, &to_master)?;
    assert!(deployment.metric("packhunt_cancel_flows_total")? >= 2);
    Ok(())
}

#[test]
fn ended_unknown_and_forbidden_cancels_are_refused_and_an_offline_agent_is_not_tasked() -> Result<()>
{
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user("analyst", "analyst-pw", Role::Reader)?;
    deployment.start_frontend()?;
    let api = deployment.api();
    let mut agent = RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();

    let finished = agent.tasked(&deployment, &[ARTIFACT])?;
    ensure!(
        send_rows(&mut agent, &finished, 0, 1)? == 200,
        "batch refused"
    );
    ensure!(send_end(&mut agent, &finished, 1, 1)? == 200, "end refused");
    let (code, body) = cancel(&api, &client, &finished)?;
    assert_eq!(code, 409);
    assert_eq!(
        body,
        json!({"error": format!("flow {finished} is already finished")})
    );
    assert_eq!(status(&api, &client, &finished)?["state"], "finished");

    let (code, body) = cancel(&api, &client, "F.0123456789ABCDEF")?;
    assert_eq!(code, 404, "{body}");
    let open = agent.tasked(&deployment, &[ARTIFACT])?;
    let reader = api.with_auth("analyst", "analyst-pw");
    let (code, body) = cancel(&reader, &client, &open)?;
    assert_eq!(code, 403, "{body}");
    assert_eq!(status(&api, &client, &open)?["state"], "scheduled");

    // Offline: the flow is queued on disk; cancelled, it is not given to the agent when
    // it connects again (its queued tasks come first on a new stream, so the task of a
    // later flow arriving first shows there was none before it).
    let identity = agent.identity.clone();
    drop(agent);
    wait_until(
        "the agent shown offline",
        WAIT_LIMIT,
        || common::frontend_of(&deployment, &client),
        |on| on.is_none(),
    )?;
    let offline = api.collect(&client, &[ARTIFACT])?;
    assert!(queued(&deployment.datastore(), &client, &offline));
    let (code, body) = cancel(&api, &client, &offline)?;
    assert_eq!(code, 200, "{body}");
    assert!(!queued(&deployment.datastore(), &client, &offline));
    let (code, _) = cancel(&api, &client, &open)?;
    assert_eq!(code, 200);
    let mut agent = RawAgent::connect_as(&deployment.client_config(), identity)?;
    let later = agent.tasked(&deployment, &[ARTIFACT])?;
    let doc = status(&api, &client, &offline)?;
    assert_eq!(
        (doc["state"].as_str(), doc["total_rows"].as_u64()),
        (Some("cancelled"), Some(0)),
        "{doc}"
    );
    assert_eq!(status(&api, &client, &later)?["state"], "scheduled");
    assert!(deployment.metric("packhunt_cancel_refused_total")? >= 1);
    Ok(())
}

fn hunt(deployment: &Deployment, id: &str) -> Result<Value> {
    let (code, body) = deployment.api().get(&format!("/api/v1/hunts/{id}"))?;
    ensure!(code == 200, "GET hunt: {code} {body}");
    Ok(body)
}

fn wait_hunt(deployment: &Deployment, id: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_until(
        &format!("hunt {id} in the awaited state"),
        WAIT_LIMIT,
        || hunt(deployment, id),
        done,
    )
}

/// The hunt's numbers: scheduled, completed, errors, cancelled, total_rows.
fn numbers(hunt: &Value) -> [u64; 5] {
    [
        "scheduled",
        "completed",
        "errors",
        "cancelled",
        "total_rows",
    ]
    .map(|k| hunt[k].as_u64().unwrap_or(u64::MAX))
}

#[test]
fn a_hunt_stopped_with_cancel_flows_cancels_only_unfinished_flows_and_adds_up() -> Result<()> {
    let (mut deployment, minions) = cluster(1)?;
    let to_minion = deployment.client_config_for(
        "minion.client.config.toml",
        &[minions[0].agent_port],
        None,
    )?;
    let mut done = RawAgent::connect(&deployment)?;
    let mut started = RawAgent::connect_with(&to_minion)?;
    let mut idle = RawAgent::connect_with(&to_minion)?;
    deployment.wait_connected(3, WAIT_LIMIT)?;
    let api = deployment.api();
    let (code, body) = api.post("/api/v1/hunts", &json!({"artifacts": [ARTIFACT]}))?;
    ensure!(code == 200, "hunt refused: {code} {body}");
    let id = body["hunt_id"].as_str().context("hunt_id")?.to_string();
    let (code, body) = api.post(&format!("/api/v1/hunts/{id}/start"), &json!({}))?;
    ensure!(code == 200, "start: {code} {body}");
    let [done_flow, started_flow, idle_flow] =
        [&mut done, &mut started, &mut idle].map(|a| next_task(a).map(|t| t.flow_id));
    let (done_flow, started_flow, idle_flow) = (done_flow?, started_flow?, idle_flow?);

    ensure!(
        send_rows(&mut done, &done_flow, 0, 2)? == 200,
        "batch refused"
    );
    ensure!(send_end(&mut done, &done_flow, 2, 1)? == 200, "end refused");
    ensure!(
        send_rows(&mut started, &started_flow, 0, 1)? == 200,
        "batch refused"
    );
    wait_hunt(&deployment, &id, |h| h["completed"] == 1)?;

    let stop = format!("/api/v1/hunts/{id}/stop");
    let (code, _) = api.request("POST", &stop, Some(b"{\"cancel_flows\":".to_vec()))?;
    assert_eq!(code, 400, "bad JSON");
    assert_eq!(hunt(&deployment, &id)?["state"], "running");
    // A plain stop (no body) stops recruiting and cancels nothing; cancel_flows on the
    // stopped hunt then cancels what it left running.
    let (code, body) = api.request("POST", &stop, None)?;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body)?;
    assert_eq!(body, json!({"hunt_id": id, "state": "stopped"}));
    assert_eq!(
        status(&api, &idle.client_id, &idle_flow)?["state"],
        "scheduled"
    );
    let (code, body) = api.post(&stop, &json!({"cancel_flows": true}))?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "stopped");
    assert_eq!(body["cancelling"], 2, "the unfinished participants: {body}");

    expect_cancel(&mut started, &started_flow)?;
    expect_cancel(&mut idle, &idle_flow)?;
    let stats = wait_hunt(&deployment, &id, |h| h["cancelled"] == 2)?;
    // Each participant counted once: 3 scheduled = 1 completed + 2 cancelled.
    assert_eq!(numbers(&stats), [3, 1, 0, 2, 3], "{stats}");
    let flow_state = |agent: &RawAgent, flow: &str| -> Result<(String, u64)> {
        let doc = status(&api, &agent.client_id, flow)?;
        Ok((
            doc["state"].as_str().unwrap_or_default().to_string(),
            doc["total_rows"].as_u64().unwrap_or(u64::MAX),
        ))
    };
    assert_eq!(flow_state(&done, &done_flow)?, ("finished".into(), 2));
    assert_eq!(
        flow_state(&started, &started_flow)?,
        ("cancelled".into(), 1)
    );
    assert_eq!(flow_state(&idle, &idle_flow)?, ("cancelled".into(), 0));

    // A restarted master counts the hunt from disk alike, and the flows stay cancelled.
    deployment.kill_frontend()?;
    deployment.start_frontend()?;
    let path = format!("/api/v1/hunts/{id}");
    let (_, stats) = wait_until(
        "the restarted master serves hunts",
        WAIT_LIMIT,
        || api.get(&path),
        |(code, _)| *code != 503,
    )?;
    assert_eq!(numbers(&stats), [3, 1, 0, 2, 3], "after restart: {stats}");
    assert_eq!(
        flow_state(&started, &started_flow)?,
        ("cancelled".into(), 1)
    );
    assert_eq!(flow_state(&idle, &idle_flow)?, ("cancelled".into(), 0));
    Ok(())
}

#[test]
fn a_restarted_master_still_shows_a_cancelled_collection() -> Result<()> {
    let mut deployment = Deployment::start()?;
    let mut agent = RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();
    let flow = agent.tasked(&deployment, &[ARTIFACT])?;
    ensure!(send_rows(&mut agent, &flow, 0, 2)? == 200, "batch refused");
    let (code, body) = cancel(&deployment.api(), &client, &flow)?;
    ensure!(code == 200, "cancel: {code} {body}");
    drop(agent);
    deployment.stop_frontend()?;
    deployment.start_frontend()?;
    let doc = status(&deployment.api(), &client, &flow)?;
    assert_eq!(
        (doc["state"].as_str(), doc["ended_by"].as_str()),
        (Some("cancelled"), Some("cancel")),
        "{doc}"
    );
    assert_eq!(doc["total_rows"], 2);
    Ok(())
}
