//! A minion is trusted to report its own agents and nothing more. Goal: a replication
//! client holding a configured minion's real certificate (a compromised minion) cannot
//! change what the master believes about agents connected elsewhere, cannot push a task
//! of its own making to any agent, cannot send what only the master sends, and cannot
//! link under another minion's name; each refusal is counted for that minion.
//! Method: a master, a running minion A and a configured minion B whose certificate a
//! forged link uses; real agents (the comms client) on the master and on A; the API and
//! /metrics show what the master believes.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::fleet_trust::ForgedMinion;
use common::{frontend, wait_frontend_of, wait_until, Deployment, RawAgent};
use packhunt::replication::pb::{self, envelope::Kind};

/// The master's count of `kind` refusals from minion `name` (0 before the first).
fn refused(deployment: &Deployment, name: &str, kind: &str) -> u64 {
    let series = format!(
        "packhunt_fleet_minion_messages_refused_total{{frontend=\"{name}\",kind=\"{kind}\"}}"
    );
    deployment.metric(&series).unwrap_or(0)
}

fn hostname_of(deployment: &Deployment, client: &str) -> Result<String> {
    let (_, body) = deployment
        .api()
        .get(&format!("/api/v1/clients?search={client}"))?;
    Ok(body["items"][0]["hostname"]
        .as_str()
        .unwrap_or("")
        .to_string())
}

fn forged_task_frame(flow: &str) -> bytes::Bytes {
    use packhunt::protocol::pb as agent;
    packhunt::protocol::tasks::task_frame(agent::Task {
        flow_id: flow.to_string(),
        artifacts: vec![agent::ArtifactRequest {
            name: "Linux.Sys.Pslist".into(),
            parameters: Default::default(),
        }],
        create_time_us: 0,
        hunt_id: String::new(),
        limits: None,
    })
}

#[test]
fn a_compromised_minion_cannot_speak_for_agents_it_does_not_hold() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    let mut honest = deployment.add_minion()?;
    let forged_as = deployment.add_minion()?;
    deployment.start_frontend()?;
    deployment.start_minion(&mut honest)?;
    let on_master = deployment.client_config_for(
        "master.client.config.toml",
        &[deployment.agent_port],
        None,
    )?;
    let on_minion =
        deployment.client_config_for("minion.client.config.toml", &[honest.agent_port], None)?;
    let mut at_master = RawAgent::connect_with(&on_master)?;
    let at_minion = RawAgent::connect_with(&on_minion)?;
    let master_name = format!("{}:{}", deployment.host, deployment.agent_port);
    wait_frontend_of(&deployment, &at_master.client_id, &master_name)?;
    wait_frontend_of(&deployment, &at_minion.client_id, &honest.name)?;
    let flow = at_master.tasked(&deployment, &["Generic.Client.Info"])?;

    // Another minion's name on B's certificate is refused at the link.
    assert!(
        ForgedMinion::link_as(&deployment, &forged_as, &honest.name).is_err(),
        "a minion linked under another minion's name"
    );
    let forged = ForgedMinion::link(&deployment, &forged_as)?;
    let victims = [at_master.client_id.clone(), at_minion.client_id.clone()];
    let fake_flow = "F.00000000DEADBEEF";
    for client in &victims {
        for flow_id in [flow.as_str(), fake_flow] {
            forged.send(Kind::FlowState(pb::FlowState {
                client_id: client.clone(),
                flow_id: flow_id.to_string(),
                state: pb::FlowStateKind::Finished.into(),
                total_rows: 1_000_000,
            }))?;
        }
        forged.send(Kind::ClientFacts(pb::ClientFacts {
            client_id: client.clone(),
            hostname: "forged".into(),
            os: "windows".into(),
            version: "0".into(),
            first_seen_ms: 1,
            last_seen_ms: 2,
        }))?;
    }
    // A task of its own making, for a flow that is not queued.
    forged.send(Kind::Notification(pb::Notification {
        client_id: at_master.client_id.clone(),
        flow_id: fake_flow.to_string(),
        frame: forged_task_frame(fake_flow),
    }))?;
    // What only the master sends.
    forged.send(Kind::CancelFlows(pb::CancelFlows {
        flows: vec![pb::CancelledFlow {
            client_id: at_master.client_id.clone(),
            flow_id: flow.clone(),
        }],
        reason: "forged".into(),
    }))?;
    forged.send(Kind::LabelsChanged(pb::LabelsChanged {
        client_id: at_master.client_id.clone(),
        labels: vec!["forged".into()],
    }))?;

    let name = forged_as.name.clone();
    wait_until(
        "every forged message refused and counted",
        Duration::from_secs(20),
        || {
            Ok([
                refused(&deployment, &name, "flow_state"),
                refused(&deployment, &name, "facts"),
                refused(&deployment, &name, "notification"),
                refused(&deployment, &name, "master_only"),
            ])
        },
        |counts| *counts == [4, 2, 1, 2],
    )?;

    // The API still shows the truth.
    for client in &victims {
        assert_eq!(hostname_of(&deployment, client)?, "raw-agent");
    }
    wait_frontend_of(&deployment, &at_master.client_id, &master_name)?;
    wait_frontend_of(&deployment, &at_minion.client_id, &honest.name)?;
    let (_, status) = deployment.api().get(&format!(
        "/api/v1/clients/{}/collections/{flow}",
        at_master.client_id
    ))?;
    let state = status["state"].as_str().unwrap_or("");
    assert!(
        matches!(state, "scheduled" | "in_progress"),
        "the flow is still open: {status}"
    );
    let (_, frontends) = deployment.api().get("/api/v1/frontends")?;
    let items = frontends["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(frontend(&items, &name)["flows_finished"], 0);
    assert_eq!(frontend(&items, &master_name)["flows_finished"], 0);
    // The agent on the master got no task from the forged frame.
    match at_master.next_message() {
        Ok(packhunt::protocol::pb::server_message::Kind::Task(task)) => {
            anyhow::bail!("a task reached the agent: {}", task.flow_id)
        }
        Ok(other) => anyhow::ensure!(
            !matches!(
                other,
                packhunt::protocol::pb::server_message::Kind::Cancel(_)
            ),
            "a forged cancel reached the agent"
        ),
        Err(_) => {} // nothing within 10 s, as it should be
    }
    drop(forged);
    Ok(())
}
