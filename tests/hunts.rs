//! Goal: a hunt recruits exactly the agents that match its condition, wherever they are
//! connected, under the configured fleet-wide budget, including agents that arrive later;
//! its statistics and results add up exactly; stop halts recruitment; its state survives a
//! master restart. Method: real frontends (a master and minions) and loadgen fleets on
//! loopback; who was recruited is read from the participants file and the flows on disk.
//! The recruitment rate itself is a measurement, not a test: `bash benches/targets.sh
//! hunt` measures it (tuning.md).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{cluster_with, set_keys, wait_until, Deployment, Proc};
use serde_json::{json, Value};

fn loadgen(deployment: &Deployment, clients: usize, name: &str) -> Result<Proc> {
    let identities = deployment.path().join(format!("{name}.identities"));
    let identities = identities.to_str().context("temp paths are UTF-8")?;
    common::spawn_loadgen(
        &deployment.client_config(),
        clients,
        300,
        &deployment.path().join(format!("{name}.json")),
        &["--identity-dir", identities],
    )
}

fn post(deployment: &Deployment, path: &str, body: Value) -> Result<Value> {
    let (status, reply) = deployment.api().post(path, &body)?;
    ensure!(status == 200, "POST {path}: {status} {reply}");
    Ok(reply)
}

fn hunt(deployment: &Deployment, id: &str) -> Result<Value> {
    let (status, body) = deployment.api().get(&format!("/api/v1/hunts/{id}"))?;
    ensure!(status == 200, "GET hunt: {status} {body}");
    Ok(body)
}

/// Polls the hunt until `done` holds.
fn wait_hunt(
    deployment: &Deployment,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_until(
        &format!("hunt {id} in the awaited state"),
        limit,
        || hunt(deployment, id),
        done,
    )
}

