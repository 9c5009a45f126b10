//! Goal: a master and minions sharing one datastore act as one frontend: the master sees
//! every agent wherever it is connected and tasks it there; a minion killed mid-upload
//! loses no row (its agents move and resume from the shared datastore); a master restart
//! leaves minions and agents running and tasking works again once they relink; a minion
//! whose certificate the CA did not sign (or that claims another minion's name) is refused.
//! Method: real frontend processes on loopback ports with one datastore folder, loadgen
//! fleets and test-driven agents; counts compared between loadgen's report, the API and
//! the files on disk.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{
    cluster, count_lines, flow_results, frontend, frontend_of, run_fleet, wait_frontend_of,
    wait_frontends, wait_until, wait_until_every, Deployment, Minion, RawAgent,
};
use serde_json::Value;

#[test]
fn master_tasks_agents_on_every_frontend_and_results_land() -> Result<()> {
    let (deployment, minions) = cluster(2)?;
    let master = format!("127.0.0.1:{}", deployment.agent_port);
    let clients = 300;
    // The generated client config lists all three frontends; each agent picks one.
    run_fleet(
        &deployment,
        clients,
        &deployment.client_config(),
        &[],
        &["Generic.Client.Info", "Linux.Sys.Users"],
        |ids| {
            let items = wait_frontends(&deployment, |_| true, "frontends")?;
            assert_eq!(items.len(), 3);
            let mut total = 0;
            for name in [&master, &minions[0].name, &minions[1].name] {
                let f = frontend(&items, name);
                assert_eq!(f["up"], true);
                let n = f["connected_clients"].as_u64().unwrap();
                assert!(n > 0, "agents spread over every frontend: {items:?}");
                total += n;
            }
            assert_eq!(total, clients as u64, "each agent counted once: {items:?}");
            assert_eq!(frontend(&items, &master)["role"], "master");
            assert_eq!(frontend(&items, &minions[0].name)["role"], "minion");
            // The client list names where each agent is.
            let (_, list) = deployment.api().get(&format!(
                "/api/v1/clients?connected=true&limit={}",
                ids.len()
            ))?;
            let on_minion = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["frontend"] == minions[1].name.as_str())
                .count();
            assert_eq!(
                on_minion as u64,
                frontend(&items, &minions[1].name)["connected_clients"]
                    .as_u64()
                    .unwrap()
            );
            Ok(())
        },
    )?;
    // Every finished flow was reported once, by the frontend that served it.
    let items = wait_frontends(
        &deployment,
        |items| {
            items
                .iter()
                .map(|f| f["flows_finished"].as_u64().unwrap())
                .sum::<u64>()
                == clients as u64
        },
        "finished flows reported",
    )?;
    assert!(
        items
            .iter()
            .all(|f| f["flows_finished"].as_u64().unwrap() > 0),
        "{items:?}"
    );
    // Tasks reached the minions' agents over the replication stream.
    for minion in &minions {
        assert!(
            minion.metric(&deployment, "packhunt_tasks_pushed_total")? > 0,
            "{} pushed tasks",
            minion.name
        );
        assert_eq!(
            minion.metric(&deployment, "packhunt_replication_links_up")?,
            1
        );
        assert_eq!(
            minion.metric(
                &deployment,
                "packhunt_replication_dropped_total{queue=\"outbound\"}"
            )?,
            0
        );
    }
    assert_eq!(deployment.metric("packhunt_replication_links_up")?, 2);
    Ok(())
}

