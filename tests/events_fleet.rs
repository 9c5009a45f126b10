//! Goal: client monitoring events end to end across a deployment, as an operator runs it.
//! A real `packhunt client` and 1,000 loadgen agents, spread over a master and a minion,
//! run `Generic.Client.Stats` from the client event table; a watcher on the master sees
//! events ingested on both frontends, from the real agent and from loadgen's; the minion
//! is killed with -9 mid-stream, its agents move to the master, and at the end every
//! event loadgen saw acknowledged is stored on the datastore, the watcher never saw one
//! event twice, and the real agent kept streaming through the master.
//! Method: real processes on loopback; counts from loadgen's report, the monitoring
//! listing API and the watch stream; no timing is asserted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::watch::Watch;
use common::{cluster_with, wait_until, Deployment};
use serde_json::{json, Value};

const STATS: &str = "Generic.Client.Stats";
const FLEET: usize = 1000;
const FLEET_SECONDS: u64 = 30;

/// What the watcher saw, shared with its reading thread.
#[derive(Default)]
struct Seen {
    /// Events per (client, frontend).
    by_client_and_frontend: BTreeMap<(String, String), u64>,
    ids: BTreeSet<String>,
    repeated_ids: u64,
    end: Option<Value>,
}

fn watch_in_background(mut watch: Watch, stop: Arc<AtomicBool>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(Some(line)) = watch.next_line() else {
                return;
            };
            let mut seen = out.lock().unwrap();
            if line.get("end").is_some() {
                seen.end = Some(line);
                return;
            }
            let client = line["client_id"].as_str().unwrap_or_default().to_string();
            let frontend = line["frontend"].as_str().unwrap_or_default().to_string();
            *seen
                .by_client_and_frontend
                .entry((client, frontend))
                .or_default() += 1;
            let id = line["event_id"].as_str().unwrap_or_default().to_string();
            if !seen.ids.insert(id) {
                seen.repeated_ids += 1;
            }
        }
    });
    seen
}