/// (client, flow, create_time_ms) of every participant, from disk: its request.json, or,
/// for a recruit its agent has not answered yet, its queue entry
/// (`{"hunt_id","create_time_us"}`; the flow's folder comes with the first answer).
fn participants(deployment: &Deployment, hunt_id: &str) -> Result<Vec<(String, String, u64)>> {
    let text = std::fs::read_to_string(
        deployment
            .datastore()
            .join("hunts")
            .join(format!("{hunt_id}.participants")),
    )?;
    text.lines()
        .map(|line| {
            let (client, flow) = line.split_once(' ').context("participant line")?;
            let client_dir = deployment.datastore().join("clients").join(client);
            let request_json = client_dir
                .join("collections")
                .join(flow)
                .join("request.json");
            let create_time_ms = match std::fs::read(&request_json) {
                Ok(bytes) => {
                    let request: Value = serde_json::from_slice(&bytes)?;
                    ensure!(request["hunt_id"] == hunt_id, "the flow names its hunt");
                    request["create_time_ms"]
                        .as_u64()
                        .context("create_time_ms")?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // The entry goes when the flow ends: an answer between the two reads
                    // made the request.json this read missed.
                    let entry = std::fs::read(client_dir.join("tasks").join(flow))
                        .or_else(|_| std::fs::read(&request_json))
                        .with_context(|| format!("{client} {flow}: no flow and no queue entry"))?;
                    let entry: Value = serde_json::from_slice(&entry)?;
                    ensure!(entry["hunt_id"] == hunt_id, "the entry names its hunt");
                    match entry["create_time_ms"].as_u64() {
                        Some(ms) => ms,
                        None => entry["create_time_us"].as_u64().context("create_time_us")? / 1000,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            Ok((client.to_string(), flow.to_string(), create_time_ms))
        })
        .collect()
}

#[test]
fn a_hunt_over_three_frontends_recruits_exactly_the_labelled_half_under_the_fleet_wide_budget(
) -> Result<()> {
    const AGENTS: usize = 2_000;
    const RATE: u64 = 200;
    let (deployment, _minions) = cluster_with(2, |t| {
        set_keys(
            t,
            &[
                ("hunt_recruitment_per_second", &RATE.to_string()),
                ("max_connections_per_second", "100000"),
            ],
        )
    })?;
    let _fleet = loadgen(&deployment, AGENTS, "fleet")?;
    let ids = deployment.wait_connected(AGENTS, Duration::from_secs(120))?;
    let (_, frontends) = deployment.api().get("/api/v1/frontends")?;
    for f in frontends["items"].as_array().unwrap() {
        assert!(
            f["connected_clients"].as_u64().unwrap() > 0,
            "agents on every frontend: {frontends}"
        );
    }
    let labelled: Vec<&String> = ids.iter().step_by(2).collect();
    for id in &labelled {
        let reply = post(
            &deployment,
            &format!("/api/v1/clients/{id}/labels"),
            json!({ "add": ["hunt-me"] }),
        )?;
        assert_eq!(reply["labels"], json!(["hunt-me"]));
    }
    let (_, search) = deployment
        .api()
        .get("/api/v1/clients?search=label:hunt-me&limit=5000")?;
    assert_eq!(
        search["items"].as_array().unwrap().len(),
        labelled.len(),
        "labels show in client search"
    );

    let created = post(
        &deployment,
        "/api/v1/hunts",
        json!({ "artifacts": ["Generic.Client.Info"], "condition": { "labels": ["hunt-me"] } }),
    )?;
    let id = created["hunt_id"].as_str().unwrap().to_string();
    assert_eq!(hunt(&deployment, &id)?["state"], "paused");
    assert_eq!(
        hunt(&deployment, &id)?["scheduled"],
        0,
        "a paused hunt recruits no one"
    );
    post(&deployment, &format!("/api/v1/hunts/{id}/start"), json!({}))?;
    let n = labelled.len() as u64;
    let done = wait_hunt(&deployment, &id, Duration::from_secs(120), |h| {
        h["completed"] == n
    })?;
    assert_eq!(done["scheduled"], n, "{done}");
    assert_eq!(done["errors"], 0, "{done}");
    assert_eq!(
        done["total_rows"], n,
        "one Generic.Client.Info row per agent: {done}"
    );
    assert_eq!(done["state"], "running");

    // Exactly the labelled agents, each once, each with a flow of its own.
    let joined = participants(&deployment, &id)?;
    let mut recruited: Vec<&str> = joined.iter().map(|(c, _, _)| c.as_str()).collect();
    recruited.sort();
    let mut want: Vec<&str> = labelled.iter().map(|s| s.as_str()).collect();
    want.sort();
    assert_eq!(recruited, want);
    let mut flows: Vec<&str> = joined.iter().map(|(_, f, _)| f.as_str()).collect();
    flows.sort();
    flows.dedup();
    assert_eq!(flows.len(), joined.len(), "one flow per recruit");
    // The budget is the configured one, and every recruit went through it (counted once,
    // by whichever frontend's recruiter took it). How fast it is spent is the `hunt`
    // target of benches/targets.sh, not this test.
    assert_eq!(
        deployment.metric("packhunt_limit{name=\"hunt_recruitment_per_second\"}")?,
        RATE
    );
    assert_eq!(deployment.metric("packhunt_hunt_recruited_total")?, n);
    // The labelled agents were listed by the client search before the start: the
    // recruiter checked them on the index's facts, reading no info.json for them.
    assert!(
        deployment.metric("packhunt_hunt_facts_from_memory_total")? >= n,
        "facts from memory: {}, read: {}",
        deployment.metric("packhunt_hunt_facts_from_memory_total")?,
        deployment.metric("packhunt_hunt_facts_read_total")?
    );

    // The hunt's results: every row, each with its client and flow.
    let (status, results) = deployment.api().get(&format!(
        "/api/v1/hunts/{id}/results?artifact=Generic.Client.Info&rows=5000"
    ))?;
    assert_eq!(status, 200);
    assert_eq!(results["total_rows"], n);
    let rows = results["rows"].as_array().unwrap();
    assert_eq!(rows.len() as u64, n);
    assert!(rows.iter().all(|r| want
        .binary_search(&r["client_id"].as_str().unwrap())
        .is_ok()
        && r["row"].is_object()));
    let (_, page) = deployment.api().get(&format!(
        "/api/v1/hunts/{id}/results?start_row={}&rows=10",
        n - 3
    ))?;
    assert_eq!(
        page["rows"].as_array().unwrap().len(),
        3,
        "the last page is short"
    );
    Ok(())
}

#[test]
fn agents_arriving_later_on_any_frontend_are_recruited_until_the_hunt_stops_and_its_state_survives_a_restart(
) -> Result<()> {
    let (mut deployment, minions) = cluster_with(1, |t| {
        set_keys(t, &[("hunt_recruitment_per_second", "1000")])
    })?;
    let created = post(
        &deployment,
        "/api/v1/hunts",
        json!({ "artifacts": ["Linux.Sys.Users"], "condition": { "os": "linux" } }),
    )?;
    let id = created["hunt_id"].as_str().unwrap().to_string();
    post(&deployment, &format!("/api/v1/hunts/{id}/start"), json!({}))?;
    let (status, again) = deployment
        .api()
        .post(&format!("/api/v1/hunts/{id}/start"), &json!({}))?;
    assert_eq!(
        status, 409,
        "a running hunt cannot be started again: {again}"
    );

    // Every agent arrives after the start.
    let first = loadgen(&deployment, 30, "first")?;
    let done = wait_hunt(&deployment, &id, Duration::from_secs(60), |h| {
        h["completed"] == 30
    })?;
    assert_eq!(done["scheduled"], 30);
    let on_minion = participants(&deployment, &id)?
        .iter()
        .filter(|(c, _, _)| {
            common::frontend_of(&deployment, c)
                .ok()
                .flatten()
                .as_deref()
                == Some(minions[0].name.as_str())
        })
        .count();
    assert!(
        on_minion > 0,
        "agents that arrived on the minion were recruited too"
    );
    assert_eq!(
        done["total_rows"],
        30 * 40,
        "40 synthetic users per agent: {done}"
    );

    post(&deployment, &format!("/api/v1/hunts/{id}/stop"), json!({}))?;
    let _second = loadgen(&deployment, 20, "second")?;
    deployment.wait_connected(50, Duration::from_secs(60))?;
    // The window under test: a running hunt would recruit these arrivals within
    // milliseconds (budget 1000/s); a stopped one must not in all of it. A poll cannot
    // prove that nothing happens, so this waits on purpose.
    std::thread::sleep(Duration::from_secs(2));
    let stopped = hunt(&deployment, &id)?;
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(
        stopped["scheduled"], 30,
        "a stopped hunt recruits no one: {stopped}"
    );
    assert_eq!(stopped["pending_recruitment"], 0);
    drop(first);

    // A master restart recounts the hunt from disk.
    deployment.kill_frontend()?;
    deployment.start_frontend()?;
    let after = hunt(&deployment, &id)?;
    for key in ["state", "scheduled", "completed", "errors", "total_rows"] {
        assert_eq!(after[key], stopped[key], "{key} after the restart: {after}");
    }
    let (_, list) = deployment.api().get("/api/v1/hunts")?;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        deployment.metric("packhunt_hunt_recruited_total")?,
        0,
        "nothing recruited since the restart"
    );
    Ok(())
}

#[test]
fn an_expired_hunt_recruits_no_one() -> Result<()> {
    let deployment = Deployment::start()?;
    assert_eq!(
        deployment.metric("packhunt_limit{name=\"hunt_recruitment_per_second\"}")?,
        100
    );
    let expires = packhunt::clock::now_ms() + 1_500;
    let created = post(
        &deployment,
        "/api/v1/hunts",
        json!({ "artifacts": ["Generic.Client.Info"], "expires_ms": expires }),
    )?;
    let id = created["hunt_id"].as_str().unwrap().to_string();
    post(&deployment, &format!("/api/v1/hunts/{id}/start"), json!({}))?;
    let expired = wait_hunt(&deployment, &id, Duration::from_secs(10), |h| {
        h["state"] == "expired"
    })?;
    assert!(
        expired["stop_time_ms"].as_u64().unwrap() >= expires,
        "{expired}"
    );
    let _fleet = loadgen(&deployment, 10, "late")?;
    deployment.wait_connected(10, Duration::from_secs(30))?;
    // The window under test: nothing may be recruited in it (a poll cannot show that
    // something does not happen), so this waits on purpose.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hunt(&deployment, &id)?["scheduled"],
        0,
        "nobody recruited after the expiry"
    );
    let (status, _) = deployment.api().post(
        "/api/v1/hunts",
        &json!({ "artifacts": ["Generic.Client.Info"], "expires_ms": 1 }),
    )?;
    assert_eq!(status, 400, "an expiry in the past is refused");
    Ok(())
}

#[test]
fn a_start_whose_body_arrives_late_is_still_answered() -> Result<()> {
    // Goal: a client slow to send its (unused) body gets the answer to start and stop, not
    // a reset stream. Method: HTTP/2 POSTs whose body follows the headers 300 ms later.
    let deployment = Deployment::start()?;
    let created = post(
        &deployment,
        "/api/v1/hunts",
        json!({"artifacts": ["Generic.Client.Info"], "condition": {"labels": [], "os": ""}, "expires_ms": 0}),
    )?;
    let id = created["hunt_id"].as_str().context("hunt id")?.to_string();
    for (action, state) in [("start", "running"), ("stop", "stopped")] {
        let (status, body) = deployment.api().post_h2_late_body(
            &format!("/api/v1/hunts/{id}/{action}"),
            b"{}",
            Duration::from_millis(300),
        )?;
        let body: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{action}: {}", String::from_utf8_lossy(&body)))?;
        ensure!(
            status == 200 && body["state"] == state,
            "{action}: {status} {body}"
        );
        ensure!(
            hunt(&deployment, &id)?["state"] == state,
            "{action} took effect"
        );
    }
    // Every request is timed, reads and changes apart: create, start and stop; the two
    // GETs of the hunt and the first of these metrics reads (each is counted once answered).
    let writes =
        deployment.metric("packhunt_api_request_duration_seconds_count{kind=\"write\"}")?;
    let reads = deployment.metric("packhunt_api_request_duration_seconds_count{kind=\"read\"}")?;
    ensure!(writes == 3 && reads == 3, "writes {writes}, reads {reads}");
    Ok(())
}

/// What is wrong with the hunt's flows on disk: a flow folder (every flow of this test is
/// the hunt's) without request.json naming the hunt or without status.json, one that is
/// not a participant, a recruiting journal line that is no participant, clients listed
/// twice in the participants file; and with `temporary_files`, a temporary file a stopped
/// write left (a kill -9 may leave one of any atomic write, such as a running flow's
/// status update; a clean stop may not).
fn unrecorded_flows(
    deployment: &Deployment,
    hunt_id: &str,
    temporary_files: bool,
) -> Result<Vec<String>> {
    let hunts = deployment.datastore().join("hunts");
    let lines = |ext: &str| -> Result<Vec<(String, String)>> {
        let text = match std::fs::read_to_string(hunts.join(format!("{hunt_id}.{ext}"))) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(c, f)| (c.to_string(), f.to_string()))
            .collect())
    };
    let participants = lines("participants")?;
    let recorded: std::collections::HashSet<(String, String)> =
        participants.iter().cloned().collect();
    let mut problems = Vec::new();
    let clients: std::collections::HashSet<&String> = participants.iter().map(|(c, _)| c).collect();
    if clients.len() != participants.len() {
        problems.push(format!(
            "{} participant lines for {} clients",
            participants.len(),
            clients.len()
        ));
    }
    for (client, flow) in lines("recruiting")? {
        if !recorded.contains(&(client.clone(), flow.clone())) {
            problems.push(format!(
                "{client}/{flow}: in the journal, not a participant"
            ));
        }
    }
    for client in std::fs::read_dir(deployment.datastore().join("clients"))? {
        let client = client?;
        let collections = client.path().join("collections");
        let Ok(flows) = std::fs::read_dir(&collections) else {
            continue;
        };
        let client = client.file_name().to_string_lossy().to_string();
        for flow in flows {
            let flow = flow?;
            let name = flow.file_name().to_string_lossy().to_string();
            let at = format!("{client}/{name}");
            for file in std::fs::read_dir(flow.path())? {
                let file = file?.file_name().to_string_lossy().to_string();
                if temporary_files && file.contains(".tmp.") {
                    problems.push(format!("{at}: a temporary {file}"));
                }
            }
            match std::fs::read(flow.path().join("request.json")) {
                Ok(bytes) => {
                    let request: Value = serde_json::from_slice(&bytes)?;
                    if request["hunt_id"] != hunt_id {
                        problems.push(format!("{at}: not the hunt's"));
                    }
                }
                Err(e) => problems.push(format!("{at}: no request.json: {e}")),
            }
            if !flow.path().join("status.json").exists() {
                problems.push(format!("{at}: no status.json"));
            }
            if !recorded.contains(&(client.clone(), name.clone())) {
                problems.push(format!("{at}: not a participant"));
            }
        }
    }
    Ok(problems)
}