#[test]
fn a_minion_killed_mid_upload_loses_no_row() -> Result<()> {
    let (deployment, mut minions) = cluster(2)?;
    let clients = 60;
    let ports = [
        deployment.agent_port,
        minions[0].agent_port,
        minions[1].agent_port,
    ];
    // Small uploads and long Pslist answers: each flow spans ~50 batches.
    let config =
        deployment.client_config_for("small.client.config.toml", &ports, Some(16 * 1024))?;
    let report = deployment.path().join("report.json");
    let mut loadgen =
        common::spawn_loadgen_for_flows(&config, clients, &report, &["--pslist-rows", "3000"])?;
    let ids = deployment.wait_connected(clients, Duration::from_secs(60))?;
    let victim = minions[0].name.clone();
    let on_victim: Vec<String> = ids
        .iter()
        .filter(|id| {
            frontend_of(&deployment, id).ok().flatten().as_deref() == Some(victim.as_str())
        })
        .cloned()
        .collect();
    assert!(
        !on_victim.is_empty(),
        "some agents are on the minion to be killed"
    );
    let api = deployment.api();
    let flows: Vec<(String, String)> = ids
        .iter()
        .map(|id| Ok((id.clone(), api.collect(id, &["Linux.Sys.Pslist"])?)))
        .collect::<Result<_>>()?;
    // Kill as soon as one of the victim's agents has rows on disk.
    let watched = flows.iter().find(|(c, _)| c == &on_victim[0]).unwrap();
    // Looked at every 2 ms: the kill must land while uploads are still in flight.
    let first_rows = flow_results(
        &deployment.datastore(),
        &watched.0,
        &watched.1,
        "Linux.Sys.Pslist",
    );
    wait_until_every(
        "rows from the victim's agent on disk",
        Duration::from_secs(60),
        Duration::from_millis(2),
        || Ok(count_lines(&first_rows)),
        |rows| *rows > 0,
    )?;
    minions[0].kill()?;
    let unfinished = api.unfinished_flows(&flows, &on_victim);
    assert!(
        unfinished > 0,
        "the kill caught the victim's agents mid-flow"
    );

    let statuses = deployment.wait_flows(&flows, Duration::from_secs(180))?;
    assert!(
        loadgen.0.wait()?.success(),
        "loadgen exits once every flow is delivered"
    );
    let sent = common::loadgen_rows_sent(&report)?;
    assert_eq!(sent.len(), clients);
    common::assert_rows_as_sent(&statuses, &sent);
    for (client, flow) in flows.iter().filter(|(c, _)| on_victim.contains(c)) {
        let on_disk = count_lines(&flow_results(
            &deployment.datastore(),
            client,
            flow,
            "Linux.Sys.Pslist",
        ));
        assert_eq!(
            on_disk as u64,
            sent[flow.as_str()],
            "flow {flow} of a moved agent, on disk"
        );
    }
    let items = wait_frontends(
        &deployment,
        |items| frontend(items, &victim)["up"] == false,
        "the killed minion shown down",
    )?;
    assert_eq!(frontend(&items, &victim)["connected_clients"], 0);
    let report: Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    assert!(
        report["reconnects"].as_u64().unwrap() >= on_victim.len() as u64,
        "the victim's agents reconnected elsewhere: {report}"
    );
    Ok(())
}

/// Sends one Users row as batch 0 of `flow`, then the flow's end; both must be acknowledged.
fn finish_with_one_row(agent: &mut RawAgent, flow: &str) -> Result<()> {
    use packhunt::protocol::pb::{self, upload::Kind};
    let batch = pb::ResultBatch {
        flow_id: flow.into(),
        artifact: "Linux.Sys.Users".into(),
        seq: 0,
        jsonl: "{\"user\":\"root\"}\n".into(),
        row_count: 1,
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(Kind::Result(batch)),
    })?;
    anyhow::ensure!(reply.status == 200, "batch answered {}", reply.status);
    let artifacts = vec![pb::ArtifactRows {
        name: "Linux.Sys.Users".into(),
        rows: 1,
        batches: 1,
    }];
    let done = pb::FlowStatus {
        flow_id: flow.into(),
        artifacts,
        ..Default::default()
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(Kind::Status(done)),
    })?;
    anyhow::ensure!(reply.status == 200, "flow status answered {}", reply.status);
    Ok(())
}

#[test]
fn minions_serve_through_a_master_restart_and_tasking_works_again() -> Result<()> {
    let (mut deployment, minions) = cluster(1)?;
    let config = deployment.client_config_for(
        "minion.client.config.toml",
        &[minions[0].agent_port],
        None,
    )?;
    let mut agent = RawAgent::connect_with(&config)?;
    deployment.wait_connected(1, Duration::from_secs(20))?;
    assert_eq!(
        frontend_of(&deployment, &agent.client_id)?.as_deref(),
        Some(minions[0].name.as_str())
    );
    let first = agent.tasked(&deployment, &["Linux.Sys.Users"])?;

    deployment.kill_frontend()?;
    // Without a master the minion keeps serving: the result lands on the shared datastore.
    finish_with_one_row(&mut agent, &first)?;
    deployment.start_frontend()?;
    // The minion relinks and resends its agents: the restarted master knows the agent
    // without it reconnecting.
    wait_frontends(
        &deployment,
        |items| {
            items.iter().all(|f| f["up"] == true)
                && frontend(items, &minions[0].name)["connected_clients"] == 1
        },
        "minion relinked with its agent",
    )?;
    assert_eq!(
        frontend_of(&deployment, &agent.client_id)?.as_deref(),
        Some(minions[0].name.as_str())
    );
    let (_, status) = deployment.api().get(&format!(
        "/api/v1/clients/{}/collections/{first}",
        agent.client_id
    ))?;
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["total_rows"], 1);
    let second = agent.tasked(&deployment, &["Linux.Sys.Users"])?;
    finish_with_one_row(&mut agent, &second)?;
    // Flow states cross the link: the master counts the minion's finished flow.
    wait_frontends(
        &deployment,
        |items| frontend(items, &minions[0].name)["flows_finished"] == 1,
        "the minion's finished flow reported",
    )?;
    assert!(
        minions[0].metric(&deployment, "packhunt_replication_link_failures_total")? >= 1,
        "the broken link was counted"
    );
    Ok(())
}

