//! One process's share of the fleet: start its agents (ramped), watch them, report.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use packhunt::agent::run::{self, AgentOptions, Observer};
use packhunt::config::url::ServerUrl;
use packhunt::config::ClientConfig;
use packhunt::protocol::pb;
use packhunt::tls::agent_key::AgentIdentity;

use crate::events::{EventPlan, EventTags};
use crate::record::{Recorder, RecordingObserver};
use crate::stats::{AgentObserver, CountingTicketStore, Stats};
use crate::{Args, SyntheticRunner, AGENTS_PER_SOURCE_IP, MIN_SOURCE_IPS};
use packhunt::agent::events::EventSpool;
use rustls::pki_types::CertificateDer;

/// `answering`: the runtime the agents themselves run on (`--answer-nice`), their
/// connections staying on this one; None runs both here.
pub async fn run_fleet(
    args: Args,
    config: ClientConfig,
    answering: Option<tokio::runtime::Handle>,
) -> Result<()> {
    let here = tokio::runtime::Handle::current();
    let io = answering.is_some().then(|| here.clone());
    let urls = config.client.server_urls.clone();
    let identities = load_identities(&args)?;
    // A worker is handed the coordinator's resolved count; on its own, its part of the
    // fleet would pick a different one from the other workers'.
    let source_ips = source_ip_count(args.source_ips, args.first_agent + args.clients);
    let stats = Arc::new(Stats::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::new(SyntheticRunner::for_args(&args));
    let ca: Arc<[CertificateDer<'static>]> = config.client.ca_certificate.clone().into();
    let recorder = match &args.record {
        Some(dir) => {
            let role = if args.worker { "agents" } else { "both" };
            Some(Recorder::create(dir, role, args.first_agent, args.clients)?)
        }
        None => None,
    };
    // Workers only run agents; the coordinator (or a lone process) drives the scenario.
    let driver = (!args.worker)
        .then(|| {
            args.driver_plan(
                &config.client.ca_certificate,
                recorder.clone(),
                stats.window.clone(),
            )
        })
        .transpose()?;
    let driver = driver.map(|plan| tokio::spawn(crate::driver::drive(plan, stop_rx.clone())));
    let storm = storm_signals()?;
    let event_plan = args.event_plan(config.client.max_upload_bytes);
    let started = Instant::now();
    let mut agents = Vec::with_capacity(args.clients);
    for (local, identity) in identities.into_iter().enumerate() {
        let i = args.first_agent + local;
        let mut plan = AgentPlan {
            urls: urls.clone(),
            local_ip: source_ip(i, source_ips),
            info: pb::ClientInfo {
                hostname: format!("{}{i}", args.hostname_prefix),
                os: "linux".into(),
                version: "loadgen".into(),
            },
            max_upload_bytes: config.client.max_upload_bytes,
            drop_connection_every_uploads: args.drop_connection_every_uploads,
            enrolment_secret: config.client.enrolment_secret.clone(),
            ca: ca.clone(),
            identity,
            events: event_plan,
            tags: None,
            io: io.clone(),
        };
        let tls = plan.tls(&stats)?;
        let client_id = plan.identity.client_id().to_string();
        let counting = Arc::new(AgentObserver::new(stats.clone(), client_id.clone()));
        let (observer, tags): (Arc<dyn Observer>, _) = match &recorder {
            Some(recorder) => {
                let agent = recorder.agent(&client_id);
                let tags = EventTags {
                    run: recorder.run(),
                    agent: agent.clone(),
                };
                let observer = RecordingObserver {
                    inner: counting,
                    recorder: recorder.clone(),
                    agent,
                    runner: runner.clone(),
                };
                (Arc::new(observer), Some(tags))
            }
            None => (counting, None),
        };
        plan.tags = tags;
        let (stop, storm, runner, stats) = (
            stop_rx.clone(),
            storm.clone(),
            runner.clone(),
            stats.clone(),
        );
        let delay = Duration::from_micros(local as u64 * 1_000_000 / args.ramp_per_second.max(1));
        let agent = async move {
            tokio::time::sleep(delay).await;
            plan.run(tls, runner, observer, stop, storm, stats).await;
        };
        agents.push(answering.as_ref().unwrap_or(&here).spawn(agent));
    }
    let connect_all = watch_progress(&args, &stats, started).await;
    let _ = stop_tx.send(true);
    for agent in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    }
    if let Some(recorder) = &recorder {
        recorder.finish()?;
    }
    let mut report = stats.report(args.clients, started.elapsed(), connect_all);
    if let Some(driver) = driver {
        report.add_driver(args.scenario, driver.await??);
    }
    let text = serde_json::to_string_pretty(&report)?;
    match &args.report {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    if !args.worker {
        eprintln!(
            "loadgen done: peak {} connected, {} tasks, {} flows, {} errors",
            report.connected_peak, report.tasks_received, report.flows_completed, report.errors
        );
        if let Some(line) = report.events_summary() {
            eprintln!("loadgen {line}");
        }
    }
    Ok(())
}

/// How many source addresses a fleet of `fleet_size` agents spreads over: `asked`, or for
/// 0 as many as the fleet needs for ports and at least `MIN_SOURCE_IPS`.
pub(crate) fn source_ip_count(asked: usize, fleet_size: usize) -> usize {
    if asked == 0 {
        fleet_size
            .div_ceil(AGENTS_PER_SOURCE_IP)
            .max(MIN_SOURCE_IPS)
    } else {
        asked
    }
}

/// Source address of agent (or connection) `i` spread over `count` of them: 127.0.0.1,
/// 127.0.0.2, ... Linux routes all of 127.0.0.0/8 to loopback, so past 127.0.0.255 it
/// carries on in 127.0.1.x instead of wrapping. `count` must be at least 1.
pub(crate) fn source_ip(i: usize, count: usize) -> IpAddr {
    debug_assert!(count > 0, "callers pick at least one source address");
    let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    IpAddr::V4(Ipv4Addr::from(
        first.wrapping_add((i % count.max(1)) as u32),
    ))
}

fn load_identities(args: &Args) -> Result<Vec<AgentIdentity>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(args.clients);
    for i in args.first_agent..args.first_agent + args.clients {
        let identity = match &args.identity_dir {
            Some(dir) => {
                packhunt::agent::writeback::load_or_create(&dir.join(format!("agent-{i}.toml")))?
            }
            None => AgentIdentity::generate()?,
        };
        out.push(identity);
    }
    eprintln!(
        "loadgen: {} agent identities ready in {:.1}s",
        out.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Prints a progress line each second until the run should end; returns how long it
/// took for every agent to connect, if they all did.
async fn watch_progress(args: &Args, stats: &Stats, started: Instant) -> Option<Duration> {
    let deadline = started + Duration::from_secs(args.duration_s);
    let mut connect_all = None;
    let (mut last_bytes, mut last_events) = (0u64, 0u64);
    let mut next_window_s = args.window_s;
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = tick => {}
            _ = async { if let Some(s) = interrupt.as_mut() { s.recv().await; } else { std::future::pending::<()>().await } } => return connect_all,
            _ = async { if let Some(s) = terminate.as_mut() { s.recv().await; } else { std::future::pending::<()>().await } } => return connect_all,
        }
        let connected = stats.connected.load(Ordering::Relaxed);
        if connect_all.is_none()
            && stats.ever_connected.load(Ordering::Relaxed) as usize >= args.clients
        {
            connect_all = Some(started.elapsed());
        }
        let point = stats.snapshot(started.elapsed().as_secs());
        if args.worker {
            // The coordinator reads these lines and prints one line for the fleet.
            println!(
                "{}",
                serde_json::to_string(&point).expect("points serialise")
            );
        }
        stats.record_point(point.clone());
        let t_s = started.elapsed().as_secs();
        if args.window_s > 0 && t_s >= next_window_s {
            stats.close_window(t_s);
            next_window_s = t_s + args.window_s;
        }
        let bytes = stats.upload_bytes.load(Ordering::Relaxed);
        if !args.worker {
            eprintln!(
            "[{:>4}s] connected {connected}/{} tasks {} flows {} upload {:.1} MB/s errors {} reconnects {} tickets {}{}",
            started.elapsed().as_secs(),
            args.clients,
            stats.tasks.load(Ordering::Relaxed),
            stats.flows_done.load(Ordering::Relaxed),
            (bytes - last_bytes) as f64 / 1e6,
            stats.errors.load(Ordering::Relaxed),
            stats.reconnects.load(Ordering::Relaxed),
            stats.tickets_offered.load(Ordering::Relaxed),
            crate::stats::events_progress(&point, last_events),
        );
        }
        last_bytes = bytes;
        last_events = point.events_acked;
        let flows = stats.flows_done.load(Ordering::Relaxed);
        if Instant::now() >= deadline
            || (args.exit_after_flows > 0 && flows >= args.exit_after_flows)
        {
            return connect_all;
        }
    }
}

/// A reconnect storm asked for by signal; `count` tells storms apart.
#[derive(Clone, Copy, Default)]
struct Storm {
    count: u64,
    /// Reconnect with a new TLS config, so without a ticket (a full handshake).
    fresh_tls: bool,
}

/// SIGUSR1: storm with tickets kept; SIGUSR2: storm with fresh TLS configs.
fn storm_signals() -> Result<tokio::sync::watch::Receiver<Storm>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut resume =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut fresh =
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let (tx, rx) = tokio::sync::watch::channel(Storm::default());
    tokio::spawn(async move {
        loop {
            let fresh_tls = tokio::select! {
                Some(()) = resume.recv() => false,
                Some(()) = fresh.recv() => true,
                else => return,
            };
            tx.send_modify(|s| {
                *s = Storm {
                    count: s.count + 1,
                    fresh_tls,
                }
            });
            eprintln!(
                "loadgen: reconnect storm {} ({})",
                tx.borrow().count,
                if fresh_tls {
                    "full handshakes"
                } else {
                    "resumed"
                }
            );
        }
    });
    Ok(rx)
}