// Goal: a master stopped while a hunt recruits leaves no flow the hunt does not know.
// Given SIGTERM it stops recruiting and finishes the batches being written before it
// exits (nothing half-written, every hunt flow a participant); killed with kill -9 mid-batch,
// its next start settles what the recruiting journal names. Afterwards every agent is
// recruited exactly once and every flow completes.
#[test]
fn a_master_stopped_or_killed_mid_recruitment_leaves_every_hunt_flow_recorded() -> Result<()> {
    const AGENTS: usize = 1_500;
    let mut deployment = Deployment::start_with(|t| {
        set_keys(
            t,
            &[
                ("hunt_recruitment_per_second", "400"),
                ("max_connections_per_second", "100000"),
            ],
        )
    })?;
    let _fleet = loadgen(&deployment, AGENTS, "fleet")?;
    deployment.wait_connected(AGENTS, Duration::from_secs(120))?;
    let created = post(
        &deployment,
        "/api/v1/hunts",
        json!({ "artifacts": ["Linux.Sys.Users"], "condition": { "os": "linux" } }),
    )?;
    let id = created["hunt_id"].as_str().unwrap().to_string();
    post(&deployment, &format!("/api/v1/hunts/{id}/start"), json!({}))?;
    let scheduled = |h: &Value| h["scheduled"].as_u64().unwrap_or(0);

    wait_hunt(&deployment, &id, Duration::from_secs(60), |h| {
        scheduled(h) >= 200
    })?;
    deployment.terminate_frontend()?;
    let exit = deployment.wait_frontend_exit(Duration::from_secs(60))?;
    assert!(exit.success(), "the master stops cleanly: {exit}");
    let problems = unrecorded_flows(&deployment, &id, true)?;
    assert!(
        problems.is_empty(),
        "after a SIGTERM mid-recruitment: {problems:#?}"
    );
    let recruited_before = participants(&deployment, &id)?.len();

    deployment.start_frontend()?;
    wait_hunt(&deployment, &id, Duration::from_secs(120), |h| {
        scheduled(h) as usize >= recruited_before + 300
    })?;
    deployment.kill_frontend()?;
    deployment.start_frontend()?;
    let done = wait_hunt(&deployment, &id, Duration::from_secs(240), |h| {
        h["completed"] == AGENTS as u64
    })?;
    assert_eq!(done["scheduled"], AGENTS as u64, "each agent once: {done}");
    let problems = unrecorded_flows(&deployment, &id, false)?;
    assert!(
        problems.is_empty(),
        "after a kill -9 mid-recruitment: {problems:#?}"
    );
    assert_eq!(participants(&deployment, &id)?.len(), AGENTS);
    Ok(())
}

