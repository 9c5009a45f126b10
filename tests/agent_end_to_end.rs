//! Goal: a real `packhunt client` is tasked through the API and its rows land on disk
//! and come back through the results API, paged; the API refuses callers without the
//! right credentials. Method: a generated deployment, a frontend process and an agent
//! process on loopback ports.

mod common;

use std::time::Duration;

use common::{count_lines, flow_results, Deployment};

#[test]
fn real_agent_collection_lands_on_disk_and_pages_through_the_api() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let agent = common::start_agent(&deployment)?;
    let clients = deployment.wait_connected(1, Duration::from_secs(20))?;
    let client = &clients[0];
    let api = deployment.api();

    let flow = api.collect(client, &["Generic.Client.Info", "Linux.Sys.Pslist"])?;
    let statuses =
        deployment.wait_flows(&[(client.clone(), flow.clone())], Duration::from_secs(30))?;
    let status = &statuses[0];
    assert_eq!(status["state"], "finished", "{status}");

    let pslist_rows = status["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Linux.Sys.Pslist")
        .unwrap()["rows"]
        .as_u64()
        .unwrap();
    assert!(pslist_rows > 1, "a Linux host runs more than one process");
    let info_path = flow_results(
        &deployment.datastore(),
        client,
        &flow,
        "Generic.Client.Info",
    );
    let pslist_path = flow_results(&deployment.datastore(), client, &flow, "Linux.Sys.Pslist");
    assert_eq!(count_lines(&info_path), 1);
    assert_eq!(count_lines(&pslist_path) as u64, pslist_rows);
    assert_eq!(status["total_rows"].as_u64().unwrap(), pslist_rows + 1);

    // Page through the rows three at a time: together they are the file, in order.
    let on_disk: Vec<serde_json::Value> = std::fs::read_to_string(&pslist_path)?
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut paged = Vec::new();
    let mut start = 0;
    loop {
        let (code, page) = api.get(&format!(
            "/api/v1/clients/{client}/collections/{flow}/results?artifact=Linux.Sys.Pslist&start_row={start}&rows=3"
        ))?;
        assert_eq!(code, 200);
        assert_eq!(page["total_rows"].as_u64().unwrap(), pslist_rows);
        assert_eq!(page["start_row"].as_u64().unwrap(), start);
        let rows = page["rows"].as_array().unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 3);
        paged.extend(rows.iter().cloned());
        start += rows.len() as u64;
    }
    assert_eq!(paged, on_disk);
    let (_, info) = api.get(&format!(
        "/api/v1/clients/{client}/collections/{flow}/results?artifact=Generic.Client.Info"
    ))?;
    assert!(!info["rows"][0]["hostname"].as_str().unwrap().is_empty());

    // The collection is listed for the client, and the client shows its hostname.
    let (_, list) = api.get(&format!("/api/v1/clients/{client}/collections"))?;
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["flow_id"] == flow.as_str()));
    let (_, found) = api.get(&format!("/api/v1/clients?search={}", &client[..6]))?;
    assert_eq!(found["total"], 1);
    let (_, online) = api.get("/api/v1/clients?connected=true")?;
    assert_eq!(online["items"][0]["client_id"], client.as_str());

    // Offline: the task waits on disk, scheduled; the same agent (same writeback, so the
    // same client id) gets it as soon as it reconnects.
    drop(agent);
    common::wait_until(
        "the agent shown as disconnected",
        Duration::from_secs(10),
        || Ok(deployment.api().get("/api/v1/clients")?.1["items"][0]["connected"].clone()),
        |connected| *connected != true,
    )?;
    let (_, online) = api.get("/api/v1/clients?connected=true")?;
    assert_eq!(online["total"], 0, "no agent is connected: {online}");
    let (_, known) = api.get("/api/v1/clients")?;
    assert_eq!(known["total"], 1, "the agent is still known: {known}");
    assert_eq!(api.get("/api/v1/clients?connected=maybe")?.0, 400);
    let queued = api.collect(client, &["Linux.Sys.Users"])?;
    let (_, status) = api.get(&format!("/api/v1/clients/{client}/collections/{queued}"))?;
    assert_eq!(status["state"], "scheduled");
    let _agent = common::start_agent(&deployment)?;
    let statuses =
        deployment.wait_flows(&[(client.clone(), queued.clone())], Duration::from_secs(30))?;
    assert_eq!(statuses[0]["state"], "finished");
    let users = flow_results(&deployment.datastore(), client, &queued, "Linux.Sys.Users");
    assert!(std::fs::read_to_string(users)?.contains("\"name\":\"root\""));
    Ok(())
}

