//! What the fleet is asked to do through the API while it runs (the scenario), and the
//! GUI/API latency probe. Both talk to the API as an operator's script would.
//!
//! idle:    connect and hold; nothing is scheduled.
//! tasking: once the fleet is connected, schedule `Generic.Client.Info` on random
//!          connected agents at `--task-rate-per-second`; agents measure delivery.
//! upload:  once the fleet is connected, schedule one collection on every agent (over
//!          parallel API connections); each answers with `--upload-bytes-per-agent`
//!          of rows, as fast as it can.
//! files:   once the fleet is connected, schedule `Generic.Collectors.File` on every
//!          agent; each uploads one synthetic file of `--file-bytes-per-agent`, and after
//!          the run the uploads index of every flow and the bytes of a sample are checked.
//! events:  client monitoring events: with `--event-artifact`, the client event table is
//!          first set (PUT) to list those artifacts for every agent; each agent then emits
//!          `--events-per-second-per-agent` synthetic rows for whatever its table lists,
//!          and the report counts the events acknowledged and dropped.
//! `--watch-artifact A` (any scenario) follows the master's live watch of A and reports
//! the events seen and their lag.
//! The probe GETs its paths (`--probe-path`, by default /api/v1/frontends) in turn at
//! `--probe-rate-per-second` on one keep-alive connection for the whole run and reports
//! the latency percentiles, overall and per path.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::sync::watch;

use crate::api::{ApiClient, ApiTarget};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Idle,
    Tasking,
    Upload,
    Events,
    Files,
}

pub struct DriverPlan {
    pub target: Option<ApiTarget>,
    pub scenario: Scenario,
    pub clients: usize,
    /// Only connected clients whose hostname starts with this are tasked (ours).
    pub hostname_prefix: String,
    pub task_rate_per_second: f64,
    pub probe_rate_per_second: f64,
    /// What the probe GETs, in turn (never empty).
    pub probe_paths: Vec<String>,
    /// The client event table's `all` list to PUT first (empty: leave the table alone).
    pub event_artifacts: Vec<serde_json::Value>,
    pub watch_artifact: Option<String>,
    /// files: bytes of each agent's synthetic file.
    pub file_bytes_per_agent: u64,
    /// `--record`: every collection scheduled is written down.
    pub record: Option<std::sync::Arc<crate::record::Recorder>>,
    /// `--settle-s`: nothing new is scheduled from then on.
    pub schedule_until: Option<Instant>,
    /// Longest wait for the fleet to show as connected before the scenario starts anyway.
    pub connect_wait: Duration,
    /// The probe also records into the current latency window.
    pub window: std::sync::Arc<std::sync::Mutex<crate::stats::Window>>,
}

#[derive(Default)]
pub struct DriverOutcome {
    /// files: what the server holds after the run, and the seconds from the first
    /// collection scheduled to the end of the run.
    pub files: Option<crate::files::FilesCheck>,
    pub files_seconds: f64,
    pub collections_scheduled: u64,
    pub schedule_errors: u64,
    pub api_latency_us: Option<Histogram<u64>>,
    /// Probe requests that failed or answered other than 200.
    pub api_errors: u64,
    /// The same requests per probe path (in `probe_paths` order).
    pub api_latency_by_path_us: Vec<(String, Histogram<u64>)>,
    pub watch: Option<crate::watch::WatchOutcome>,
}