/// The next task on `agent`'s stream (whatever its flow), within 10 s.
fn next_task(agent: &mut common::RawAgent) -> Result<packhunt::protocol::pb::Task> {
    for _ in 0..16 {
        if let packhunt::protocol::pb::server_message::Kind::Task(task) = agent.next_message()? {
            return Ok(task);
        }
    }
    anyhow::bail!("no task among the first messages")
}

// Goal: a hunt's flow is one queue entry until its agent answers: no folder before, the
// API shows it scheduled and lists it, its task names the hunt; the first answer makes
// the folder with the hunt's request; a stop with cancel_flows closes the flow of an agent
// that never answered, whose later rows are refused, and the hunt counts it cancelled.
// Method: two raw agents on a master, one answering and one silent.
#[test]
fn a_hunt_flow_is_made_by_its_first_answer_and_a_stop_cancels_the_unanswered() -> Result<()> {
    use common::cancel::{send_end, send_rows, stored_rows, ARTIFACT};
    let deployment = Deployment::start()?;
    let mut answering = common::RawAgent::connect(&deployment)?;
    let mut silent = common::RawAgent::connect(&deployment)?;
    deployment.wait_connected(2, Duration::from_secs(30))?;
    let created = post(
        &deployment,
        "/api/v1/hunts",
        json!({ "artifacts": [ARTIFACT], "condition": { "os": "linux" } }),
    )?;
    let id = created["hunt_id"].as_str().unwrap().to_string();
    post(&deployment, &format!("/api/v1/hunts/{id}/start"), json!({}))?;
    let answering_task = next_task(&mut answering)?;
    let silent_task = next_task(&mut silent)?;
    assert_eq!(answering_task.hunt_id, id, "the task names its hunt");
    let clients = deployment.datastore().join("clients");
    for (agent, task) in [(&answering, &answering_task), (&silent, &silent_task)] {
        let client = clients.join(&agent.client_id);
        assert!(
            !client.join("collections").join(&task.flow_id).exists(),
            "no flow folder before the first answer"
        );
        let entry = std::fs::read_to_string(client.join("tasks").join(&task.flow_id))?;
        assert!(
            entry.contains(&id),
            "the queue entry names the hunt: {entry}"
        );
        let (status, doc) = deployment.api().get(&format!(
            "/api/v1/clients/{}/collections/{}",
            agent.client_id, task.flow_id
        ))?;
        assert_eq!(
            (status, doc["state"].as_str()),
            (200, Some("scheduled")),
            "{doc}"
        );
        let (_, list) = deployment
            .api()
            .get(&format!("/api/v1/clients/{}/collections", agent.client_id))?;
        assert_eq!(list["items"][0]["flow_id"], task.flow_id, "{list}");
    }

    let flow = &answering_task.flow_id;
    assert_eq!(send_rows(&mut answering, flow, 0, 3)?, 200);
    let folder = clients
        .join(&answering.client_id)
        .join("collections")
        .join(flow);
    let request: Value = serde_json::from_slice(&std::fs::read(folder.join("request.json"))?)?;
    assert_eq!(request["hunt_id"], id.as_str(), "{request}");
    assert_eq!(request["artifacts"][0]["name"], ARTIFACT, "{request}");
    assert_eq!(
        request["create_time_us"].as_u64(),
        Some(answering_task.create_time_us),
        "the recruit's time, as its task said"
    );
    assert_eq!(send_end(&mut answering, flow, 3, 1)?, 200);
    wait_hunt(&deployment, &id, Duration::from_secs(30), |h| {
        h["completed"] == 1
    })?;

    let (status, stopped) = deployment.api().post(
        &format!("/api/v1/hunts/{id}/stop"),
        &json!({ "cancel_flows": true }),
    )?;
    assert_eq!(status, 200, "{stopped}");
    let done = wait_hunt(&deployment, &id, Duration::from_secs(30), |h| {
        h["cancelled"] == 1
    })?;
    assert_eq!(
        (
            done["scheduled"].as_u64(),
            done["completed"].as_u64(),
            done["total_rows"].as_u64()
        ),
        (Some(2), Some(1), Some(3)),
        "{done}"
    );
    let silent_flow = &silent_task.flow_id;
    let (_, doc) = deployment.api().get(&format!(
        "/api/v1/clients/{}/collections/{silent_flow}",
        silent.client_id
    ))?;
    assert_eq!(doc["state"], "cancelled", "{doc}");
    assert_eq!(
        send_rows(&mut silent, silent_flow, 0, 2)?,
        409,
        "rows after the cancel are refused"
    );
    assert_eq!(
        stored_rows(&deployment.datastore(), &silent.client_id, silent_flow),
        0
    );
    Ok(())
}

