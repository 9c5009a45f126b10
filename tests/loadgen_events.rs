//! Goal: loadgen's events scenario sets the client event table through the API, every
//! simulated agent (in several worker processes) emits synthetic rows for the artifacts
//! its table lists and hands each batch to the server, which stores every acknowledged
//! row, and the watch option reports what the master streamed to it. Method: 60 agents in two workers against a real
//! master for a few seconds; counts checked, timings not.

mod common;

use std::process::{Command, Stdio};

use anyhow::Result;
use common::Deployment;
use serde_json::Value;

#[test]
fn the_events_scenario_sets_the_table_and_every_agent_emits() -> Result<()> {
    let deployment = Deployment::start_with(|t| {
        common::set_keys(t, &[("max_connections_per_second", "100000")])
    })?;
    let report_path = deployment.path().join("events.json");
    let status = Command::new(common::loadgen_bin())
        .arg("--config")
        .arg(deployment.client_config())
        .args(["--clients", "60", "--agents-per-worker", "30"])
        .args(["--duration-s", "6", "--scenario", "events"])
        .args(["--events-per-second-per-agent", "4"])
        .args(["--event-artifact", "Linux.Events.ProcessStart"])
        .args([
            "--event-artifact",
            "Linux.Events.LogTail:path=/var/log/auth.log",
        ])
        .args(["--watch-artifact", "Linux.Events.ProcessStart"])
        .args(["--probe-rate-per-second", "0"])
        .args([
            "--api-url",
            &format!("https://127.0.0.1:{}/", deployment.gui_port),
            "--api-password",
            common::ADMIN_PASSWORD,
        ])
        .arg("--report")
        .arg(&report_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert!(status.success());
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    assert_eq!(report["scenario"], "events");
    assert_eq!(report["workers"], 2);

    let (_, table) = deployment.api().get("/api/v1/events/client_table")?;
    let names: Vec<&str> = table["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Linux.Events.ProcessStart", "Linux.Events.LogTail"]);
    assert_eq!(table["all"][1]["parameters"]["path"], "/var/log/auth.log");

    let acked = report["events_acked_rows"].as_u64().unwrap();
    let dropped = report["events_dropped_rows"].as_u64().unwrap();
    assert!(
        acked >= 60,
        "every agent's events were acknowledged: {report}"
    );
    assert_eq!(dropped, 0, "nothing dropped: {report}");
    let bytes = report["events_acked_bytes"].as_u64().unwrap();
    assert!(bytes >= acked * 100, "{acked} rows in {bytes} bytes");
    let watch = &report["watch"];
    assert_eq!(watch["artifact"], "Linux.Events.ProcessStart");
    assert!(watch["events_seen"].as_u64().unwrap() > 0, "{watch}");

    // Acknowledged means stored: the clients' monitoring rows hold at least every
    // acknowledged row (a batch stored as loadgen stopped may have lost its ack).
    let (_, clients) = deployment.api().get("/api/v1/clients?limit=1000")?;
    let ids: Vec<String> = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 60, "{clients}");
    let mut stored = 0;
    for id in &ids {
        let (status, listing) = deployment
            .api()
            .get(&format!("/api/v1/clients/{id}/monitoring"))?;
        assert_eq!(status, 200, "{listing}");
        for artifact in listing["artifacts"].as_array().unwrap() {
            for day in artifact["days"].as_array().unwrap() {
                stored += day["rows"].as_u64().unwrap();
            }
        }
    }
    assert!(
        stored >= acked,
        "{stored} rows stored, {acked} acknowledged"
    );
    Ok(())
}
