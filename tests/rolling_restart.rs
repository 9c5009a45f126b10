//! Goal: restarting every frontend of a master + 2 minions one at a time (SIGTERM, exit,
//! start, ready), minions first and the master last, during a hunt over 5,000 agents with
//! client monitoring events flowing, loses and duplicates nothing, and the GUI/API
//! answers throughout the minions' restarts (it is down only while the master itself
//! restarts). Method: real processes on loopback; one loadgen of 5,000 agents whose client
//! config lists all three frontends (so they spread), emitting events and answering the
//! hunt, recording what it sent (`--record`); a probe thread GETs the API all along and
//! counts failures per phase; at the end `loadgen verify` checks the datastore against
//! the record (rows lost / duplicated, every flow final, events lost / duplicated).
//! Sized for CI on two cores: the test's own wall time stays within a few minutes.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{frontend, set_keys, wait_until, Deployment, Minion};
use serde_json::{json, Value};

const AGENTS: usize = 5_000;
/// Loadgen's own bound on the run; it is stopped (SIGTERM) once the hunt is done.
const LOADGEN_DURATION_S: u64 = 600;
/// Slow enough that the hunt is still recruiting while the minions restart.
const HUNT_RECRUITMENT_PER_SECOND: &str = "150";
/// Short drains: the agents move at once; this bounds a stuck upload.
const DRAIN_TIMEOUT_MS: &str = "15000";
const EXIT_WAIT: Duration = Duration::from_secs(30);
const ARTIFACT: &str = "Generic.Client.Info";
const EVENT_ARTIFACT: &str = "Generic.Client.Stats";

/// Which restart the probe's answers fall in.
const PHASE_MINIONS: u8 = 0;
const PHASE_MASTER: u8 = 1;
const PHASE_AFTER: u8 = 2;

/// GETs the master's API every 200 ms on its own thread; failures counted per phase.
struct Probe {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    failures: Arc<[AtomicU64; 3]>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(deployment: &Deployment) -> Self {
        let api = deployment
            .api()
            .with_request_timeout(Duration::from_secs(5));
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(PHASE_MINIONS));
        let failures: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let answered = Arc::new(AtomicU64::new(0));
        let (s, p, f, a) = (
            stop.clone(),
            phase.clone(),
            failures.clone(),
            answered.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now = p.load(Ordering::Relaxed) as usize;
                match api.get("/api/v1/frontends") {
                    Ok((200, _)) => a.fetch_add(1, Ordering::Relaxed),
                    _ => f[now].fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            stop,
            phase,
            failures,
            answered,
            thread: Some(thread),
        }
    }