fn start_loadgen(config: &Path, report: &Path) -> Result<Child> {
    Ok(Command::new(common::loadgen_bin())
        .arg("--config")
        .arg(config)
        .args([
            "--clients",
            &FLEET.to_string(),
            "--agents-per-worker",
            "500",
        ])
        .args(["--ramp-per-second", "1000"])
        .args(["--duration-s", &FLEET_SECONDS.to_string()])
        .args(["--scenario", "events", "--events-per-second-per-agent", "1"])
        .args(["--probe-rate-per-second", "0"])
        .arg("--report")
        .arg(report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Rows stored per client, from the monitoring listing of every known client.
fn stored_rows(deployment: &Deployment) -> Result<BTreeMap<String, u64>> {
    let (_, clients) = deployment.api().get("/api/v1/clients?limit=5000")?;
    let mut out = BTreeMap::new();
    for client in clients["items"].as_array().context("items")? {
        let id = client["client_id"].as_str().context("client_id")?;
        let (status, listing) = deployment
            .api()
            .get(&format!("/api/v1/clients/{id}/monitoring"))?;
        ensure!(status == 200, "monitoring of {id}: {status} {listing}");
        let rows: u64 = listing["artifacts"]
            .as_array()
            .context("artifacts")?
            .iter()
            .flat_map(|a| a["days"].as_array().cloned().unwrap_or_default())
            .map(|d| d["rows"].as_u64().unwrap_or(0))
            .sum();
        out.insert(id.to_string(), rows);
    }
    Ok(out)
}

/// The real agent's client id: the one client whose facts are not loadgen's.
fn real_agent_id(deployment: &Deployment) -> Result<Option<String>> {
    let (_, clients) = deployment.api().get("/api/v1/clients?limit=5000")?;
    Ok(clients["items"]
        .as_array()
        .context("items")?
        .iter()
        .find(|c| {
            !c["hostname"]
                .as_str()
                .unwrap_or("loadgen-")
                .starts_with("loadgen-")
        })
        .and_then(|c| c["client_id"].as_str().map(str::to_string)))
}

#[test]
fn a_fleet_over_master_and_minion_streams_and_stores_every_acknowledged_event() -> Result<()> {
    let (deployment, mut minions) = cluster_with(1, |t| {
        common::set_keys(t, &[("max_connections_per_second", "100000")])
    })?;
    let minion = &mut minions[0];
    let master_name = format!("{}:{}", deployment.host, deployment.agent_port);
    let table = json!({"all": [{"name": STATS, "parameters": {"period_s": 1}}], "by_label": {}});
    let (status, answer) = deployment
        .api()
        .put("/api/v1/events/client_table", &table)?;
    ensure!(status == 200, "PUT table: {status} {answer}");

    let watch = Watch::open(
        &deployment,
        &deployment.host,
        deployment.gui_port,
        &format!("/api/v1/events/watch?artifact={STATS}"),
    )?;
    ensure!(watch.status == 200, "watch: {}", watch.status);
    let stop_watching = Arc::new(AtomicBool::new(false));
    let seen = watch_in_background(watch, stop_watching.clone());

    // Agents list both frontends and start at a random one of them.
    let both = [deployment.agent_port, minion.agent_port];
    let config = deployment.client_config_for("both", &both, None)?;
    let _agent = common::Proc(
        Command::new(common::packhunt_bin())
            .args(["client", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()?,
    );
    let report_path = deployment.path().join("fleet.json");
    let mut loadgen = start_loadgen(&config, &report_path)?;

    // Both frontends' agents stream to the master's watcher.
    let frontends_seen = |seen: &Seen| {
        seen.by_client_and_frontend
            .keys()
            .map(|(_, f)| f.clone())
            .collect::<BTreeSet<_>>()
    };
    wait_until(
        "events ingested on the master and on the minion reach the watcher",
        Duration::from_secs(90),
        || Ok(frontends_seen(&seen.lock().unwrap())),
        |f| f.contains(&master_name) && f.contains(&minion.name),
    )?;
    let agent_id = wait_until(
        "the real agent listed",
        Duration::from_secs(30),
        || real_agent_id(&deployment),
        |id| id.is_some(),
    )?
    .context("real agent")?;

    minion.kill()?;
    // The real agent (wherever it was) streams through the master from here on.
    wait_until(
        "the real agent's events through the master after the minion's kill",
        Duration::from_secs(90),
        || {
            let seen = seen.lock().unwrap();
            Ok(seen
                .by_client_and_frontend
                .get(&(agent_id.clone(), master_name.clone()))
                .copied()
                .unwrap_or(0))
        },
        |n| *n >= 2,
    )?;

    let exit = wait_until(
        "loadgen to finish",
        Duration::from_secs(FLEET_SECONDS + 120),
        || Ok(loadgen.try_wait()?),
        |status| status.is_some(),
    )?
    .context("loadgen exit")?;
    ensure!(exit.success(), "loadgen exited with {exit}");
    stop_watching.store(true, Ordering::Relaxed);

    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    let acked = report["events_acked_rows"].as_u64().context("acked")?;
    ensure!(
        acked >= FLEET as u64,
        "every agent's events acknowledged: {report}"
    );
    let stored = stored_rows(&deployment)?;
    let loadgen_stored: u64 = stored
        .iter()
        .filter(|(id, _)| **id != agent_id)
        .map(|(_, n)| n)
        .sum();
    // A batch stored just as loadgen stopped may have lost its ack, never the reverse.
    ensure!(
        loadgen_stored >= acked,
        "{loadgen_stored} loadgen rows stored, {acked} acknowledged"
    );
    ensure!(
        stored.get(&agent_id).copied().unwrap_or(0) >= 2,
        "the real agent's rows are stored: {:?}",
        stored.get(&agent_id)
    );
    let seen = seen.lock().unwrap();
    ensure!(
        seen.end.is_none(),
        "the watcher was cut off: {:?}",
        seen.end
    );
    ensure!(
        seen.repeated_ids == 0,
        "{} events seen twice",
        seen.repeated_ids
    );
    let clients_seen: BTreeSet<&String> =
        seen.by_client_and_frontend.keys().map(|(c, _)| c).collect();
    ensure!(
        clients_seen.len() > FLEET / 2,
        "events of {} clients reached the watcher",
        clients_seen.len()
    );
    Ok(())
}