/// Runs the scenario and the probe until `stop` turns true.
pub async fn drive(plan: DriverPlan, stop: watch::Receiver<bool>) -> Result<DriverOutcome> {
    let Some(target) = plan.target.clone() else {
        anyhow::ensure!(
            matches!(plan.scenario, Scenario::Idle | Scenario::Events)
                && plan.event_artifacts.is_empty()
                && plan.watch_artifact.is_none(),
            "scenario {:?} (with --event-artifact or --watch-artifact) needs --api-url and \
             --api-password",
            plan.scenario
        );
        return Ok(DriverOutcome::default());
    };
    if !plan.event_artifacts.is_empty() {
        set_event_table(&target, &plan.event_artifacts).await?;
    }
    let probe = (plan.probe_rate_per_second > 0.0).then(|| {
        tokio::spawn(probe(
            target.clone(),
            plan.probe_rate_per_second,
            plan.probe_paths.clone(),
            plan.window.clone(),
            stop.clone(),
        ))
    });
    let watch = plan
        .watch_artifact
        .clone()
        .map(|artifact| tokio::spawn(crate::watch::watch(target.clone(), artifact, stop.clone())));
    let mut outcome = schedule(&plan, &target, stop).await?;
    if let Some(probe) = probe {
        let (all, by_path, errors) = probe.await??;
        outcome.api_latency_us = Some(all);
        outcome.api_latency_by_path_us = by_path;
        outcome.api_errors = errors;
    }
    if let Some(watch) = watch {
        outcome.watch = Some(watch.await?);
    }
    Ok(outcome)
}

