//! Goal: loadgen's files scenario tasks every simulated agent with
//! `Generic.Collectors.File` through the API, each uploads its synthetic file, and the
//! server holds every file complete with the SHA-256 loadgen expects (checked by loadgen
//! itself through the uploads index and sample downloads, and here again through the API).
//! Method: 20 agents with 1 MB each against a real master; counts checked, timings not.

mod common;

use std::process::{Command, Stdio};

use anyhow::Result;
use common::Deployment;
use serde_json::Value;

const AGENTS: u64 = 20;
const FILE_BYTES: u64 = 1_000_000;

#[test]
fn the_files_scenario_uploads_every_agents_file_intact() -> Result<()> {
    let deployment = Deployment::start_with(|t| {
        common::set_keys(t, &[("max_connections_per_second", "100000")])
    })?;
    let report_path = deployment.path().join("files.json");
    let status = Command::new(common::loadgen_bin())
        .arg("--config")
        .arg(deployment.client_config())
        .args(["--clients", &AGENTS.to_string()])
        .args([
            "--duration-s",
            "300",
            "--exit-after-flows",
            &AGENTS.to_string(),
        ])
        .args(["--scenario", "files"])
        .args(["--file-bytes-per-agent", &FILE_BYTES.to_string()])
        .args(["--probe-rate-per-second", "5"])
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
    assert_eq!(report["scenario"], "files");
    assert_eq!(report["collections_scheduled"], AGENTS);
    let files = &report["files"];
    assert_eq!(files["files_completed"], AGENTS, "{files}");
    assert_eq!(files["bytes_completed"], AGENTS * FILE_BYTES, "{files}");
    assert_eq!(files["files_wrong"], 0, "{files}");
    // No connection was dropped: no chunk had to be resumed from the server's offset.
    assert_eq!(files["resumed_chunks"], 0, "{files}");
    assert_eq!(files["downloads_failed"], 0, "{files}");
    assert!(
        files["downloads_verified"].as_u64().unwrap() >= 1,
        "{files}"
    );
    assert!(files["upload_mb_per_second"].as_f64().unwrap() > 0.0);

    // The index as the API shows it: one complete file per flow, under upload number 0.
    let (_, clients) = deployment.api().get("/api/v1/clients?limit=1000")?;
    let mut listed = 0;
    for client in clients["items"].as_array().unwrap() {
        let id = client["client_id"].as_str().unwrap();
        let (_, flows) = deployment
            .api()
            .get(&format!("/api/v1/clients/{id}/collections"))?;
        for flow in flows["items"].as_array().into_iter().flatten() {
            let flow_id = flow["flow_id"].as_str().unwrap();
            let (_, uploads) = deployment.api().get(&format!(
                "/api/v1/clients/{id}/collections/{flow_id}/uploads"
            ))?;
            let items = uploads["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{uploads}");
            assert_eq!(items[0]["upload"], 0);
            assert_eq!(items[0]["size"], FILE_BYTES);
            assert!(items[0]["error"].is_null(), "{uploads}");
            listed += 1;
        }
    }
    assert_eq!(listed, AGENTS);
    Ok(())
}
