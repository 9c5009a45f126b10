//! A fleet larger than one process may hold: fork worker processes of at most
//! `--agents-per-worker` agents each (this same binary with `--worker`), show one
//! progress line for all of them, stop them together, and merge their reports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats::{self, Report, SeriesPoint};
use crate::Args;

/// How long workers get to write their reports after being told to stop.
const WORKER_STOP_GRACE: Duration = Duration::from_secs(30);

pub fn run(args: &Args) -> Result<()> {
    let workers = args.clients.div_ceil(args.agents_per_worker);
    let dir = tempfile_dir()?;
    let latest: Arc<Mutex<Vec<SeriesPoint>>> =
        Arc::new(Mutex::new(vec![SeriesPoint::default(); workers]));
    let mut children = Vec::new();
    for w in 0..workers {
        let first = w * args.agents_per_worker;
        let count = args.agents_per_worker.min(args.clients - first);
        let report = dir.join(format!("worker-{w}.json"));
        let mut child = spawn_worker(args, first, count, workers, &report)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let latest = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(point) = serde_json::from_str::<SeriesPoint>(&line) {
                    latest
                        .lock()
                        .expect("the only critical sections store or sum points; none panics")[w] =
                        point;
                }
            }
        });
        children.push((child, report));
    }
    eprintln!(
        "loadgen: {} agents over {workers} worker processes",
        args.clients
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let recorder = match &args.record {
        Some(dir) => Some(crate::record::Recorder::create(dir, "driver", 0, 0)?),
        None => None,
    };
    let plan = args.driver_plan(
        &packhunt::config::ClientConfig::load(args.client_config()?)?
            .client
            .ca_certificate,
        recorder.clone(),
        Default::default(),
    )?;
    let driver = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(crate::driver::drive(plan, stop_rx))
    });
    let watched = watch(args, &latest, &mut children);
    let _ = stop_tx.send(true);
    let outcome = driver
        .join()
        .map_err(|_| anyhow::anyhow!("the scenario driver panicked"))?;
    watched?;
    let mut reports = Vec::new();
    for (_, path) in &children {
        let text =
            std::fs::read(path).with_context(|| format!("worker report {}", path.display()))?;
        reports.push(serde_json::from_slice::<Report>(&text)?);
    }
    if let Some(recorder) = &recorder {
        recorder.finish()?;
    }
    let mut merged = stats::merge(reports)?;
    merged.add_driver(args.scenario, outcome?);
    let text = serde_json::to_string_pretty(&merged)?;
    match &args.report {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "loadgen done: peak {} connected, {} tasks, {} flows, {} errors",
        merged.connected_peak, merged.tasks_received, merged.flows_completed, merged.errors
    );
    if let Some(line) = merged.events_summary() {
        eprintln!("loadgen {line}");
    }
    Ok(())
}

fn spawn_worker(
    args: &Args,
    first: usize,
    count: usize,
    workers: usize,
    report: &std::path::Path,
) -> Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--config").arg(args.client_config()?);
    cmd.args([
        "--clients",
        &count.to_string(),
        "--first-agent",
        &first.to_string(),
        "--worker",
    ]);
    cmd.args(["--duration-s", &args.duration_s.to_string()]);
    // The fleet ramps at the rate asked for, shared by the workers.
    cmd.args([
        "--ramp-per-second",
        &(args.ramp_per_second / workers as u64).max(1).to_string(),
    ]);
    // Resolved for the whole fleet here: every worker spreads over the same addresses.
    let source_ips =
        crate::fleet::source_ip_count(args.source_ips, args.first_agent + args.clients);
    cmd.args(["--source-ips", &source_ips.to_string()]);
    cmd.args([
        "--drop-connection-every-uploads",
        &args.drop_connection_every_uploads.to_string(),
    ]);
    cmd.args(["--agents-per-worker", &args.agents_per_worker.to_string()]);
    cmd.args(["--hostname-prefix", &args.hostname_prefix]);
    cmd.arg("--scenario")
        .arg(format!("{:?}", args.scenario).to_lowercase());
    cmd.args([
        "--upload-bytes-per-agent",
        &args.upload_bytes_per_agent.to_string(),
    ]);
    cmd.args([
        "--events-per-second-per-agent",
        &args.events_per_second_per_agent.to_string(),
    ]);
    cmd.args(["--event-buffer-bytes", &args.event_buffer_bytes.to_string()]);
    // Workers answer the files scenario's tasks with files of the size the driver asks for.
    cmd.args([
        "--file-bytes-per-agent",
        &args.file_bytes_per_agent.to_string(),
    ]);
    cmd.args(["--collect-ms", &args.collect_ms.to_string()]);
    if let Some(nice) = args.answer_nice {
        cmd.args(["--answer-nice", &nice.to_string()]);
    }
    if let Some(rows) = args.pslist_rows {
        cmd.args(["--pslist-rows", &rows.to_string()]);
    }
    if let Some(dir) = &args.identity_dir {
        cmd.arg("--identity-dir").arg(dir);
    }
    if let Some(dir) = &args.record {
        cmd.arg("--record").arg(dir);
    }
    cmd.args(["--settle-s", &args.settle_s.to_string()]);
    cmd.args(["--window-s", &args.window_s.to_string()]);
    cmd.arg("--report").arg(report);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    // Workers end with the coordinator, however it ends.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().context("starting a loadgen worker")
}