async fn schedule(
    plan: &DriverPlan,
    target: &ApiTarget,
    mut stop: watch::Receiver<bool>,
) -> Result<DriverOutcome> {
    let mut outcome = DriverOutcome::default();
    if matches!(plan.scenario, Scenario::Idle | Scenario::Events) {
        let _ = stop.wait_for(|s| *s).await;
        return Ok(outcome);
    }
    let mut api = ApiClient::connect(target).await?;
    let ids = wait_connected(
        &mut api,
        plan.clients,
        &plan.hostname_prefix,
        plan.connect_wait,
        &mut stop,
    )
    .await?;
    let mut rng = rand::rngs::StdRng::from_entropy();
    match plan.scenario {
        Scenario::Upload => {
            let request = serde_json::json!({ "artifacts": ["Linux.Sys.Pslist"] });
            schedule_everyone(plan, target, ids, request, &mut outcome, &stop).await?;
        }
        Scenario::Files => {
            let started = Instant::now();
            let request = crate::files::request(plan.file_bytes_per_agent);
            let flows = schedule_everyone(plan, target, ids, request, &mut outcome, &stop).await?;
            let _ = stop.wait_for(|s| *s).await;
            outcome.files_seconds = started.elapsed().as_secs_f64();
            let check = crate::files::check(target, &flows, plan.file_bytes_per_agent).await?;
            outcome.files = Some(check);
        }
        Scenario::Tasking => {
            let every = Duration::from_secs_f64(1.0 / plan.task_rate_per_second.max(0.001));
            let mut next = Instant::now();
            while !*stop.borrow() && plan.schedule_until.is_none_or(|t| Instant::now() < t) {
                let Some(id) = ids.choose(&mut rng) else {
                    break;
                };
                let result = api.collect(id, &["Generic.Client.Info"]).await;
                if let (Some(record), Ok(flow)) = (&plan.record, &result) {
                    record.scheduled(id, flow);
                }
                if result.is_err() {
                    // The master may have restarted: the next collection goes over a new
                    // connection (this one failing too is tallied as the next error).
                    if let Ok(fresh) = ApiClient::connect(target).await {
                        api = fresh;
                    }
                }
                tally(&mut outcome, result);
                next += every;
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        Scenario::Idle | Scenario::Events => {}
    }
    let _ = stop.wait_for(|s| *s).await;
    Ok(outcome)
}

/// PUTs the client event table with `all` = `entries` (and no label lists), so every
/// agent runs those event artifacts; agents connected already get it pushed.
async fn set_event_table(target: &ApiTarget, entries: &[serde_json::Value]) -> Result<()> {
    let mut api = ApiClient::connect(target).await?;
    let body = serde_json::to_vec(&serde_json::json!({ "all": entries, "by_label": {} }))?;
    let (status, answer, _) = api
        .request("PUT", "/api/v1/events/client_table", Some(body))
        .await?;
    anyhow::ensure!(
        status == 200,
        "setting the client event table: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    eprintln!(
        "loadgen: client event table set: {}",
        String::from_utf8_lossy(&answer).trim()
    );
    Ok(())
}

/// `NAME` or `NAME:key=value,key=value` (e.g. `Linux.Events.LogTail:path=/var/log/auth.log`)
/// -> a client event table entry.
pub fn event_table_entry(spec: &str) -> Result<serde_json::Value> {
    let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
    anyhow::ensure!(
        !name.is_empty(),
        "--event-artifact `{spec}` names no artifact"
    );
    let mut parameters = serde_json::Map::new();
    for pair in params.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--event-artifact `{spec}`: `{pair}` is not key=value"))?;
        parameters.insert(
            key.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    Ok(serde_json::json!({ "name": name, "parameters": parameters }))
}

/// API connections scheduling the upload scenario at once: one request at a time took
/// ~80 ms per collection (fsync'd documents), so 15,000 agents needed minutes to all be
/// busy; in parallel the whole fleet is uploading within seconds.
const SCHEDULING_CONNECTIONS: usize = 32;

/// One collection (`request`) for every agent in `ids`, over [`SCHEDULING_CONNECTIONS`]
/// connections; returns the (client, flow) pairs scheduled.
async fn schedule_everyone(
    plan: &DriverPlan,
    target: &ApiTarget,
    ids: Vec<String>,
    request: serde_json::Value,
    outcome: &mut DriverOutcome,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<(String, String)>> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(ids));
    let mut workers = Vec::new();
    for _ in 0..SCHEDULING_CONNECTIONS {
        let (queue, target, stop) = (queue.clone(), target.clone(), stop.clone());
        let (request, record) = (request.clone(), plan.record.clone());
        workers.push(tokio::spawn(async move {
            let mut part = DriverOutcome::default();
            let mut flows = Vec::new();
            let mut api = ApiClient::connect(&target).await?;
            loop {
                let next = queue
                    .lock()
                    .expect("no worker panics holding the queue")
                    .pop();
                let Some(id) = next else { break };
                if *stop.borrow() {
                    break;
                }
                let result = api.collect_request(&id, request.clone()).await;
                if let Ok(flow) = &result {
                    if let Some(record) = &record {
                        record.scheduled(&id, flow);
                    }
                    flows.push((id.clone(), flow.clone()));
                }
                tally(&mut part, result);
            }
            anyhow::Ok((part, flows))
        }));
    }
    let mut flows = Vec::new();
    for worker in workers {
        let (part, scheduled) = worker.await??;
        outcome.collections_scheduled += part.collections_scheduled;
        outcome.schedule_errors += part.schedule_errors;
        flows.extend(scheduled);
    }
    Ok(flows)
}

fn tally(outcome: &mut DriverOutcome, result: Result<String>) {
    match result {
        Ok(_) => outcome.collections_scheduled += 1,
        Err(e) => {
            outcome.schedule_errors += 1;
            if outcome.schedule_errors <= 3 {
                eprintln!("loadgen: scheduling failed: {e:#}");
            }
        }
    }
}

/// Client ids the API shows as connected, once there are `want` of them (or the wait
/// runs out).
async fn wait_connected(
    api: &mut ApiClient,
    want: usize,
    hostname_prefix: &str,
    connect_wait: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let (total, _) = connected_page(api, 0, 1, hostname_prefix).await?;
        if total >= want || started.elapsed() > connect_wait || *stop.borrow() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Beside another fleet, ours are listed only once their facts landed (a busy frontend
    // may shed them for a while): list again until all of ours are there.
    loop {
        let ids = our_connected(api, hostname_prefix).await?;
        if ids.len() >= want || started.elapsed() > connect_wait || *stop.borrow() {
            return Ok(ids);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every connected client whose hostname starts with `hostname_prefix`, page by page (the
/// API pages at most API_PAGE items at a time).
async fn our_connected(api: &mut ApiClient, hostname_prefix: &str) -> Result<Vec<String>> {
    let (mut ids, mut offset) = (Vec::new(), 0);
    loop {
        let (total, page) = connected_page(api, offset, API_PAGE, hostname_prefix).await?;
        let got = page.len();
        offset += got;
        ids.extend(page.into_iter().filter_map(|(id, ours)| ours.then_some(id)));
        if got == 0 || offset >= total {
            return Ok(ids);
        }
    }
}

/// Largest page the API serves (`MAX_CLIENT_LIST_PAGE_COUNT`).
const API_PAGE: usize = 10_000;

/// (total connected, this page's connected ids, each with whether its hostname starts
/// with `hostname_prefix`).
async fn connected_page(
    api: &mut ApiClient,
    offset: usize,
    limit: usize,
    hostname_prefix: &str,
) -> Result<(usize, Vec<(String, bool)>)> {
    let path = format!("/api/v1/clients?connected=true&offset={offset}&limit={limit}");
    let (_, body, _) = api.request("GET", &path, None).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let ids = v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|c| c["connected"] == true)
                .filter_map(|c| {
                    let ours = c["hostname"]
                        .as_str()
                        .is_some_and(|h| h.starts_with(hostname_prefix));
                    c["client_id"].as_str().map(|id| (id.to_string(), ours))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((v["total"].as_u64().unwrap_or(0) as usize, ids))
}

/// GETs a cheap API route at a fixed rate. Latency counts from when a request was due,
/// not when it was sent, so a stalled server shows up in the percentiles instead of as
/// fewer samples (no coordinated omission). A request that fails or answers other than 200
/// is counted as an error (the connection is made again for the next one), so a restart
/// of the API's frontend shows as errors in its window rather than ending the run.
async fn probe(
    target: ApiTarget,
    rate_per_second: f64,
    paths: Vec<String>,
    window: std::sync::Arc<std::sync::Mutex<crate::stats::Window>>,
    stop: watch::Receiver<bool>,
) -> Result<(Histogram<u64>, Vec<(String, Histogram<u64>)>, u64)> {
    let new_histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3);
    let mut hist = new_histogram()?;
    let mut by_path = paths
        .iter()
        .map(|p| Ok((p.clone(), new_histogram()?)))
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(!by_path.is_empty(), "the probe needs at least one path");
    let mut api = ApiClient::connect(&target).await?;
    let mut api_ok = true;
    let every = Duration::from_secs_f64(1.0 / rate_per_second);
    let mut due = Instant::now();
    let (mut turn, mut errors) = (0usize, 0u64);
    while !*stop.borrow() {
        tokio::time::sleep_until(due.into()).await;
        due += every;
        let (path, path_hist) = &mut by_path[turn % paths.len()];
        turn += 1;
        if !api_ok {
            match ApiClient::connect(&target).await {
                Ok(fresh) => (api, api_ok) = (fresh, true),
                Err(_) => {
                    errors += 1;
                    window
                        .lock()
                        .expect("no probe critical section panics")
                        .api_errors += 1;
                    continue;
                }
            }
        }
        let answer = tokio::time::timeout(PROBE_TIMEOUT, api.request("GET", path, None)).await;
        let took = ((due - every).elapsed().as_micros() as u64).max(1);
        match answer {
            Ok(Ok((200, _, _))) => {
                let _ = hist.record(took);
                let _ = path_hist.record(took);
                let _ = window
                    .lock()
                    .expect("no probe critical section panics")
                    .api_us
                    .record(took);
            }
            other => {
                if errors < 3 {
                    let why = match other {
                        Ok(Ok((status, _, _))) => format!("answered {status}"),
                        Ok(Err(e)) => format!("{e:#}"),
                        Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
                    };
                    eprintln!("loadgen: API probe of {path}: {why}");
                }
                errors += 1;
                window
                    .lock()
                    .expect("no probe critical section panics")
                    .api_errors += 1;
                api_ok = false;
            }
        }
    }
    Ok((hist, by_path, errors))
}

/// Longest wait for one probe answer before it counts as an error.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
