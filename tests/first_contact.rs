//! Goal: an agent's facts (its ClientInfo) take their own path: a fresh fleet connects
//! with no facts refused even where ordinary uploads are shed, every agent is taskable
//! (a hunt recruits it) as soon as it is connected, a reconnect with the same facts
//! writes nothing, and changed facts are written.
//!
//! Method: one frontend (two shards) with one upload permit per shard and no wait for it
//! (`concurrency = 2`, `concurrency_wait_ms = 0`), so any two uploads at once on a shard
//! get 503; a loadgen fleet of 3,000 agents with kept identities connects at once. What
//! the frontend recorded is read from `packhunt_agent_facts_total` and the datastore,
//! what the agents saw from loadgen's report. Then the fleet reconnects at once
//! (loadgen's SIGUSR1 storm), a hunt over everyone starts, and part of the fleet comes
//! back as a new loadgen run with other hostnames.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use common::{set_keys, wait_until, Deployment};
use serde_json::{json, Value};

const AGENTS: usize = 3_000;
const RENAMED: usize = 50;

fn facts(deployment: &Deployment, outcome: &str) -> Result<u64> {
    deployment.metric(&format!(
        "packhunt_agent_facts_total{{outcome=\"{outcome}\"}}"
    ))
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// When each listed client's info.json was last modified.
fn info_mtimes(datastore: &Path, ids: &[String]) -> Result<HashMap<String, SystemTime>> {
    ids.iter()
        .map(|id| {
            let path = datastore.join("clients").join(id).join("info.json");
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .with_context(|| format!("{}", path.display()))?;
            Ok((id.clone(), modified))
        })
        .collect()
}

fn hostname(datastore: &Path, id: &str) -> Result<String> {
    let path = datastore.join("clients").join(id).join("info.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    Ok(doc["hostname"].as_str().context("hostname")?.to_string())
}

fn report(path: &Path) -> Result<Value> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

#[test]
fn a_fresh_fleet_sends_its_facts_without_a_refusal_and_unchanged_facts_write_nothing() -> Result<()>
{
    let deployment = Deployment::start_with(|t| {
        set_keys(
            t,
            &[
                ("concurrency", "2"),
                ("concurrency_wait_ms", "0"),
                ("max_connections_per_second", "100000"),
                ("hunt_recruitment_per_second", "100000"),
            ],
        )
    })?;
    let datastore = deployment.datastore();
    let identities = deployment.path().join("identities");
    let identities = identities.to_str().context("temp paths are UTF-8")?;
    let first_report = deployment.path().join("fleet.json");
    let mut fleet = common::spawn_loadgen(
        &deployment.client_config(),
        AGENTS,
        600,
        &first_report,
        &["--identity-dir", identities],
    )?;

    // First contact: every agent listed (the index lists an agent once its facts are
    // in), each info.json written once, nothing refused or sent the general way.
    let ids = deployment.wait_connected(AGENTS, Duration::from_secs(240))?;
    assert_eq!(ids.len(), AGENTS);
    assert_eq!(facts(&deployment, "written")?, AGENTS as u64);
    assert_eq!(facts(&deployment, "refused")?, 0);
    assert_eq!(
        deployment.metric("packhunt_agent_facts_general_path_total")?,
        0
    );
    assert_eq!(
        deployment.metric("packhunt_upload_rejections_total{reason=\"concurrency\"}")?,
        0,
        "facts took no upload permit"
    );
    let mtimes = info_mtimes(&datastore, &ids)?;

    // The whole fleet reconnects at once with the same facts: nothing is written, and
    // nothing is even read: the frontend remembers every agent's facts, whichever shard
    // the reconnect lands on.
    let (cached, unchanged) = (
        facts(&deployment, "cached")?,
        facts(&deployment, "unchanged")?,
    );
    signal(fleet.0.id(), libc::SIGUSR1);
    wait_until(
        "every agent sent its facts again",
        Duration::from_secs(240),
        || Ok(facts(&deployment, "cached")? + facts(&deployment, "unchanged")?),
        |n| *n >= cached + unchanged + AGENTS as u64,
    )?;
    assert_eq!(
        facts(&deployment, "written")?,
        AGENTS as u64,
        "nothing written"
    );
    assert_eq!(facts(&deployment, "refused")?, 0);
    assert_eq!(
        facts(&deployment, "unchanged")?,
        unchanged,
        "every reconnect found its facts in the frontend's memory"
    );
    assert!(facts(&deployment, "cached")? >= cached + AGENTS as u64);
    let after = info_mtimes(&datastore, &ids)?;
    let touched: Vec<&String> = ids.iter().filter(|id| after[*id] != mtimes[*id]).collect();
    assert!(
        touched.is_empty(),
        "{} info.json touched, e.g. {:?}",
        touched.len(),
        touched.first()
    );
    deployment.wait_connected(AGENTS, Duration::from_secs(120))?;

    // Everyone is taskable: a hunt over the whole fleet recruits every agent at once.
    // Their answers go through the one permit per shard and are shed, which facts never
    // were.
    let api = deployment.api();
    let (status, created) = api.post(
        "/api/v1/hunts",
        &json!({ "artifacts": ["Generic.Client.Info"] }),
    )?;
    ensure!(status == 200, "POST hunts: {status} {created}");
    let hunt_id = created["hunt_id"].as_str().context("hunt_id")?.to_string();
    let (status, _) = api.post(&format!("/api/v1/hunts/{hunt_id}/start"), &json!({}))?;
    ensure!(status == 200, "start the hunt: {status}");
    wait_until(
        "the hunt recruited every agent",
        Duration::from_secs(180),
        || {
            let (_, hunt) = api.get(&format!("/api/v1/hunts/{hunt_id}"))?;
            Ok(hunt["scheduled"].as_u64().unwrap_or(0))
        },
        |n| *n == AGENTS as u64,
    )?;
    wait_until(
        "ordinary uploads were shed",
        Duration::from_secs(120),
        || deployment.metric("packhunt_upload_rejections_total{reason=\"concurrency\"}"),
        |n| *n > 0,
    )?;

    // The agents' side: not one facts upload was refused.
    signal(fleet.0.id(), libc::SIGINT);
    wait_until(
        "the fleet's loadgen stopped",
        Duration::from_secs(60),
        || Ok(fleet.0.try_wait()?.is_some()),
        |done| *done,
    )?;
    let first = report(&first_report)?;
    assert_eq!(first["facts_refused"], 0, "fleet report");
    assert_eq!(first["ever_connected"], AGENTS as u64);

    // Part of the fleet comes back with other hostnames: their facts are written.
    let written = facts(&deployment, "written")?;
    let renamed_report = deployment.path().join("renamed.json");
    let mut renamed = common::spawn_loadgen(
        &deployment.client_config(),
        RENAMED,
        600,
        &renamed_report,
        &[
            "--identity-dir",
            identities,
            "--hostname-prefix",
            "renamed-",
        ],
    )?;
    wait_until(
        "the renamed agents' facts were written",
        Duration::from_secs(120),
        || facts(&deployment, "written"),
        |n| *n >= written + RENAMED as u64,
    )?;
    let mut renamed_ids = Vec::new();
    for id in &ids {
        if hostname(&datastore, id)?.starts_with("renamed-") {
            renamed_ids.push(id.clone());
        }
    }
    assert_eq!(
        renamed_ids.len(),
        RENAMED,
        "exactly the agents that came back renamed"
    );
    let now = info_mtimes(&datastore, &ids)?;
    for id in &ids {
        let touched = now[id] != mtimes[id];
        assert_eq!(touched, renamed_ids.contains(id), "info.json of {id}");
    }
    signal(renamed.0.id(), libc::SIGINT);
    wait_until(
        "the renamed loadgen stopped",
        Duration::from_secs(60),
        || Ok(renamed.0.try_wait()?.is_some()),
        |done| *done,
    )?;
    assert_eq!(report(&renamed_report)?["facts_refused"], 0);
    assert_eq!(facts(&deployment, "refused")?, 0);
    // Figures for the reader, not assertions.
    let mut figures = Vec::new();
    for outcome in ["written", "unchanged", "cached", "refused"] {
        figures.push(format!("{outcome} {}", facts(&deployment, outcome)?));
    }
    let shed = deployment.metric("packhunt_upload_rejections_total{reason=\"concurrency\"}")?;
    eprintln!("facts: {}; other uploads shed: {shed}", figures.join(", "));
    Ok(())
}
