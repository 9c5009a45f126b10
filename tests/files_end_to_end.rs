//! Goal: the file path as an analyst meets it, with the real agent: `packhunt client`
//! collects real files (one spanning many chunks, one growing while it is read), they
//! download byte for byte (whole and by Range) and come out of the collection's zip
//! export; an upload cut by its frontend's kill -9 resumes on another frontend without
//! starting over; a cancel reaches an agent on a minion in the middle of an upload.
//! Method: generated deployments, real frontend and agent processes on loopback, files
//! compared by SHA-256.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use common::agent_outbox::OutboxAgent;
use common::uploads::download;
use common::{wait_until, Deployment};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    packhunt::agent::collected::synthetic_bytes(seed, 0, len).to_vec()
}

fn collect_files(api: &common::Api, client: &str, globs: &[String]) -> Result<String> {
    let (code, body) = api.post(
        &format!("/api/v1/clients/{client}/collections"),
        &json!({"artifacts":["Generic.Collectors.File"],
                "parameters":{"Generic.Collectors.File":{"globs": globs}}}),
    )?;
    anyhow::ensure!(code == 200, "collection refused: {code} {body}");
    Ok(body["flow_id"].as_str().context("flow_id")?.to_string())
}

fn rows(api: &common::Api, client: &str, flow: &str) -> Result<Vec<Value>> {
    let (code, page) = api.get(&format!(
        "/api/v1/clients/{client}/collections/{flow}/results?artifact=Generic.Collectors.File&rows=1000"
    ))?;
    anyhow::ensure!(code == 200, "results: {code} {page}");
    Ok(page["rows"].as_array().cloned().unwrap_or_default())
}

fn row_for<'a>(rows: &'a [Value], path: &Path) -> &'a Value {
    rows.iter()
        .find(|r| r["path"] == path.to_str().unwrap())
        .unwrap_or_else(|| panic!("a row for {}: {rows:?}", path.display()))
}

#[test]
fn real_files_download_byte_for_byte_and_export_as_a_zip() -> Result<()> {
    let deployment = Deployment::start()?;
    // 64 KiB uploads: the 1.5 MiB file crosses ~25 chunks.
    let agent = OutboxAgent::new(&deployment, 64 * 1024)?;
    let _running = agent.start()?;
    let client = deployment.wait_connected(1, Duration::from_secs(20))?[0].clone();
    let api = deployment.api();

    let dir = deployment.path().join("evidence");
    std::fs::create_dir_all(&dir)?;
    let small = dir.join("small.txt");
    std::fs::write(&small, b"hello, analyst\n")?;
    let big = dir.join("big.bin");
    let big_bytes = pseudo_random(1_500_000, 7);
    std::fs::write(&big, &big_bytes)?;
    // A log another process keeps appending to while the agent reads it.
    let growing = dir.join("growing.log");
    std::fs::write(&growing, pseudo_random(4_000_000, 9))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (growing.clone(), stop.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[b'x'; 4096])?;
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        })
    };

    let flow = collect_files(&api, &client, &[format!("{}/*", dir.display())])?;
    let status =
        &deployment.wait_flows(&[(client.clone(), flow.clone())], Duration::from_secs(60))?[0];
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap()?;
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["uploaded_files"], 3, "{status}");

    let rows = rows(&api, &client, &flow)?;
    let index = common::uploads::list_uploads(&api, &client, &flow)?;
    assert_eq!(index["items"].as_array().unwrap().len(), 3, "{index}");
    let final_growing = std::fs::read(&growing)?;
    for (path, want) in [
        (&small, Some(std::fs::read(&small)?)),
        (&big, Some(big_bytes.clone())),
        (&growing, None),
    ] {
        let row = row_for(&rows, path);
        let n = row["upload"].as_u64().context("upload number")?;
        let (code, _, got) = download(
            &api,
            &format!("/api/v1/clients/{client}/collections/{flow}/uploads/{n}"),
            None,
        )?;
        assert_eq!(code, 200);
        assert_eq!(sha256_hex(&got), row["sha256"], "{}", path.display());
        assert_eq!(got.len() as u64, row["size"].as_u64().unwrap());
        match want {
            Some(want) => assert_eq!(got, want, "{}", path.display()),
            // Read while it grew: what was uploaded is a prefix of the file as it ended.
            None => assert_eq!(got[..], final_growing[..got.len()]),
        }
    }

    // A range of the big file.
    let n = row_for(&rows, &big)["upload"].as_u64().unwrap();
    let (code, headers, part) = download(
        &api,
        &format!("/api/v1/clients/{client}/collections/{flow}/uploads/{n}"),
        Some("bytes=1000000-1000999"),
    )?;
    assert_eq!(code, 206);
    assert_eq!(part, big_bytes[1_000_000..1_001_000]);
    assert_eq!(
        headers["content-range"], "bytes 1000000-1000999/1500000",
        "{headers:?}"
    );

    // The zip export holds the results and every upload, readable by Python's zipfile.
    let (code, zip) = api.request(
        "GET",
        &format!("/api/v1/clients/{client}/collections/{flow}/export.zip"),
        None,
    )?;
    assert_eq!(code, 200);
    let zip_path = deployment.path().join("export.zip");
    std::fs::write(&zip_path, &zip)?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))?;
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    assert!(
        names
            .iter()
            .any(|n| n == "results/Generic.Collectors.File.jsonl"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n == "results/Generic.Collectors.File.csv"),
        "{names:?}"
    );
    for item in index["items"].as_array().unwrap() {
        let name = format!("uploads/{}", item["stored"].as_str().unwrap());
        let mut entry = archive.by_name(&name).with_context(|| name.clone())?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        assert_eq!(sha256_hex(&bytes), item["sha256"], "{name}");
    }
    match std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(len(z.namelist()))"])
        .arg(&zip_path)
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), names.len().to_string());
        }
        Err(_) => common::skip("zip export read by Python", "python3"),
    }
    Ok(())
}

