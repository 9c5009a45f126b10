//! `--measure-handshake N`: the server side's CPU cost of one agent-port handshake, with no
//! socket, HTTP/2 or session work around it, so a frontend's CPU per accepted connection
//! has a same-run floor to be compared with.
//!
//! Both ends run in this thread and talk through memory. The server is
//! `packhunt::tls::server::agent_server_config` built from the deployment's own
//! server.config.toml; clients are `agent_client_config` with keys made as the fleet makes
//! them. Only calls into the `ServerConnection` are timed, on this thread's CPU clock
//! (CLOCK_THREAD_CPUTIME_ID), so the client's half and time spent preempted are left out.
//! Full handshakes (client resumption disabled) and resumed ones (each client offers the
//! ticket of its previous connection) run in alternating blocks, so drift in the box's
//! load falls on both kinds alike.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use serde::Serialize;

use packhunt::tls::agent_key::AgentIdentity;

/// Distinct agent keys the handshakes rotate through: enough that no single ticket or key
/// is special, few enough that making them costs under a second.
pub(crate) const IDENTITIES: usize = 16;
/// Handshakes of each kind per alternating block.
const BLOCK: usize = 50;
/// Handshakes of each kind run and discarded first (caches, lazy statics, CPU frequency).
const WARMUP: usize = 100;
/// Most flights one handshake may take before it is called stuck (TLS 1.3 needs 3).
const MAX_FLIGHTS: usize = 16;

#[derive(Serialize)]
pub struct HandshakeReport {
    pub handshakes_per_kind: usize,
    /// CPU this thread ran on at the end (check it against the taskset asked for).
    pub cpu: i32,
    /// Cost of one pair of thread-CPU clock reads; subtracted once per timed section.
    pub timer_overhead_ns: u64,
    pub full: KindReport,
    pub resumed: KindReport,
    /// resumed / full, server CPU per handshake (means).
    pub resumed_to_full_ratio: f64,
}

#[derive(Serialize)]
pub struct KindReport {
    pub count: u64,
    /// Handshakes of this arm the server finished as resumed (0 for full, all for resumed).
    pub server_saw_resumed: u64,
    pub server_cpu_us_mean: f64,
    pub server_cpu_us_p50: f64,
    pub server_cpu_us_p99: f64,
    /// Wall time of the same server calls (includes time preempted).
    pub server_wall_us_mean: f64,
}

/// Sums what the server's calls cost, on both clocks.
#[derive(Default)]
struct ServerTime {
    cpu: Duration,
    wall: Duration,
    sections: u32,
}

impl ServerTime {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (c0, w0) = (thread_cpu(), Instant::now());
        let out = f();
        self.wall += w0.elapsed();
        self.cpu += thread_cpu().saturating_sub(c0);
        self.sections += 1;
        out
    }
}

pub fn measure(server_config: &Path, client_config: &Path, n: usize) -> Result<HandshakeReport> {
    ensure!(n > 0, "--measure-handshake needs at least one handshake");
    let server_cfg = packhunt::config::ServerConfig::load(server_config)?;
    let client_cfg = packhunt::config::ClientConfig::load(client_config)?;
    let server = packhunt::tls::server::agent_server_config(server_cfg.frontend.master_tls()?)?;
    let name = server_name(&client_cfg)?;
    let mut full_clients = Vec::with_capacity(IDENTITIES);
    let mut resuming_clients = Vec::with_capacity(IDENTITIES);
    for _ in 0..IDENTITIES {
        let identity = AgentIdentity::generate()?;
        let config = packhunt::tls::client::agent_client_config(
            &client_cfg.client.ca_certificate,
            identity.rustls_cert_chain(),
            identity.rustls_private_key(),
        )?;
        let mut no_tickets = (*config).clone();
        no_tickets.resumption = Resumption::disabled();
        full_clients.push(Arc::new(no_tickets));
        resuming_clients.push(config);
    }
    // Each resuming client needs a ticket before its first resumed handshake.
    for client in &resuming_clients {
        handshake(&server, client, &name)?;
    }
    let overhead = timer_overhead();
    let mut full = Arm::new()?;
    let mut resumed = Arm::new()?;
    let mut i = 0usize;
    while full.count < n || resumed.count < n {
        for _ in 0..BLOCK {
            let record = i >= WARMUP;
            full.run(
                &server,
                &full_clients[i % IDENTITIES],
                &name,
                overhead,
                record,
                n,
            )?;
            i += 1;
        }
        for j in 0..BLOCK {
            let record = i - BLOCK + j >= WARMUP;
            resumed.run(
                &server,
                &resuming_clients[(i + j) % IDENTITIES],
                &name,
                overhead,
                record,
                n,
            )?;
        }
    }
    let (full, resumed) = (full.report(), resumed.report());
    Ok(HandshakeReport {
        handshakes_per_kind: n,
        // SAFETY: sched_getcpu has no preconditions.
        cpu: unsafe { libc::sched_getcpu() },
        timer_overhead_ns: overhead.as_nanos() as u64,
        resumed_to_full_ratio: resumed.server_cpu_us_mean
            / full.server_cpu_us_mean.max(f64::MIN_POSITIVE),
        full,
        resumed,
    })
}

/// The name agents check the frontend's certificate against: the host of the client
/// config's first server URL.
pub(crate) fn server_name(
    client_cfg: &packhunt::config::ClientConfig,
) -> Result<ServerName<'static>> {
    let url = client_cfg
        .client
        .server_urls
        .first()
        .context("client config has no server_urls")?;
    let host = url.host.clone();
    ServerName::try_from(host.clone()).map_err(|_| anyhow::anyhow!("bad server name `{host}`"))
}