/// One simulated agent: what it needs to (re)build its options and TLS config.
struct AgentPlan {
    urls: Vec<ServerUrl>,
    local_ip: IpAddr,
    info: pb::ClientInfo,
    max_upload_bytes: u64,
    drop_connection_every_uploads: u64,
    /// The deployment's enrolment secret, from the client config, if it has one.
    enrolment_secret: Option<packhunt::config::EnrolmentSecret>,
    ca: Arc<[CertificateDer<'static>]>,
    identity: AgentIdentity,
    /// Synthetic client monitoring events (the events scenario only).
    events: Option<EventPlan>,
    /// `--record`: what numbers this agent's event rows.
    tags: Option<EventTags>,
    /// The runtime its connections run on (`--answer-nice`); None: the agent's own.
    io: Option<tokio::runtime::Handle>,
}

impl AgentPlan {
    /// The agent's own client config, with its ticket cache counting the tickets offered.
    fn tls(&self, stats: &Arc<Stats>) -> Result<Arc<rustls::ClientConfig>> {
        let config = packhunt::tls::client::agent_client_config(
            &self.ca,
            self.identity.rustls_cert_chain(),
            self.identity.rustls_private_key(),
        )?;
        let mut config = Arc::unwrap_or_clone(config);
        config.resumption =
            rustls::client::Resumption::store(Arc::new(CountingTicketStore::new(stats.clone())));
        Ok(Arc::new(config))
    }