/// Starts the agent until it is served by `wanted` (it picks a frontend at random).
fn start_on(
    deployment: &Deployment,
    agent: &OutboxAgent,
    wanted: &str,
) -> Result<(common::Proc, String)> {
    for _ in 0..20 {
        let running = agent.start()?;
        let client = deployment.wait_connected(1, Duration::from_secs(20))?[0].clone();
        let on = wait_until(
            "the agent listed on a frontend",
            Duration::from_secs(20),
            || common::frontend_of(deployment, &client),
            |f| f.is_some(),
        )?;
        if on.as_deref() == Some(wanted) {
            return Ok((running, client));
        }
        common::agent_outbox::kill9(running)?;
        wait_until(
            "the agent gone",
            Duration::from_secs(20),
            || Ok(deployment.api().get("/api/v1/clients?connected=true")?.1["total"].clone()),
            |t| *t == 0,
        )?;
    }
    anyhow::bail!("the agent never picked {wanted}")
}

fn uploading_file(deployment: &Deployment, client: &str, flow: &str) -> PathBuf {
    deployment
        .datastore()
        .join(format!("clients/{client}/collections/{flow}/uploading/0"))
}

#[test]
fn an_upload_cut_by_its_frontends_kill_resumes_on_another() -> Result<()> {
    let (deployment, mut minions) = common::cluster(1)?;
    let ports = [minions[0].agent_port, deployment.agent_port];
    let agent =
        OutboxAgent::on_ports(&deployment, "resume.client.config.toml", &ports, 128 * 1024)?;
    let (_running, client) = start_on(&deployment, &agent, &minions[0].name)?;

    let file = deployment.path().join("memory.dump");
    let bytes = pseudo_random(96 * 1024 * 1024, 11);
    std::fs::write(&file, &bytes)?;
    let flow = collect_files(&deployment.api(), &client, &[file.display().to_string()])?;
    // Kill the minion once a part of the file is stored, and well before all of it.
    let partial = uploading_file(&deployment, &client, &flow);
    let stored = wait_until(
        "part of the file stored through the minion",
        Duration::from_secs(60),
        || Ok(std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0)),
        |len| *len >= 4 * 1024 * 1024,
    )?;
    minions[0].kill()?;
    let cut_at = std::fs::metadata(&partial)
        .map(|m| m.len())
        .unwrap_or(stored);
    assert!(
        cut_at < bytes.len() as u64,
        "the upload was still going when the minion died"
    );

    let status =
        &deployment.wait_flows(&[(client.clone(), flow.clone())], Duration::from_secs(120))?[0];
    assert_eq!(status["state"], "finished", "{status}");
    let api = deployment.api();
    let (code, _, got) = download(
        &api,
        &format!("/api/v1/clients/{client}/collections/{flow}/uploads/0"),
        None,
    )?;
    assert_eq!(code, 200);
    assert_eq!(got.len(), bytes.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&bytes));
    // The master wrote only what the minion had not: no restart from zero.
    let written_by_master = deployment.metric("packhunt_files_bytes_written_total")?;
    assert!(
        written_by_master <= bytes.len() as u64 - cut_at,
        "master wrote {written_by_master} of {} bytes; {cut_at} were stored before the kill",
        bytes.len()
    );
    Ok(())
}

#[test]
fn a_cancel_reaches_a_real_agent_on_a_minion_mid_upload() -> Result<()> {
    let (deployment, minions) = common::cluster(1)?;
    let ports = [minions[0].agent_port, deployment.agent_port];
    let agent = OutboxAgent::on_ports(&deployment, "cancel.client.config.toml", &ports, 64 * 1024)?;
    let (_running, client) = start_on(&deployment, &agent, &minions[0].name)?;
    let file = deployment.path().join("huge.bin");
    std::fs::write(&file, pseudo_random(128 * 1024 * 1024, 5))?;
    let api = deployment.api();
    let flow = collect_files(&api, &client, &[file.display().to_string()])?;
    let partial = uploading_file(&deployment, &client, &flow);
    wait_until(
        "the upload under way",
        Duration::from_secs(60),
        || Ok(std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0)),
        |len| *len > 0,
    )?;
    let (code, body) = api.post(
        &format!("/api/v1/clients/{client}/collections/{flow}/cancel"),
        &json!({}),
    )?;
    assert_eq!(code, 200, "{body}");
    let (_, status) = api.get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
    assert_eq!(status["state"], "cancelled");
    assert_eq!(status["ended_by"], "cancel");
    // The agent drops the flow: its outbox folder goes, and the upload stops growing.
    wait_until(
        "the agent dropped the cancelled flow",
        Duration::from_secs(30),
        || Ok(agent.flow_dir(&flow)),
        |dir| dir.is_none(),
    )?;
    let stopped_at = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0),
        stopped_at
    );
    assert!(stopped_at < 128 * 1024 * 1024);
    // The agent is free for the next collection.
    let next = api.collect(&client, &["Generic.Client.Info"])?;
    let done = &deployment.wait_flows(&[(client.clone(), next)], Duration::from_secs(30))?[0];
    assert_eq!(done["state"], "finished", "{done}");
    Ok(())
}