/// A fleet that has just connected is tasked before every ClientInfo has landed (the
/// folder it makes did not exist yet): the connected agent is tasked all the same, and its
/// facts land beside the collection afterwards.
#[test]
fn an_agent_tasked_before_its_facts_land_gets_the_task() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let mut agent = common::RawAgent::connect_without_facts(
        &deployment.client_config(),
        packhunt::tls::agent_key::AgentIdentity::generate()?,
    )?;
    // Connected, though not listed from disk yet: it has no folder.
    common::wait_frontends(
        &deployment,
        |items| items.iter().any(|f| f["connected_clients"] == 1),
        "the agent connected",
    )?;
    let api = deployment.api();
    let (code, body) = api.post(
        &format!("/api/v1/clients/{}/collections", agent.client_id),
        &serde_json::json!({"artifacts": ["Generic.Client.Info"]}),
    )?;
    assert_eq!(
        code, 200,
        "a connected agent without facts yet is tasked: {body}"
    );
    let flow = body["flow_id"].as_str().unwrap().to_string();
    agent.expect_task(&flow)?;
    let (_, status) = api.get(&format!(
        "/api/v1/clients/{}/collections/{flow}",
        agent.client_id
    ))?;
    assert_eq!(status["state"], "scheduled", "{status}");
    agent.send_facts()?;
    // The facts reach the client list through the shard's next event batch to the hub.
    let found = common::client_index::wait_one(&api, &agent.client_id, "the agent is listed")?;
    assert_eq!(found["hostname"], "raw-agent", "{found}");
    assert_eq!(found["connected"], true, "{found}");
    Ok(())
}

#[test]
fn api_refuses_missing_or_wrong_credentials() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let api = deployment.api();
    for path in [
        "/api/v1/clients",
        "/api/v1/artifacts",
        "/api/v1/frontends",
        "/metrics",
    ] {
        let (code, _) = api.without_auth().request("GET", path, None)?;
        assert_eq!(code, 401, "{path} without credentials");
        let (code, _) = api
            .with_auth("admin", "not-the-password")
            .request("GET", path, None)?;
        assert_eq!(code, 401, "{path} with a wrong password");
        let (code, _) = api
            .with_auth("nobody", common::ADMIN_PASSWORD)
            .request("GET", path, None)?;
        assert_eq!(code, 401, "{path} with an unknown user");
        let (code, _) = api.request("GET", path, None)?;
        assert_eq!(code, 200, "{path} with the right credentials");
    }
    let (code, body) = api.without_auth().post(
        "/api/v1/clients/C.0123456789abcdef/collections",
        &serde_json::json!({"artifacts": ["Generic.Client.Info"]}),
    )?;
    assert_eq!(code, 401);
    assert!(body["error"].is_string());
    let unauthorized = deployment.metric("packhunt_api_unauthorized_total")?;
    assert_eq!(unauthorized, 13);
    Ok(())
}

#[test]
fn api_rejects_bad_collection_requests_with_a_message() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let api = deployment.api();
    let cases = [
        (
            "/api/v1/clients/C.0123456789abcdef/collections",
            serde_json::json!({"artifacts": ["No.Such.Artifact"]}),
            400,
        ),
        (
            "/api/v1/clients/C.0123456789abcdef/collections",
            serde_json::json!({"artifacts": ["Generic.Files.Glob"], "parameters": {"Generic.Files.Glob": {"nope": "1"}}}),
            400,
        ),
        (
            "/api/v1/clients/..%2F..%2Fetc/collections",
            serde_json::json!({"artifacts": ["Generic.Client.Info"]}),
            400,
        ),
        (
            "/api/v1/clients/../../etc/collections",
            serde_json::json!({"artifacts": ["Generic.Client.Info"]}),
            404,
        ),
        (
            "/api/v1/clients/C.0123456789abcdef/collections",
            serde_json::json!({"artifacts": ["Generic.Client.Info"]}),
            404,
        ),
    ];
    for (path, body, want) in cases {
        let (code, answer) = api.post(path, &body)?;
        assert_eq!(code, want, "{path} {body} -> {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    Ok(())
}

#[test]
fn shared_priority_baseline_serves_the_api_and_agents() -> anyhow::Result<()> {
    // Goal: `gui.priority = "shared"` (GUI/API on agent shard 0 at equal priority, the
    // baseline the benchmarks compare against) starts and works end to end.
    let deployment = Deployment::start_with(|text| {
        *text = text.replace("priority = \"executor\"", "priority = \"shared\"")
    })?;
    let _agent = common::start_agent(&deployment)?;
    let client = deployment
        .wait_connected(1, Duration::from_secs(20))?
        .remove(0);
    let flow = deployment
        .api()
        .collect(&client, &["Generic.Client.Info"])?;
    let status = deployment.wait_flows(&[(client, flow)], Duration::from_secs(20))?;
    assert_eq!(status[0]["state"], "finished");
    Ok(())
}