    /// The agent's options for one run, and its event spool (to close when the run ends).
    fn options(
        &self,
        tls: Arc<rustls::ClientConfig>,
        observer: &Arc<dyn Observer>,
    ) -> (AgentOptions, Option<Arc<EventSpool>>) {
        let events = self
            .events
            .map(|plan| plan.agent_events(observer.clone(), self.tags.clone()));
        let spool = events.as_ref().map(|e| e.spool.clone());
        let options = AgentOptions {
            urls: self.urls.clone(),
            tls,
            local_ip: Some(self.local_ip),
            info: self.info.clone(),
            max_upload_bytes: self.max_upload_bytes,
            drop_connection_every_uploads: self.drop_connection_every_uploads,
            enrolment_secret: self.enrolment_secret.clone(),
            events,
            // Thousands of agents per process: their outboxes live in memory.
            outbox_dir: None,
            max_outbox_bytes: packhunt::limits::DEFAULT_MAX_OUTBOX_BYTES,
            // Simulated agents each make their own key: no clones, nothing to re-key.
            rekey: None,
            io: self.io.clone(),
        };
        (options, spool)
    }

    /// Runs the agent until `stop`; each storm ends its run and starts another with the same
    /// TLS config (so the client offers its ticket) or, when asked, a fresh one.
    async fn run(
        self,
        mut tls: Arc<rustls::ClientConfig>,
        runner: Arc<SyntheticRunner>,
        observer: Arc<dyn Observer>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut storm: tokio::sync::watch::Receiver<Storm>,
        stats: Arc<Stats>,
    ) {
        loop {
            // A storm from before this agent started is not for it.
            storm.borrow_and_update();
            let (phase_tx, phase_rx) = tokio::sync::watch::channel(false);
            let phase_over = async {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = async { if storm.changed().await.is_err() { std::future::pending::<()>().await } } => {}
                }
                let _ = phase_tx.send(true);
            };
            // Events not yet acknowledged are lost with the run (a storm restarts them).
            let (options, spool) = self.options(tls.clone(), &observer);
            tokio::join!(
                run::run(options, runner.clone(), observer.clone(), phase_rx),
                phase_over
            );
            if let Some(spool) = spool {
                spool.close();
            }
            if *stop.borrow() {
                return;
            }
            if storm.borrow().fresh_tls {
                match self.tls(&stats) {
                    Ok(fresh) => tls = fresh,
                    Err(e) => observer.error(&format!("new TLS config: {e:#}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the automatic count covers the whole fleet's ports with at least
    // MIN_SOURCE_IPS addresses, an explicit count is kept, and a worker handed the
    // coordinator's count maps each agent to the address the coordinator would.
    #[test]
    fn source_addresses_follow_the_whole_fleet() {
        assert_eq!(source_ip_count(0, 1), MIN_SOURCE_IPS);
        assert_eq!(
            source_ip_count(0, AGENTS_PER_SOURCE_IP * (MIN_SOURCE_IPS + 4)),
            MIN_SOURCE_IPS + 4
        );
        assert_eq!(source_ip_count(0, AGENTS_PER_SOURCE_IP * 20 + 1), 21);
        assert_eq!(source_ip_count(3, 1_000_000), 3);
        let fleet = AGENTS_PER_SOURCE_IP * 25;
        let whole = source_ip_count(0, fleet);
        // A worker's own guess from its part differs; the resolved count passed on does not.
        assert_ne!(source_ip_count(0, 19_000), whole);
        assert_eq!(source_ip_count(whole, 19_000), whole);
        assert_eq!(source_ip(whole, whole), source_ip(0, whole));
    }
}