/// Prints the fleet's progress each second; stops the workers once enough flows are
/// done or on SIGINT/SIGTERM; returns when every worker has exited.
fn watch(
    args: &Args,
    latest: &Mutex<Vec<SeriesPoint>>,
    children: &mut [(Child, std::path::PathBuf)],
) -> Result<()> {
    let started = Instant::now();
    let stop = signal_flag()?;
    // Storms are the workers' business: pass each signal on.
    let storms = [libc::SIGUSR1, libc::SIGUSR2].map(|signal| {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook_register(signal, flag.clone()).map(|()| (signal, flag))
    });
    let storms = storms.into_iter().collect::<Result<Vec<_>>>()?;
    let mut stopping: Option<Instant> = None;
    let (mut last_bytes, mut last_events) = (0u64, 0u64);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        for (signal, flag) in &storms {
            if flag.swap(false, std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: kill takes plain integers; each pid is a child not yet reaped.
                children.iter().for_each(|(c, _)| unsafe {
                    libc::kill(c.id() as i32, *signal);
                });
            }
        }
        let sum = stats::sum_series(
            &latest
                .lock()
                .expect("the only critical sections store or sum points; none panics")
                .iter()
                .map(std::slice::from_ref)
                .collect::<Vec<_>>(),
        );
        let now = sum.first().cloned().unwrap_or_default();
        eprintln!(
            "[{:>4}s] connected {}/{} tasks {} flows {} upload {:.1} MB/s errors {} reconnects {} tickets {}{}",
            started.elapsed().as_secs(),
            now.connected,
            args.clients,
            now.tasks,
            now.flows,
            now.upload_bytes.saturating_sub(last_bytes) as f64 / 1e6,
            now.errors,
            now.reconnects,
            now.tickets_offered,
            crate::stats::events_progress(&now, last_events),
        );
        last_bytes = now.upload_bytes;
        last_events = now.events_acked;
        let done_flows = args.exit_after_flows > 0 && now.flows >= args.exit_after_flows;
        let signalled = stop.load(std::sync::atomic::Ordering::Relaxed);
        if stopping.is_none() && (done_flows || signalled) {
            stopping = Some(Instant::now());
            // SAFETY: kill takes plain integers; each pid is a child not yet reaped.
            children.iter().for_each(|(c, _)| unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            });
        }
        let mut all_exited = true;
        for (child, _) in children.iter_mut() {
            match child.try_wait()? {
                Some(status) if !status.success() => bail!("a loadgen worker failed: {status}"),
                Some(_) => {}
                None => all_exited = false,
            }
        }
        if all_exited {
            return Ok(());
        }
        if stopping.is_some_and(|t| t.elapsed() > WORKER_STOP_GRACE) {
            children.iter_mut().for_each(|(c, _)| drop(c.kill()));
            bail!("workers did not stop within {WORKER_STOP_GRACE:?}");
        }
    }
}

/// A flag SIGINT and SIGTERM set, for loops that check it.
pub(crate) fn signal_flag() -> Result<Arc<std::sync::atomic::AtomicBool>> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [libc::SIGINT, libc::SIGTERM] {
        signal_hook_register(signal, flag.clone())?;
    }
    Ok(flag)
}

fn signal_hook_register(signal: i32, flag: Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    signal_hook::flag::register(signal, flag)
        .map(|_| ())
        .context("installing a signal handler")
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
