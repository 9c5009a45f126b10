//! Goal: a loadgen fleet of 1,000 agents (split over worker processes) each gets a
//! collection and every flow finishes with exactly the rows loadgen reports sending; agents that drop their connection in
//! the middle of a flow lose and duplicate nothing. Method: a frontend process and a
//! loadgen process on loopback; counts compared between loadgen's report, the API and
//! the files on disk.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{count_lines, flow_results, run_fleet, Deployment};

/// A deployment that accepts connections as fast as loadgen makes them: these tests are
/// about rows, and load shedding has its own (tests/limits.rs).
fn fleet_deployment() -> anyhow::Result<Deployment> {
    Deployment::start_with(|t| common::set_keys(t, &[("max_connections_per_second", "100000")]))
}

#[test]
fn thousand_agents_each_finish_a_collection_with_exact_rows() -> anyhow::Result<()> {
    // Three loadgen worker processes (400 + 400 + 200 agents) whose reports are merged.
    let deployment = fleet_deployment()?;
    let workers = ["--agents-per-worker", "400"];
    let report = run_fleet(
        &deployment,
        1000,
        &deployment.client_config(),
        &workers,
        &["Generic.Client.Info", "Linux.Sys.Users"],
        |_| Ok(()),
    )?;
    assert_eq!(report["workers"], 3);
    assert_eq!(
        report["connected_peak"], 1000,
        "the merged series sees the whole fleet at once"
    );
    assert_eq!(
        report["task_latency"]["count"], 1000,
        "histograms of all workers are merged"
    );
    Ok(())
}

#[test]
fn agents_reconnecting_mid_flow_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let deployment = fleet_deployment()?;
    // Small uploads so each flow spans many batches, and a dropped connection before
    // every third ack so batches are resent after reconnects.
    let config = deployment.client_config_with("small.client.config.toml", |c| {
        c.client.max_upload_bytes = 4096
    })?;
    run_fleet(
        &deployment,
        20,
        &config,
        &["--drop-connection-every-uploads", "3"],
        &["Linux.Sys.Pslist"],
        |_| Ok(()),
    )?;
    let duplicates = deployment.metric("packhunt_uploads_duplicate_total")?;
    assert!(
        duplicates > 0,
        "resent batches were seen and not written twice"
    );
    Ok(())
}

#[test]
fn agents_answering_on_niced_threads_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    // Goal: with --answer-nice the agents' connections run on a runtime of their own and
    // their answering on niced threads, in each worker process, and every row still lands
    // once, across reconnects made from the answering side.
    let deployment = fleet_deployment()?;
    let config = deployment.client_config_with("small.client.config.toml", |c| {
        c.client.max_upload_bytes = 4096
    })?;
    let report = run_fleet(
        &deployment,
        40,
        &config,
        &[
            "--answer-nice",
            "5",
            "--agents-per-worker",
            "20",
            "--drop-connection-every-uploads",
            "3",
        ],
        &["Linux.Sys.Pslist"],
        |_| Ok(()),
    )?;
    assert_eq!(report["workers"], 2);
    assert_eq!(
        report["task_latency"]["count"], 40,
        "every agent read its task"
    );
    assert!(deployment.metric("packhunt_uploads_duplicate_total")? > 0);
    Ok(())
}

