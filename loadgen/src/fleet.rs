//! One process's share of the fleet: start its agents (ramped), watch them, report.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use packhunt::agent::run::{self, AgentOptions};
use packhunt::agent::url::ServerUrl;
use packhunt::config::ClientConfig;
use packhunt::protocol::pb;
use packhunt::tls::agent_key::AgentIdentity;

use crate::stats::{AgentObserver, Stats};
use crate::{Args, SyntheticRunner, AGENTS_PER_SOURCE_IP};

pub async fn run_fleet(args: Args, config: ClientConfig) -> Result<()> {
    let urls = config.client.server_urls.iter().map(|u| ServerUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
    let identities = load_identities(&args)?;
    let fleet_size = args.first_agent + args.clients;
    let source_ips = if args.source_ips == 0 { fleet_size.div_ceil(AGENTS_PER_SOURCE_IP).max(1) } else { args.source_ips };
    let stats = Arc::new(Stats::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::new(SyntheticRunner::for_args(&args));
    // Workers only run agents; the coordinator (or a lone process) drives the scenario.
    let driver = (!args.worker).then(|| args.driver_plan(&config.client.ca_certificate)).transpose()?;
    let driver = driver.map(|plan| tokio::spawn(crate::driver::drive(plan, stop_rx.clone())));
    let started = Instant::now();
    let mut agents = Vec::with_capacity(args.clients);
    for (local, identity) in identities.into_iter().enumerate() {
        let i = args.first_agent + local;
        let tls = packhunt::tls::client::agent_client_config(
            &config.client.ca_certificate,
            identity.rustls_cert_chain(),
            identity.rustls_private_key(),
        )?;
        let local_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips) as u8));
        let info = pb::ClientInfo { hostname: format!("loadgen-{i}"), os: "linux".into(), version: "loadgen".into() };
        let opts = AgentOptions {
            urls: urls.clone(),
            tls,
            local_ip: Some(local_ip),
            info,
            max_upload_bytes: config.client.max_upload_bytes,
            drop_connection_every_uploads: args.drop_connection_every_uploads,
        };
        let observer = Arc::new(AgentObserver { stats: stats.clone(), client_id: identity.client_id().to_string() });
        let (stop, runner) = (stop_rx.clone(), runner.clone());
        let delay = Duration::from_micros(local as u64 * 1_000_000 / args.ramp_per_second.max(1));
        agents.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run::run(opts, runner, observer, stop).await;
        }));
    }
    let connect_all = watch_progress(&args, &stats, started).await;
    let _ = stop_tx.send(true);
    for agent in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    }
    let mut report = stats.report(args.clients, started.elapsed(), connect_all);
    if let Some(driver) = driver {
        report.add_driver(args.scenario, driver.await??);
    }
    let text = serde_json::to_string_pretty(&report)?;
    match &args.report {
        Some(path) => std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    if !args.worker {
        eprintln!(
            "loadgen done: peak {} connected, {} tasks, {} flows, {} errors",
            report.connected_peak, report.tasks_received, report.flows_completed, report.errors
        );
    }
    Ok(())
}

fn load_identities(args: &Args) -> Result<Vec<AgentIdentity>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(args.clients);
    for i in args.first_agent..args.first_agent + args.clients {
        let identity = match &args.identity_dir {
            Some(dir) => packhunt::agent::writeback::load_or_create(&dir.join(format!("agent-{i}.toml")))?,
            None => AgentIdentity::generate()?,
        };
        out.push(identity);
    }
    eprintln!("loadgen: {} agent identities ready in {:.1}s", out.len(), started.elapsed().as_secs_f64());
    Ok(out)
}

/// Prints a progress line each second until the run should end; returns how long it
/// took for every agent to connect, if they all did.
async fn watch_progress(args: &Args, stats: &Stats, started: Instant) -> Option<Duration> {
    let deadline = started + Duration::from_secs(args.duration_s);
    let mut connect_all = None;
    let mut last_bytes = 0u64;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = tick => {}
            _ = async { if let Some(s) = interrupt.as_mut() { s.recv().await; } else { std::future::pending::<()>().await } } => return connect_all,
            _ = async { if let Some(s) = terminate.as_mut() { s.recv().await; } else { std::future::pending::<()>().await } } => return connect_all,
        }
        let connected = stats.connected.load(Ordering::Relaxed);
        if connect_all.is_none() && stats.ever_connected.load(Ordering::Relaxed) as usize >= args.clients {
            connect_all = Some(started.elapsed());
        }
        let point = stats.snapshot(started.elapsed().as_secs());
        if args.worker {
            // The coordinator reads these lines and prints one line for the fleet.
            println!("{}", serde_json::to_string(&point).expect("points serialise"));
        }
        stats.record_point(point);
        let bytes = stats.upload_bytes.load(Ordering::Relaxed);
        if !args.worker {
            eprintln!(
            "[{:>4}s] connected {connected}/{} tasks {} flows {} upload {:.1} MB/s errors {}",
            started.elapsed().as_secs(),
            args.clients,
            stats.tasks.load(Ordering::Relaxed),
            stats.flows_done.load(Ordering::Relaxed),
            (bytes - last_bytes) as f64 / 1e6,
            stats.errors.load(Ordering::Relaxed),
        );
        }
        last_bytes = bytes;
        let flows = stats.flows_done.load(Ordering::Relaxed);
        if Instant::now() >= deadline || (args.exit_after_flows > 0 && flows >= args.exit_after_flows) {
            return connect_all;
        }
    }
}
