//! The bare TLS client: N connections to the bare server from C blocking workers, each a
//! full mTLS handshake with an agent identity (or a resumed one with `resumed`), a read
//! until the server's session ticket arrived, then close_notify and close.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use serde::Serialize;

use packhunt::tls::agent_key::AgentIdentity;

use crate::fleet::source_ip;
use crate::handshake::{server_name, IDENTITIES};

/// Workers when the command line names none.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Most workers (threads) one run starts: each holds one connection at a time, and past
/// a few hundred the threads cost the client's core more than the connections do.
const MAX_CONCURRENCY: usize = 1024;
/// A connect, read or write that takes longer fails the connection instead of holding a
/// worker: loopback answers in microseconds, so only a stuck server takes this long.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ClientOptions {
    pub target: SocketAddr,
    /// Connections in all, over every worker.
    pub connections: usize,
    pub concurrency: usize,
    /// Each worker keeps its ticket cache across its connections (all but its first
    /// resume); otherwise resumption is off and every handshake is full.
    pub resumed: bool,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.K (0: let the kernel
    /// pick, i.e. 127.0.0.1 alone).
    pub source_ips: usize,
}

/// Printed as JSON when every connection was made.
#[derive(Serialize, Debug, Default)]
pub struct ClientReport {
    pub connections: u64,
    pub handshakes: u64,
    /// Handshakes the client saw resumed (`handshake_kind()`).
    pub resumed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub wall_seconds: f64,
}

impl ClientReport {
    fn add(&mut self, other: Self) {
        self.connections += other.connections;
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// What every worker shares: where to connect and as whom.
struct Plan {
    target: SocketAddr,
    name: ServerName<'static>,
    ca: Vec<CertificateDer<'static>>,
    identities: Vec<AgentIdentity>,
    connections: usize,
    workers: usize,
    resumed: bool,
    source_ips: usize,
}

pub fn run(client_config: &Path, opts: &ClientOptions) -> Result<ClientReport> {
    if !(1..=MAX_CONCURRENCY).contains(&opts.concurrency) {
        bail!("--bare-tls-concurrency must be 1..={MAX_CONCURRENCY}");
    }
    if opts.source_ips > 0 && !opts.target.is_ipv4() {
        bail!("--source-ips spreads over 127.0.0.x: the target must be an IPv4 address");
    }
    let cfg = packhunt::config::ClientConfig::load(client_config)?;
    let workers = opts.concurrency.min(opts.connections);
    let identities = (0..IDENTITIES.min(workers))
        .map(|_| AgentIdentity::generate())
        .collect::<Result<Vec<_>, _>>()?;
    let plan = Arc::new(Plan {
        target: opts.target,
        name: server_name(&cfg)?,
        ca: cfg.client.ca_certificate.clone(),
        identities,
        connections: opts.connections,
        workers,
        resumed: opts.resumed,
        source_ips: opts.source_ips,
    });
    let started = Instant::now();
    let handles = (0..workers)
        .map(|w| {
            let plan = plan.clone();
            std::thread::Builder::new()
                .name(format!("bare-tls-{w}"))
                .spawn(move || worker(&plan, w))
                .context("starting a worker thread")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut report = ClientReport::default();
    for handle in handles {
        let done = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a bare TLS worker panicked"))??;
        report.add(done);
    }
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Worker `w` makes connections w, w + workers, w + 2 × workers, ... with its own
/// client config, so with resumption each worker's cache holds its own tickets.
fn worker(plan: &Plan, w: usize) -> Result<ClientReport> {
    let identity = &plan.identities[w % plan.identities.len()];
    let config = packhunt::tls::client::agent_client_config(
        &plan.ca,
        identity.rustls_cert_chain(),
        identity.rustls_private_key(),
    )?;
    let config = if plan.resumed {
        config
    } else {
        let mut no_tickets = (*config).clone();
        no_tickets.resumption = Resumption::disabled();
        Arc::new(no_tickets)
    };
    let mut report = ClientReport::default();
    for i in (w..plan.connections).step_by(plan.workers) {
        report.connections += 1;
        match connect_once(plan, &config, i) {
            Ok(kind) => {
                report.handshakes += 1;
                report.resumed += u64::from(kind == Some(HandshakeKind::Resumed));
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(report)
}

/// One connection: handshake, the server's session ticket, close_notify and close.
/// Returns how the handshake went. The client closes first, as a reconnecting agent
/// does, so the TIME_WAIT socket is the client's here as in the frontend's storms.
fn connect_once(
    plan: &Plan,
    config: &Arc<ClientConfig>,
    i: usize,
) -> Result<Option<HandshakeKind>> {
    let tcp = connect_tcp(plan, i).with_context(|| format!("connecting to {}", plan.target))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    tcp.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let conn = ClientConnection::new(config.clone(), plan.name.clone())?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .context("TLS handshake")?;
    }
    let kind = tls.conn.handshake_kind();
    // The frontend's config sends one ticket after the handshake, full or resumed (the
    // client offers resumption even with its own cache off). Waiting for it makes the
    // server's whole handshake part of the connection and gives a resuming worker its
    // next ticket.
    while tls.conn.tls13_tickets_received() == 0 {
        let (read_bytes, _) = tls
            .conn
            .complete_io(&mut tls.sock)
            .context("waiting for the session ticket")?;
        if read_bytes == 0 {
            bail!("the server closed before sending a session ticket");
        }
    }
    tls.conn.send_close_notify();
    tls.flush().context("sending close_notify")?;
    Ok(kind)
}

/// A TCP connection to the target, from source address `i` of `source_ips` when asked
/// to spread them (bound the way the fleet's agents bind theirs).
fn connect_tcp(plan: &Plan, i: usize) -> io::Result<TcpStream> {
    if plan.source_ips == 0 {
        return TcpStream::connect_timeout(&plan.target, SOCKET_TIMEOUT);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(plan.target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    packhunt::agent::comms::defer_port_choice(&socket);
    socket.bind(&SocketAddr::new(source_ip(i, plan.source_ips), 0).into())?;
    socket.connect_timeout(&plan.target.into(), SOCKET_TIMEOUT)?;
    Ok(socket.into())
}