#[test]
fn a_task_scheduled_while_its_agent_is_between_frontends_is_delivered_where_it_lands() -> Result<()>
{
    let (deployment, minions) = cluster(2)?;
    let to_first =
        deployment.client_config_for("first.client.config.toml", &[minions[0].agent_port], None)?;
    let to_second = deployment.client_config_for(
        "second.client.config.toml",
        &[minions[1].agent_port],
        None,
    )?;
    let agent = RawAgent::connect_with(&to_first)?;
    let (client, identity) = (agent.client_id.clone(), agent.identity.clone());
    deployment.wait_connected(1, Duration::from_secs(20))?;
    drop(agent);
    wait_until(
        "the master sees the agent leave",
        Duration::from_secs(20),
        || frontend_of(&deployment, &client),
        |on| on.is_none(),
    )?;
    let flow = deployment
        .api()
        .collect(&client, &["Generic.Client.Info"])?;
    let mut agent = RawAgent::connect_as(&to_second, identity)?;
    agent.expect_task(&flow)?;
    wait_frontend_of(&deployment, &client, &minions[1].name)?;
    Ok(())
}

#[test]
fn minions_with_a_foreign_or_borrowed_certificate_are_refused() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    let mut rogue = deployment.add_minion()?;
    let mut impostor = deployment.add_minion()?;
    deployment.start_frontend()?;
    let server_config = deployment.path().join("server.config.toml");
    let shared: toml::Value = toml::from_str(&std::fs::read_to_string(&server_config)?)?;

    // The rogue's copy of the config carries a certificate from another deployment's CA.
    let other = Deployment::generate_with(|_| {})?;
    let foreign = other.add_minion()?;
    let foreign_entry = common::secrets::minion_entry(other.path(), &foreign.name)?;
    start_with_entry(&deployment, &shared, &mut rogue, "rogue", &foreign_entry)?;
    // The impostor presents the rogue's real, CA-signed certificate under its own name.
    let rogue_entry = common::secrets::minion_entry(deployment.path(), &rogue.name)?;
    start_with_entry(
        &deployment,
        &shared,
        &mut impostor,
        "impostor",
        &rogue_entry,
    )?;

    wait_until(
        "both links refused",
        Duration::from_secs(30),
        || deployment.metric("packhunt_replication_refused_total"),
        |refused| *refused >= 2,
    )?;
    let (_, body) = deployment.api().get("/api/v1/frontends")?;
    let items = body["items"].as_array().unwrap();
    assert_eq!(frontend(items, &rogue.name)["up"], false);
    assert_eq!(frontend(items, &impostor.name)["up"], false);
    assert_eq!(deployment.metric("packhunt_replication_links_up")?, 0);
    assert!(impostor.metric(&deployment, "packhunt_replication_link_failures_total")? >= 1);
    Ok(())
}

/// Starts `minion` from a copy of the shared config whose entry for it carries the
/// certificate and key of `entry`.
fn start_with_entry(
    deployment: &Deployment,
    shared: &toml::Value,
    minion: &mut Minion,
    label: &str,
    entry: &toml::Value,
) -> Result<()> {
    let mut copy = shared.clone();
    for m in copy["minions"].as_array_mut().unwrap() {
        if m["name"].as_str() == Some(&minion.name) {
            let m = m.as_table_mut().unwrap();
            m.insert("certificate".into(), entry["certificate"].clone());
            m.insert("private_key".into(), entry["private_key"].clone());
        }
    }
    let path = deployment
        .path()
        .join(format!("{label}.server.config.toml"));
    std::fs::write(&path, toml::to_string(&copy)?)?;
    deployment.start_minion_with_config(minion, &path)
}