/// One kind of handshake's samples.
struct Arm {
    count: usize,
    saw_resumed: u64,
    cpu_ns: Histogram<u64>,
    cpu_total: Duration,
    wall_total: Duration,
}

impl Arm {
    fn new() -> Result<Self> {
        let cpu_ns = Histogram::new_with_bounds(1, 10_000_000_000, 3)?;
        Ok(Self {
            count: 0,
            saw_resumed: 0,
            cpu_ns,
            cpu_total: Duration::ZERO,
            wall_total: Duration::ZERO,
        })
    }

    fn run(
        &mut self,
        server: &Arc<ServerConfig>,
        client: &Arc<ClientConfig>,
        name: &ServerName<'static>,
        overhead: Duration,
        record: bool,
        n: usize,
    ) -> Result<()> {
        let (time, kind) = handshake(server, client, name)?;
        if !record || self.count >= n {
            return Ok(());
        }
        let cpu = time.cpu.saturating_sub(overhead * time.sections);
        self.count += 1;
        self.saw_resumed += u64::from(kind == Some(HandshakeKind::Resumed));
        self.cpu_total += cpu;
        self.wall_total += time.wall.saturating_sub(overhead * time.sections);
        self.cpu_ns.record((cpu.as_nanos() as u64).max(1))?;
        Ok(())
    }

    fn report(&self) -> KindReport {
        let n = self.count.max(1) as f64;
        KindReport {
            count: self.count as u64,
            server_saw_resumed: self.saw_resumed,
            server_cpu_us_mean: self.cpu_total.as_secs_f64() * 1e6 / n,
            server_cpu_us_p50: self.cpu_ns.value_at_quantile(0.5) as f64 / 1e3,
            server_cpu_us_p99: self.cpu_ns.value_at_quantile(0.99) as f64 / 1e3,
            server_wall_us_mean: self.wall_total.as_secs_f64() * 1e6 / n,
        }
    }
}

/// One handshake through memory, including the server's session ticket reaching the
/// client (so the next handshake of a resuming client can use it). Returns the time spent
/// in server calls and how the server saw the handshake.
fn handshake(
    server_cfg: &Arc<ServerConfig>,
    client_cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> Result<(ServerTime, Option<HandshakeKind>)> {
    let mut time = ServerTime::default();
    let mut client = ClientConnection::new(client_cfg.clone(), name.clone())?;
    let mut server = time.time(|| ServerConnection::new(server_cfg.clone()))?;
    let mut wire = Vec::with_capacity(16 * 1024);
    for _ in 0..MAX_FLIGHTS {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire)?;
        }
        if !wire.is_empty() {
            time.time(|| feed(&mut server, &wire))?;
        }
        wire.clear();
        time.time(|| -> Result<()> {
            while server.wants_write() {
                server.write_tls(&mut wire)?;
            }
            Ok(())
        })?;
        if !wire.is_empty() {
            feed(&mut client, &wire)?;
        }
        let quiet = !client.wants_write() && !server.wants_write();
        if quiet && !client.is_handshaking() && !server.is_handshaking() {
            return Ok((time, server.handshake_kind()));
        }
    }
    bail!("handshake did not finish within {MAX_FLIGHTS} flights")
}

/// Hands `bytes` to a connection and lets it process them.
fn feed<C>(conn: &mut C, mut bytes: &[u8]) -> Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<<C as TlsSide>::Data>> + TlsSide,
{
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes)?;
        conn.process_new_packets()?;
    }
    // Application data never flows here; drain anything so buffers stay bounded.
    let mut sink = [0u8; 1024];
    while let Ok(got) = conn.reader().read(&mut sink) {
        if got == 0 {
            break;
        }
    }
    let _ = conn.writer().flush();
    Ok(())
}

/// Names the side-specific data of a rustls connection so `feed` serves both ends.
trait TlsSide {
    type Data;
}
impl TlsSide for ClientConnection {
    type Data = rustls::client::ClientConnectionData;
}
impl TlsSide for ServerConnection {
    type Data = rustls::server::ServerConnectionData;
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    debug_assert_eq!(
        rc, 0,
        "CLOCK_THREAD_CPUTIME_ID is always available on Linux"
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median cost of timing an empty section, to take out of every timed section.
fn timer_overhead() -> Duration {
    let mut samples: Vec<Duration> = (0..2001)
        .map(|_| {
            let c0 = thread_cpu();
            let _w = Instant::now();
            thread_cpu().saturating_sub(c0)
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the in-memory pump completes real handshakes of both kinds with the
    /// frontend's configs. Method: a generated deployment, a few handshakes per kind.
    #[test]
    fn full_and_resumed_handshakes_complete() {
        let dir = std::env::temp_dir().join(format!("loadgen-handshake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = packhunt::config::generate::GenerateOptions::new(&dir);
        opts.admin_password = Some("pw".into());
        let generated = packhunt::config::generate::generate(&opts).unwrap();
        let report = measure(
            &generated.server_config_path,
            &generated.client_config_path,
            20,
        )
        .unwrap();
        assert_eq!(report.full.count, 20);
        assert_eq!(report.full.server_saw_resumed, 0);
        assert_eq!(report.resumed.count, 20);
        assert_eq!(report.resumed.server_saw_resumed, 20);
        assert!(report.full.server_cpu_us_mean > 0.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
