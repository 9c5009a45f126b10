//! Clones: one key (one client id) on two live machines at once. Goal: the fleet detects
//! it wherever the two connect (two shards of one frontend, or two frontends), tells the
//! older connection to re-key so that the two end up as two distinct client ids (exactly
//! one of them the original), and counts it once; while an agent killed and restarted
//! again and again with its own writeback (a reconnect storm) is never taken for a clone.
//! Method: real `packhunt client` processes, the second started from a copy of the first
//! one's writeback file; the API's connected clients and /metrics.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use common::fleet_trust::{agent_config, client_id_in, start_agent_with, writeback_in};
use common::{cluster, wait_until, Deployment, Proc};

/// Starts an agent whose writeback is in `dir` against `ports`; waits for its writeback.
fn agent_in(deployment: &Deployment, dir: &Path, ports: &[u16]) -> Result<Proc> {
    let config = agent_config(deployment, dir, ports)?;
    let agent = start_agent_with(&config)?;
    wait_until(
        "the agent wrote its writeback",
        Duration::from_secs(20),
        || Ok(writeback_in(dir).exists()),
        |exists| *exists,
    )?;
    Ok(agent)
}

/// Copies `from`'s writeback into `to` (the clone's folder).
fn copy_writeback(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::copy(writeback_in(from), writeback_in(to))?;
    Ok(())
}

/// The connected client ids the master lists.
fn connected(deployment: &Deployment) -> Result<Vec<String>> {
    let (_, body) = deployment
        .api()
        .get("/api/v1/clients?connected=true&limit=100")?;
    let mut ids: Vec<String> = body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| c["connected"] == true)
        .filter_map(|c| Some(c["client_id"].as_str()?.to_string()))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Waits until two distinct ids are connected, exactly one of them `original`.
fn wait_split(deployment: &Deployment, original: &str) -> Result<Vec<String>> {
    wait_until(
        "two distinct client ids connected, one of them the original",
        Duration::from_secs(45),
        || connected(deployment),
        |ids| ids.len() == 2 && ids.iter().filter(|id| *id == original).count() == 1,
    )
}

#[test]
fn a_copied_writeback_is_told_to_rekey_and_becomes_a_second_client() -> Result<()> {
    let deployment = Deployment::start()?;
    let (first, second) = (deployment.path().join("a"), deployment.path().join("b"));
    let ports = [deployment.agent_port];
    let _original_agent = agent_in(&deployment, &first, &ports)?;
    let original = client_id_in(&writeback_in(&first))?;
    wait_until(
        "the original connected",
        Duration::from_secs(30),
        || connected(&deployment),
        |ids| ids == std::slice::from_ref(&original),
    )?;
    copy_writeback(&first, &second)?;
    let _clone = agent_in(&deployment, &second, &ports)?;
    let ids = wait_split(&deployment, &original)?;
    // The older connection (the original machine) re-keyed; the copy kept the key.
    let rekeyed = client_id_in(&writeback_in(&first))?;
    assert_ne!(rekeyed, original, "the older agent wrote its new key");
    assert_eq!(client_id_in(&writeback_in(&second))?, original);
    assert!(ids.contains(&rekeyed), "{ids:?}");
    // Stays split (no flapping) and counted once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(connected(&deployment)?, ids);
    assert_eq!(deployment.metric("packhunt_clone_detected_total")?, 1);
    assert_eq!(deployment.metric("packhunt_fleet_rekeys_sent_total")?, 1);
    // Audited: one client.clone entry on the original id.
    let entries = wait_until(
        "the clone is in the audit trail",
        Duration::from_secs(20),
        || {
            let (_, page) = deployment.api().get("/api/v1/audit")?;
            Ok(page["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["action"] == "client.clone")
                .collect::<Vec<_>>())
        },
        |entries| !entries.is_empty(),
    )?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["target"], original.as_str());
    assert_eq!(entries[0]["outcome"], "ok");
    assert_eq!(entries[0]["via"], "agent-port");
    Ok(())
}

#[test]
fn a_clone_on_the_master_of_an_agent_on_a_minion_is_found_across_frontends() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let minion = &minions[0];
    let (first, second) = (deployment.path().join("a"), deployment.path().join("b"));
    let _original_agent = agent_in(&deployment, &first, &[minion.agent_port])?;
    let original = client_id_in(&writeback_in(&first))?;
    common::wait_frontend_of(&deployment, &original, &minion.name)?;
    copy_writeback(&first, &second)?;
    let _clone = agent_in(&deployment, &second, &[deployment.agent_port])?;
    let ids = wait_split(&deployment, &original)?;
    let rekeyed = client_id_in(&writeback_in(&first))?;
    assert_ne!(
        rekeyed, original,
        "the older agent (on the minion) re-keyed"
    );
    assert!(ids.contains(&rekeyed), "{ids:?}");
    common::wait_frontend_of(&deployment, &rekeyed, &minion.name)?;
    let master_name = format!("{}:{}", deployment.host, deployment.agent_port);
    common::wait_frontend_of(&deployment, &original, &master_name)?;
    std::thread::sleep(Duration::from_secs(3));
    let detected = deployment.metric("packhunt_clone_detected_total")?
        + minion.metric(&deployment, "packhunt_clone_detected_total")?;
    assert_eq!(
        detected, 1,
        "counted once, by the minion that held the older stream"
    );
    assert_eq!(connected(&deployment)?, ids);
    Ok(())
}

#[test]
fn a_reconnect_storm_is_not_a_clone() -> Result<()> {
    let deployment = Deployment::start()?;
    let dir = deployment.path().join("a");
    let ports = [deployment.agent_port];
    let mut agent = agent_in(&deployment, &dir, &ports)?;
    let original = client_id_in(&writeback_in(&dir))?;
    let config = dir.join("client.config.toml");
    for round in 0..5 {
        wait_until(
            &format!("round {round}: the agent connected"),
            Duration::from_secs(30),
            || connected(&deployment),
            |ids| ids == std::slice::from_ref(&original),
        )?;
        // kill -9 and start again at once, with the same writeback.
        agent.0.kill()?;
        agent.0.wait()?;
        agent = start_agent_with(&config)?;
    }
    wait_until(
        "the agent connected after the storm",
        Duration::from_secs(30),
        || connected(&deployment),
        |ids| ids == std::slice::from_ref(&original),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        client_id_in(&writeback_in(&dir))?,
        original,
        "never told to re-key"
    );
    assert_eq!(connected(&deployment)?, vec![original]);
    assert_eq!(deployment.metric("packhunt_clone_detected_total")?, 0);
    assert_eq!(deployment.metric("packhunt_fleet_rekeys_sent_total")?, 0);
    Ok(())
}
