//! Goal: the datastore works on a real network filesystem, and a frontend refuses a mount
//! that lacks what the datastore needs. A master and a minion, each on its own sshfs mount
//! of one export (what two hosts see of one NFS export: each mount has its own caches),
//! take collections, a hunt, file uploads and events, and the minion is killed with
//! SIGKILL mid-upload: every row lands once (result sets, their row index and commit
//! records read back from the export itself), every uploaded file is byte-identical, and
//! every acknowledged event is stored. Then frontends are started on mounts that lack free
//! space, write access or atomic rename, and each refuses with a message naming the
//! failed check and its fix.
//! Method: sshd + sshfs over loopback (tests/common/sshfs.rs), loadgen fleets and the
//! API; counts and bytes checked, timings not. Skipped (counted) without FUSE, sshfs, sshd
//! or root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::sshfs::{SshfsMount, SshfsOptions};
use common::{wait_until, wait_until_every, Deployment, Minion};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PSLIST: &str = "Linux.Sys.Pslist";
/// loadgen's synthetic file seed (loadgen/src/files.rs, SYNTHETIC_FILE_SEED).
const SYNTHETIC_FILE_SEED: u64 = 0x6c6f_6164_6765_6e21;
const FILE_BYTES: u64 = 1_500_000;
/// Bytes per entry of a result set's `.index` (u64 LE offset per row: architecture.md).
const INDEX_ENTRY_BYTES: usize = 8;

/// A master and a minion, each on its own sshfs mount of one export. Fields drop in
/// order: frontends first, then the minion's mount, then the master's (which owns the
/// export folder).
struct SshfsCluster {
    minion: Minion,
    deployment: Deployment,
    _minion_mount: SshfsMount,
    master_mount: SshfsMount,
    _dir: tempfile::TempDir,
}

impl SshfsCluster {
    fn start(test: &str) -> Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let Some(master_mount) = SshfsMount::new(test, &dir.path().join("master-mount")) else {
            return Ok(None);
        };
        let options = SshfsOptions {
            backing: Some(master_mount.backing().to_path_buf()),
            ..Default::default()
        };
        let minion_mount = SshfsMount::with(test, &dir.path().join("minion-mount"), options)
            .context("the first mount worked, so the second must")?;
        let master_location = master_mount.path().join("datastore");
        let mut deployment = Deployment::generate_with(|text| {
            set_location(text, &master_location);
            common::set_keys(text, &[("max_connections_per_second", "100000")]);
        })?;
        let mut minion = deployment.add_minion()?;
        let minion_config = common::secrets::minion_config(deployment.path(), &minion.name);
        let mut text = std::fs::read_to_string(&minion_config)?;
        set_location(&mut text, &minion_mount.path().join("datastore"));
        std::fs::write(&minion_config, text)?;
        deployment.start_frontend()?;
        deployment.start_minion(&mut minion)?;
        common::wait_frontends(
            &deployment,
            |items| items.iter().all(|f| f["up"] == true),
            "the minion linked",
        )?;
        Ok(Some(Self {
            minion,
            deployment,
            _minion_mount: minion_mount,
            master_mount,
            _dir: dir,
        }))
    }

    /// The datastore as the export holds it: what every mount must agree on.
    fn exported(&self) -> PathBuf {
        self.master_mount.backing().join("datastore")
    }

    fn ports(&self) -> [u16; 2] {
        [self.deployment.agent_port, self.minion.agent_port]
    }

    fn api_args(&self) -> Vec<String> {
        vec![
            "--api-url".into(),
            format!("https://127.0.0.1:{}/", self.deployment.gui_port),
            "--api-password".into(),
            common::ADMIN_PASSWORD.into(),
            "--probe-rate-per-second".into(),
            "0".into(),
        ]
    }
}