#[test]
fn frontend_restart_mid_upload_finishes_cleanly_and_flows_complete() -> anyhow::Result<()> {
    // Goal: SIGTERM while uploads are in flight exits cleanly (status 0) and leaves only
    // whole batches on disk; after a restart the agents reconnect and every flow ends
    // with exactly the rows they sent. Method: 30 loadgen agents with 4 KiB uploads so
    // flows span many batches; stop the frontend as soon as the first rows land.
    let mut deployment = fleet_deployment()?;
    let clients = 30;
    let config = deployment.client_config_with("small.client.config.toml", |c| {
        c.client.max_upload_bytes = 4096
    })?;
    let report = deployment.path().join("report.json");
    let mut loadgen = common::spawn_loadgen_for_flows(&config, clients, &report, &[])?;
    let ids = deployment.wait_connected(clients, Duration::from_secs(60))?;
    let api = deployment.api();
    let flows: Vec<(String, String)> = ids
        .iter()
        .map(|id| Ok((id.clone(), api.collect(id, &["Linux.Sys.Pslist"])?)))
        .collect::<anyhow::Result<_>>()?;
    // Looked at every 5 ms: the stop must land while uploads are still in flight.
    let first_rows = flow_results(
        &deployment.datastore(),
        &flows[0].0,
        &flows[0].1,
        "Linux.Sys.Pslist",
    );
    common::wait_until_every(
        "the first rows on disk",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || Ok(count_lines(&first_rows)),
        |rows| *rows > 0,
    )?;
    let exit = deployment.stop_frontend()?;
    assert!(exit.success(), "frontend exits cleanly on SIGTERM: {exit}");
    // Every result set on disk holds whole rows only: its index has one entry per line.
    for (client, flow) in &flows {
        let jsonl = flow_results(&deployment.datastore(), client, flow, "Linux.Sys.Pslist");
        let index = jsonl.with_extension("index");
        let lines = count_lines(&jsonl) as u64;
        let entries = std::fs::metadata(&index).map(|m| m.len() / 8).unwrap_or(0);
        assert_eq!(
            lines, entries,
            "{flow}: rows and index agree after shutdown"
        );
        if let Ok(bytes) = std::fs::read(&jsonl) {
            assert!(
                bytes.is_empty() || bytes.ends_with(b"\n"),
                "{flow}: no torn row"
            );
        }
    }
    deployment.start_frontend()?;
    let statuses = deployment.wait_flows(&flows, Duration::from_secs(180))?;
    assert!(loadgen.0.wait()?.success());
    let sent = common::loadgen_rows_sent(&report)?;
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    common::assert_rows_as_sent(&statuses, &sent);
    assert!(
        report["reconnects"].as_u64().unwrap() >= clients as u64,
        "every agent came back after the restart"
    );
    Ok(())
}

#[test]
fn tasking_scenario_schedules_through_the_api_and_probes_it() -> anyhow::Result<()> {
    // Goal: loadgen's tasking scenario schedules collections through the API on its own,
    // its agents receive them, and the API probe records latencies.
    // Method: 50 agents in two workers for 6 s; counts checked, timings not.
    let deployment = fleet_deployment()?;
    let report_path = deployment.path().join("tasking.json");
    let status = Command::new(common::loadgen_bin())
        .arg("--config")
        .arg(deployment.client_config())
        .args([
            "--clients",
            "50",
            "--agents-per-worker",
            "25",
            "--duration-s",
            "6",
            "--scenario",
            "tasking",
        ])
        .args([
            "--task-rate-per-second",
            "20",
            "--probe-rate-per-second",
            "20",
            "--probe-path",
            "/api/v1/frontends",
            "--probe-path",
            "/api/v1/clients?limit=10",
        ])
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
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    let scheduled = report["collections_scheduled"].as_u64().unwrap();
    let received = report["tasks_received"].as_u64().unwrap();
    assert_eq!(report["scenario"], "tasking");
    assert_eq!(report["schedule_errors"], 0);
    assert!(scheduled > 0, "{report}");
    assert!(
        received > 0 && received <= scheduled,
        "received {received} of {scheduled}"
    );
    assert!(report["api_latency"]["count"].as_u64().unwrap() > 0);
    // Each probe path is requested in turn and reported on its own.
    let by_path = &report["api_latency_by_path"];
    for path in ["/api/v1/frontends", "/api/v1/clients?limit=10"] {
        assert!(by_path[path]["count"].as_u64().unwrap() > 0, "{by_path}");
    }
    assert_eq!(
        deployment.metric("packhunt_flow_transitions_total{state=\"scheduled\"}")?,
        scheduled
    );
    Ok(())
}