/// Goal: a loadgen agent holding its collection (`--collect-ms`, as a real collection
/// takes time) keeps serving its stream: a stop with `cancel_flows` reaches it mid-hold
/// and it answers nothing, while a short hold answers once it ends. Method: two fleets
/// of loadgen agents, one holding for ten minutes and one for half a second, two hunts;
/// the hunts' counts and the rows on disk are read back.
#[test]
fn held_collections_answer_when_their_hold_ends_and_a_cancel_reaches_them_mid_hold() -> Result<()> {
    const AGENTS: usize = 10;
    let deployment = Deployment::start()?;
    let spawn = |name: &str, hold_ms: &str| -> Result<Proc> {
        common::spawn_loadgen(
            &deployment.client_config(),
            AGENTS,
            300,
            &deployment.path().join(format!("{name}.json")),
            &["--collect-ms", hold_ms, "--hostname-prefix", name],
        )
    };
    let _long = spawn("long-", "600000")?;
    let _short = spawn("short-", "500")?;
    deployment.wait_connected(2 * AGENTS, Duration::from_secs(60))?;
    // Labels split the fleets: the client search by hostname, then a label per fleet.
    for fleet in ["long-", "short-"] {
        let found = wait_until(
            &format!("the {fleet} fleet's facts listed"),
            Duration::from_secs(60),
            || {
                let (_, found) = deployment
                    .api()
                    .get(&format!("/api/v1/clients?search=host:{fleet}&limit=100"))?;
                Ok(found)
            },
            |found| found["items"].as_array().map(Vec::len) == Some(AGENTS),
        )?;
        for item in found["items"].as_array().context("items")? {
            let id = item["client_id"].as_str().context("client_id")?;
            post(
                &deployment,
                &format!("/api/v1/clients/{id}/labels"),
                json!({ "add": [fleet.trim_end_matches('-')] }),
            )?;
        }
    }
    let start_hunt = |label: &str| -> Result<String> {
        let created = post(
            &deployment,
            "/api/v1/hunts",
            json!({ "artifacts": ["Generic.Client.Info"], "condition": { "labels": [label] } }),
        )?;
        let id = created["hunt_id"].as_str().context("hunt_id")?.to_string();
        post(&deployment, &format!("/api/v1/hunts/{id}/start"), json!({}))?;
        Ok(id)
    };
    let (long, short) = (start_hunt("long")?, start_hunt("short")?);
    let n = AGENTS as u64;
    let done = wait_hunt(&deployment, &short, Duration::from_secs(60), |h| {
        h["completed"] == n
    })?;
    assert_eq!(
        done["total_rows"], n,
        "one row per agent after its hold: {done}"
    );
    let held = wait_hunt(&deployment, &long, Duration::from_secs(60), |h| {
        h["scheduled"] == n
    })?;
    assert_eq!(
        (held["completed"].as_u64(), held["errors"].as_u64()),
        (Some(0), Some(0)),
        "still holding: {held}"
    );
    let stopped = post(
        &deployment,
        &format!("/api/v1/hunts/{long}/stop"),
        json!({ "cancel_flows": true }),
    )?;
    assert_eq!(stopped["cancelling"], n, "{stopped}");
    let cancelled = wait_hunt(&deployment, &long, Duration::from_secs(60), |h| {
        h["cancelled"] == n
    })?;
    assert_eq!(cancelled["total_rows"], 0, "nothing answered: {cancelled}");
    Ok(())
}