    fn failures(&self, phase: u8) -> u64 {
        self.failures[phase as usize].load(Ordering::Relaxed)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn rolling_restart_during_a_hunt_loses_and_duplicates_nothing() -> Result<()> {
    if !loadgen_records() {
        common::skip(
            "rolling_restart",
            "a loadgen with --record and verify (cargo build --release -p loadgen)",
        );
        return Ok(());
    }
    let record = tempfile::tempdir()?;
    let (mut deployment, mut minions) = common::cluster_with(2, |t| {
        set_keys(
            t,
            &[
                ("drain_timeout_ms", DRAIN_TIMEOUT_MS),
                ("max_connections_per_second", "100000"),
                ("hunt_recruitment_per_second", HUNT_RECRUITMENT_PER_SECOND),
            ],
        )
    })?;
    let urls = [
        deployment.agent_port,
        minions[0].agent_port,
        minions[1].agent_port,
    ];
    let fleet = deployment.client_config_for("fleet.client.config.toml", &urls, None)?;
    let report = deployment.path().join("report.json");
    let api_url = format!("https://{}:{}/", deployment.host, deployment.gui_port);
    let extra = [
        "--scenario",
        "events",
        "--event-artifact",
        EVENT_ARTIFACT,
        "--events-per-second-per-agent",
        "0.2",
        "--api-url",
        &api_url,
        "--api-password",
        common::ADMIN_PASSWORD,
        "--probe-rate-per-second",
        "0",
        "--record",
        record.path().to_str().context("record path")?,
    ];
    let started = std::time::Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let mut loadgen = common::spawn_loadgen(&fleet, AGENTS, LOADGEN_DURATION_S, &report, &extra)?;
    // Nearly all: on a starved box a few agents may still wait out a connect backoff; the
    // hunt recruits them when they come, and the end checks that it recruited every one.
    wait_until(
        "nearly every agent connected",
        Duration::from_secs(150),
        || connected_per_frontend(&deployment),
        |spread| spread.iter().map(|(_, n)| n).sum::<u64>() >= (AGENTS - AGENTS / 100) as u64,
    )?;
    progress("fleet connected");
    let spread = connected_per_frontend(&deployment)?;
    ensure!(
        spread.iter().filter(|(_, n)| *n > 0).count() == 3,
        "agents on every frontend: {spread:?}"
    );

    let hunt = start_hunt(&deployment)?;
    let probe = Probe::start(&deployment);
    for minion in minions.iter_mut() {
        restart_minion(&deployment, minion)?;
        progress(&format!("minion {} restarted", minion.name));
    }
    probe.phase.store(PHASE_MASTER, Ordering::Relaxed);
    deployment.terminate_frontend()?;
    let exit = deployment.wait_frontend_exit(EXIT_WAIT)?;
    ensure!(exit.success(), "the master exits 0 after its drain: {exit}");
    deployment.start_frontend()?;
    common::wait_frontends(
        &deployment,
        |items| items.iter().all(|f| f["up"] == true),
        "every minion relinked to the restarted master",
    )?;
    probe.phase.store(PHASE_AFTER, Ordering::Relaxed);
    progress("master restarted");

    // The hunt recruited every agent (each connected after the restarts began or before)
    // and every one of its flows is done.
    let done = wait_until(
        "every agent recruited and its flow done",
        Duration::from_secs(150),
        || hunt_flows_final(&deployment, &hunt),
        |(recruited, open)| *recruited == AGENTS && *open == 0,
    )?;
    assert_eq!(done, (AGENTS, 0));
    progress("hunt done");
    stop(&mut loadgen)?;

    let verdict = verify(&deployment, record.path())?;
    progress("verified");
    assert_eq!(verdict["rows_lost"], 0, "{verdict}");
    assert_eq!(verdict["rows_duplicated"], 0, "{verdict}");
    assert_eq!(verdict["flows_not_final"], 0, "{verdict}");
    assert_eq!(verdict["events_lost"], 0, "{verdict}");
    assert_eq!(verdict["events_duplicated"], 0, "{verdict}");
    assert!(
        verdict["rows_expected"].as_u64() >= Some(AGENTS as u64),
        "every hunt flow's rows were checked: {verdict}"
    );
    assert_eq!(verdict["ok"], true, "{verdict}");

    assert_eq!(
        probe.failures(PHASE_MINIONS),
        0,
        "the GUI/API answers while the minions restart"
    );
    assert!(probe.answered.load(Ordering::Relaxed) > 0);
    assert_eq!(
        probe.failures(PHASE_AFTER),
        0,
        "the GUI/API answers after the master is back"
    );
    Ok(())
}

/// Whether the loadgen next to packhunt can record and verify (`loadgen verify --help`).
fn loadgen_records() -> bool {
    Command::new(common::loadgen_bin())
        .args(["verify", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// (frontend, agents connected to it) as the master lists them.
fn connected_per_frontend(deployment: &Deployment) -> Result<Vec<(String, u64)>> {
    let (_, body) = deployment.api().get("/api/v1/frontends")?;
    let items = body["items"].as_array().context("frontends: items")?;
    Ok(items
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap_or_default().to_string();
            (name, f["connected_clients"].as_u64().unwrap_or(0))
        })
        .collect())
}

/// A hunt over every agent, started; returns its id.
fn start_hunt(deployment: &Deployment) -> Result<String> {
    let api = deployment.api();
    let (status, created) = api.post("/api/v1/hunts", &json!({ "artifacts": [ARTIFACT] }))?;
    ensure!(status == 200, "POST hunt: {status} {created}");
    let id = created["hunt_id"].as_str().context("hunt_id")?.to_string();
    let (status, body) = api.post(&format!("/api/v1/hunts/{id}/start"), &json!({}))?;
    ensure!(status == 200, "start hunt: {status} {body}");
    Ok(id)
}

/// SIGTERM, wait for a clean exit, start again, wait until the master shows it linked
/// and the GUI/API never stopped answering meanwhile (the probe counts).
fn restart_minion(deployment: &Deployment, minion: &mut Minion) -> Result<()> {
    minion.terminate()?;
    let exit = minion.wait_exit(EXIT_WAIT)?;
    ensure!(exit.success(), "minion {} exits 0: {exit}", minion.name);
    deployment.start_minion(minion)?;
    let name = minion.name.clone();
    common::wait_frontends(
        deployment,
        |items| frontend(items, &name)["up"] == true,
        "the restarted minion linked",
    )?;
    Ok(())
}

/// (agents recruited, their flows not yet final), from the hunt's participants on disk.
fn hunt_flows_final(deployment: &Deployment, hunt: &str) -> Result<(usize, usize)> {
    let participants = deployment
        .datastore()
        .join("hunts")
        .join(format!("{hunt}.participants"));
    // One `client_id flow_id` line per recruit; a torn last line is skipped.
    let text = std::fs::read_to_string(&participants).unwrap_or_default();
    let mut recruited = std::collections::HashSet::new();
    let mut open = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(client), Some(flow)) = (words.next(), words.next()) else {
            continue;
        };
        if !recruited.insert(client.to_string()) {
            continue;
        }
        let status = deployment
            .datastore()
            .join("clients")
            .join(client)
            .join("collections")
            .join(flow)
            .join("status.json");
        let state = std::fs::read(&status)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["state"].as_str().map(str::to_string));
        if !matches!(state.as_deref(), Some("finished" | "error" | "cancelled")) {
            open += 1;
        }
    }
    Ok((recruited.len(), open))
}

/// SIGTERM to loadgen: it stops its agents and writes its record and report.
fn stop(loadgen: &mut common::Proc) -> Result<()> {
    // SAFETY: kill takes plain integers; the pid is our own child, not yet reaped.
    unsafe { libc::kill(loadgen.0.id() as i32, libc::SIGTERM) };
    let status = loadgen.0.wait()?;
    ensure!(status.success(), "loadgen exited with {status}");
    Ok(())
}

/// `loadgen verify` against the shared datastore; its JSON verdict.
fn verify(deployment: &Deployment, record: &std::path::Path) -> Result<Value> {
    let verdict = deployment.path().join("verify.json");
    let status = Command::new(common::loadgen_bin())
        .arg("verify")
        .arg("--record")
        .arg(record)
        .arg("--datastore")
        .arg(deployment.datastore())
        .arg("--report")
        .arg(&verdict)
        .stdout(Stdio::null())
        .status()?;
    let verdict: Value = serde_json::from_slice(
        &std::fs::read(&verdict).with_context(|| format!("verify wrote no verdict ({status})"))?,
    )?;
    Ok(verdict)
}