fn set_location(text: &mut String, location: &Path) {
    let line = format!("location = \"{}\"", location.display());
    *text = text
        .lines()
        .map(|l| {
            if l.starts_with("location = ") {
                line.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
}

#[test]
fn master_and_minion_on_sshfs_mounts_lose_and_duplicate_nothing() -> Result<()> {
    let test = "sshfs_datastore::master_and_minion_on_sshfs_mounts_lose_and_duplicate_nothing";
    let Some(mut cluster) = SshfsCluster::start(test)? else {
        return Ok(());
    };
    collections_through_a_minion_kill(&mut cluster)?;
    // The killed minion starts again on the same mount (its check passes there again).
    let SshfsCluster {
        deployment, minion, ..
    } = &mut cluster;
    deployment.start_minion(minion)?;
    common::wait_frontends(
        deployment,
        |items| items.iter().all(|f| f["up"] == true),
        "the restarted minion linked",
    )?;
    files_byte_identical(&cluster)?;
    events_and_a_hunt(&cluster)?;
    // No scratch folder of the start-up checks is left on the export.
    let leftovers: Vec<_> = std::fs::read_dir(cluster.exported())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mount-check-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}

/// 30 agents over both frontends answer Pslist in ~40 small batches each; the minion is
/// killed as soon as one of its agents has rows on the export. Every flow ends with
/// exactly the rows loadgen sent, once each, in order, indexed and committed.
fn collections_through_a_minion_kill(cluster: &mut SshfsCluster) -> Result<()> {
    let clients = 30;
    let d = &cluster.deployment;
    let config =
        d.client_config_for("rows.client.config.toml", &cluster.ports(), Some(16 * 1024))?;
    let report = d.path().join("rows.json");
    let mut loadgen =
        common::spawn_loadgen_for_flows(&config, clients, &report, &["--pslist-rows", "2500"])?;
    let ids = d.wait_connected(clients, Duration::from_secs(120))?;
    let victim = cluster.minion.name.clone();
    let on_victim: Vec<String> = ids
        .iter()
        .filter(|id| common::frontend_of(d, id).ok().flatten().as_deref() == Some(victim.as_str()))
        .cloned()
        .collect();
    ensure!(!on_victim.is_empty(), "some agents are on the minion");
    let api = d.api();
    let flows: Vec<(String, String)> = ids
        .iter()
        .map(|id| Ok((id.clone(), api.collect(id, &[PSLIST])?)))
        .collect::<Result<_>>()?;
    let watched = flows.iter().find(|(c, _)| c == &on_victim[0]).unwrap();
    let first_rows = common::flow_results(&cluster.exported(), &watched.0, &watched.1, PSLIST);
    wait_until_every(
        "rows from the minion's agent on the export",
        Duration::from_secs(120),
        Duration::from_millis(5),
        || Ok(common::count_lines(&first_rows)),
        |rows| *rows > 0,
    )?;
    cluster.minion.kill()?;
    let unfinished = api.unfinished_flows(&flows, &on_victim);
    assert!(
        unfinished > 0,
        "the kill caught the minion's agents mid-flow"
    );
    let statuses = d.wait_flows(&flows, Duration::from_secs(300))?;
    assert!(loadgen.0.wait()?.success(), "loadgen delivered every flow");
    let sent = common::loadgen_rows_sent(&report)?;
    assert_eq!(sent.len(), clients);
    common::assert_rows_as_sent(&statuses, &sent);
    for (client, flow) in &flows {
        let rows = check_result_set(&cluster.exported(), client, flow, PSLIST)?;
        assert_eq!(rows, sent[flow.as_str()], "flow {flow} on the export");
    }
    Ok(())
}

/// Reads one result set from the export and checks it is whole: every line a JSON row,
/// Pslist pids strictly rising (the synthetic agent numbers its rows, so a row written
/// twice or out of order shows), one index entry per row pointing at its line, and a
/// commit record per batch. Returns the rows.
fn check_result_set(datastore: &Path, client: &str, flow: &str, artifact: &str) -> Result<u64> {
    let jsonl_path = common::flow_results(datastore, client, flow, artifact);
    let jsonl = std::fs::read(&jsonl_path).with_context(|| jsonl_path.display().to_string())?;
    let index = std::fs::read(jsonl_path.with_extension("index"))?;
    let batches = std::fs::read(jsonl_path.with_extension("batches"))?;
    let mut starts = vec![0u64];
    let mut last_pid = None;
    for (i, line) in jsonl.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let row: Value =
            serde_json::from_slice(line).with_context(|| format!("{flow}: row {i} is not JSON"))?;
        let pid = row["pid"].as_u64().context("a Pslist row has a pid")?;
        ensure!(
            last_pid < Some(pid),
            "{flow}: row {i} (pid {pid}) repeats or is out of order"
        );
        last_pid = Some(pid);
        starts.push(starts.last().unwrap() + line.len() as u64 + 1);
    }
    starts.pop();
    ensure!(jsonl.ends_with(b"\n"), "{flow}: the last row is whole");
    ensure!(
        index.len() == starts.len() * INDEX_ENTRY_BYTES,
        "{flow}: {} index bytes for {} rows",
        index.len(),
        starts.len()
    );
    let offsets: Vec<u64> = index
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    ensure!(
        offsets == starts,
        "{flow}: the index points at every row's start"
    );
    ensure!(
        !batches.is_empty() && batches.len() % 32 == 0,
        "{flow}: whole commit records"
    );
    Ok(starts.len() as u64)
}

/// 8 agents over both frontends each upload one 1.5 MB file; loadgen checks the uploads
/// index and downloads; here every stored file is hashed on the export.
fn files_byte_identical(cluster: &SshfsCluster) -> Result<()> {
    let agents = 8u64;
    let d = &cluster.deployment;
    let config = d.client_config_for("files.client.config.toml", &cluster.ports(), None)?;
    let report_path = d.path().join("files.json");
    let status = Command::new(common::loadgen_bin())
        .arg("--config")
        .arg(&config)
        .args(["--clients", &agents.to_string(), "--duration-s", "300"])
        .args([
            "--exit-after-flows",
            &agents.to_string(),
            "--scenario",
            "files",
        ])
        .args(["--file-bytes-per-agent", &FILE_BYTES.to_string()])
        .args(["--hostname-prefix", "files-"])
        .args(cluster.api_args())
        .arg("--report")
        .arg(&report_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert!(status.success(), "loadgen files scenario");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    let files = &report["files"];
    assert_eq!(files["files_completed"], agents, "{files}");
    assert_eq!(files["files_wrong"], 0, "{files}");
    assert_eq!(files["downloads_failed"], 0, "{files}");

    let want = synthetic_sha256(FILE_BYTES);
    let stored = stored_uploads(&cluster.exported())?;
    assert_eq!(
        stored.len() as u64,
        agents,
        "one stored file per agent: {stored:?}"
    );
    for path in &stored {
        let bytes = std::fs::read(path)?;
        assert_eq!(bytes.len() as u64, FILE_BYTES, "{}", path.display());
        assert_eq!(
            hex(&Sha256::digest(&bytes)),
            want,
            "{} byte-identical",
            path.display()
        );
    }
    Ok(())
}

/// Every regular file under a flow's `uploads/` on the export.
fn stored_uploads(datastore: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for client in std::fs::read_dir(datastore.join("clients"))?.flatten() {
        let Ok(flows) = std::fs::read_dir(client.path().join("collections")) else {
            continue;
        };
        for flow in flows.flatten() {
            let mut stack = vec![flow.path().join("uploads")];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if entry.file_type()?.is_dir() {
                        stack.push(entry.path());
                    } else {
                        found.push(entry.path());
                    }
                }
            }
        }
    }
    Ok(found)
}

fn synthetic_sha256(size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(1 << 20);
        hasher.update(packhunt::agent::collected::synthetic_bytes(
            SYNTHETIC_FILE_SEED,
            offset,
            len as usize,
        ));
        offset += len;
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 agents over both frontends emit events for a few seconds while a hunt over them
/// (Pslist, labelled agents only) runs: every acknowledged event is stored once (index
/// and lines agree), and the hunt's rows are every participant's rows.
fn events_and_a_hunt(cluster: &SshfsCluster) -> Result<()> {
    let agents = 16usize;
    let d = &cluster.deployment;
    let config = d.client_config_for("events.client.config.toml", &cluster.ports(), None)?;
    let report_path = d.path().join("events.json");
    let mut events = Command::new(common::loadgen_bin())
        .arg("--config")
        .arg(&config)
        .args(["--clients", &agents.to_string(), "--duration-s", "240"])
        .args(["--scenario", "events", "--events-per-second-per-agent", "5"])
        .args(["--event-artifact", "Linux.Events.ProcessStart"])
        .args(["--hostname-prefix", "events-"])
        .args(cluster.api_args())
        .arg("--report")
        .arg(&report_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let hunted = wait_until(
        "the event agents connected",
        Duration::from_secs(60),
        || event_agents(d),
        |ids| ids.len() == agents,
    )?;
    let hunt_rows = run_hunt(d, &hunted, &cluster.exported())?;
    // SIGINT: loadgen stops its agents and writes its report (what was acknowledged).
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill takes plain integers; the pid is our own child, not yet reaped.
    unsafe { libc::kill(events.id() as i32, libc::SIGINT) };
    assert!(events.wait()?.success(), "loadgen events scenario");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    let acked = report["events_acked_rows"].as_u64().context("acked rows")?;
    assert!(acked >= agents as u64, "{report}");
    assert_eq!(report["events_dropped_rows"], 0, "{report}");
    let mut stored = 0;
    for id in &hunted {
        stored += check_event_days(&cluster.exported(), id)?;
    }
    // A batch stored as loadgen stopped may have lost its acknowledgement: stored ≥ acked.
    assert!(
        stored >= acked,
        "{stored} events stored, {acked} acknowledged"
    );
    assert!(hunt_rows > 0);
    Ok(())
}

fn event_agents(d: &Deployment) -> Result<Vec<String>> {
    let (_, body) = d.api().get("/api/v1/clients?connected=true&limit=1000")?;
    let mut ids: Vec<String> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["hostname"]
                .as_str()
                .is_some_and(|h| h.starts_with("events-"))
        })
        .filter_map(|c| c["client_id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Labels `ids`, hunts Pslist over that label and waits for every participant; checks
/// each participant's result set on the export. Returns the hunt's total rows.
fn run_hunt(d: &Deployment, ids: &[String], exported: &Path) -> Result<u64> {
    let api = d.api();
    for id in ids {
        let (status, body) = api.post(
            &format!("/api/v1/clients/{id}/labels"),
            &json!({"add": ["sshfs-hunt"]}),
        )?;
        ensure!(status == 200, "label: {status} {body}");
    }
    let (status, created) = api.post(
        "/api/v1/hunts",
        &json!({"artifacts": [PSLIST], "condition": {"labels": ["sshfs-hunt"]}}),
    )?;
    ensure!(status == 200, "create hunt: {status} {created}");
    let hunt = created["hunt_id"].as_str().context("hunt id")?.to_string();
    let (status, body) = api.post(&format!("/api/v1/hunts/{hunt}/start"), &json!({}))?;
    ensure!(status == 200, "start hunt: {status} {body}");
    let n = ids.len() as u64;
    let done = wait_until(
        "every labelled agent finished the hunt",
        Duration::from_secs(120),
        || Ok(api.get(&format!("/api/v1/hunts/{hunt}"))?.1),
        |h| h["completed"] == n,
    )?;
    assert_eq!(done["errors"], 0, "{done}");
    let (_, results) = api.get(&format!(
        "/api/v1/hunts/{hunt}/results?artifact={PSLIST}&rows=1"
    ))?;
    let total = results["total_rows"].as_u64().context("total rows")?;
    assert_eq!(done["total_rows"], total, "{done}");
    // Every participant's result set on the export is whole, and they add up.
    let participants =
        std::fs::read_to_string(exported.join("hunts").join(format!("{hunt}.participants")))?;
    let mut rows = 0;
    for line in participants.lines() {
        let (client, flow) = line.split_once(' ').context("`client flow` lines")?;
        rows += check_result_set(exported, client, flow, PSLIST)?;
    }
    assert_eq!(participants.lines().count(), ids.len());
    assert_eq!(rows, total);
    Ok(total)
}

/// Checks every monitoring day set of `client` on the export (lines whole, one 16-byte
/// index entry per line); returns the rows.
fn check_event_days(datastore: &Path, client: &str) -> Result<u64> {
    let monitoring = datastore.join("clients").join(client).join("monitoring");
    let mut rows = 0;
    for artifact in std::fs::read_dir(&monitoring)?.flatten() {
        for day in std::fs::read_dir(artifact.path())?.flatten() {
            let path = day.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let jsonl = std::fs::read(&path)?;
            let index = std::fs::read(path.with_extension("index"))?;
            let lines = jsonl.iter().filter(|&&b| b == b'\n').count();
            ensure!(jsonl.ends_with(b"\n"), "{}: whole lines", path.display());
            ensure!(
                index.len() == lines * 16,
                "{}: {} index bytes for {lines} rows",
                path.display(),
                index.len()
            );
            rows += lines as u64;
        }
    }
    Ok(rows)
}

#[test]
fn mounts_lacking_space_write_access_or_atomic_rename_are_refused_with_the_fix() -> Result<()> {
    let test =
        "sshfs_datastore::mounts_lacking_space_write_access_or_atomic_rename_are_refused_with_the_fix";
    let dir = tempfile::tempdir()?;
    // Too little free space: any real mount has less than 1 EiB.
    let Some(plain) = SshfsMount::new(test, &dir.path().join("plain")) else {
        return Ok(());
    };
    let refusal = refused_start(&plain.path().join("datastore"), Some(1 << 60))?;
    assert!(
        refusal.contains("fails the start-up check `free space`"),
        "{refusal}"
    );
    assert!(refusal.contains("min_free_bytes"), "{refusal}");
    drop(plain);

    // Read-only: the datastore can't be written at all.
    let options = SshfsOptions {
        read_only: true,
        ..Default::default()
    };
    let read_only = SshfsMount::with(test, &dir.path().join("ro"), options).context("ro mount")?;
    let refusal = refused_start(&read_only.path().join("datastore"), None)?;
    assert!(refusal.contains("`create a folder and files`"), "{refusal}");
    assert!(refusal.contains("Read-only file system"), "{refusal}");
    assert!(refusal.contains("`rw`"), "{refusal}");
    drop(read_only);

    // A server that refuses posix-rename (the request sshfs sends for rename(2)): renaming
    // over an existing file fails, so no document could ever be updated.
    let options = SshfsOptions {
        sftp_denied: Some("posix-rename".into()),
        ..Default::default()
    };
    let no_rename = SshfsMount::with(test, &dir.path().join("norename"), options)
        .context("mount without posix-rename")?;
    let refusal = refused_start(&no_rename.path().join("datastore"), None)?;
    assert!(
        refusal.contains("`atomic rename over an existing file`"),
        "{refusal}"
    );
    assert!(refusal.contains("posix-rename@openssh.com"), "{refusal}");
    // Nothing of the check is left behind.
    let left: Vec<_> = std::fs::read_dir(no_rename.backing().join("datastore"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    Ok(())
}

/// Starts a master on `location` (with `min_free_bytes` if given) and expects it to exit
/// with an error before it is ready; returns what it said.
fn refused_start(location: &Path, min_free_bytes: Option<u64>) -> Result<String> {
    let deployment = Deployment::generate_with(|text| {
        set_location(text, location);
        if let Some(min) = min_free_bytes {
            common::set_keys(text, &[("min_free_bytes", &min.to_string())]);
        }
    })?;
    let mut child = Command::new(common::packhunt_bin())
        .args(["frontend", "--config"])
        .arg(deployment.path().join("server.config.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            anyhow::bail!(
                "the frontend did not refuse the mount at {}",
                location.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!out.status.success(), "the frontend exited 0: {said}");
    ensure!(!said.contains(" ready: "), "the frontend started: {said}");
    Ok(said)
}
