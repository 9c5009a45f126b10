//! The bare TLS server: one glommio executor on the calling thread (the benchmark pins
//! it to the frontend's shard cpu) that accepts, completes the agent-port mTLS
//! handshake, sends the session ticket, reads to the client's close and closes the
//! socket. Admission mirrors the frontend's accept loop (src/transport/accept.rs): a
//! handshake permit is taken before accept and returned once TLS is done, so a burst
//! waits in the kernel's accept queue as it does there. Nothing else of the frontend
//! runs: the gap between the two is what the frontend adds per connection.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::future::{self, Either};
use futures::{pin_mut, AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::{LocalExecutorBuilder, Placement};
use packhunt::limits::ACCEPT_BACKOFF_ON_EMFILE;
use packhunt::runtime::deadline::{idle_within, with_deadline};
use serde::Serialize;

/// Most memory the executor registers for io_uring buffers: the frontend's default
/// (`limits::DEFAULT_IO_MEMORY_BYTES`), and within the locked-memory allowance
/// (RLIMIT_MEMLOCK) of an unprivileged benchmark run.
const MAX_IO_MEMORY_BYTES: usize = 1024 * 1024;
/// How often the server checks for SIGTERM/SIGINT and the end of its run. A wake-up
/// costs microseconds, so the benchmark window barely sees it.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A client still connected this long after its handshake is closed: the benchmark's
/// clients close at once, so only a stuck one waits this long.
const CLOSE_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Application bytes are discarded through a buffer this big (clients send none).
const DISCARD_BUFFER_BYTES: usize = 1024;
/// At stop, connections still open get this long to finish, so the counts include the
/// last ones a client saw through (they are over in milliseconds).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// What the server runs with: the frontend's agent-port TLS and admission settings, read
/// from the deployment's server.config.toml.
pub struct ServerOptions {
    pub tls: Arc<rustls::ServerConfig>,
    /// The frontend's `limits.handshakes_in_flight_per_shard`.
    pub handshakes_in_flight: u64,
    /// The frontend's `limits.handshake_timeout`.
    pub handshake_timeout: Duration,
    pub io_memory_bytes: usize,
    pub io_ring_depth: usize,
    /// Stop after this long (None: only on SIGTERM/SIGINT).
    pub run_for: Option<Duration>,
}

impl ServerOptions {
    pub fn load(server_config: &Path, run_for: Option<Duration>) -> Result<Self> {
        let cfg = packhunt::config::ServerConfig::load(server_config)?;
        Ok(Self {
            tls: packhunt::tls::server::agent_server_config(cfg.frontend.master_tls()?)?,
            handshakes_in_flight: u64::from(cfg.limits.handshakes_in_flight_per_shard.get()),
            handshake_timeout: cfg.limits.handshake_timeout,
            io_memory_bytes: cfg.frontend.io_memory_bytes.min(MAX_IO_MEMORY_BYTES),
            io_ring_depth: cfg.frontend.io_ring_depth,
            run_for,
        })
    }
}

/// Printed as JSON when the server stops.
#[derive(Serialize, Debug)]
pub struct ServerReport {
    pub listen: String,
    /// CPU the executor ran on at the end (check it against the taskset asked for).
    pub cpu: i32,
    pub seconds: f64,
    pub connections_accepted: u64,
    pub handshakes_completed: u64,
    /// Handshakes rustls finished as resumed (`handshake_kind()`).
    pub handshakes_resumed: u64,
    /// Handshakes that failed or ran past the handshake deadline.
    pub handshake_failures: u64,
    pub accept_errors: u64,
}

/// Counters of one run; the executor is single-threaded, so plain cells.
#[derive(Default)]
struct Counts {
    accepted: Cell<u64>,
    completed: Cell<u64>,
    resumed: Cell<u64>,
    failures: Cell<u64>,
    accept_errors: Cell<u64>,
    /// Connections accepted and not yet closed.
    open: Cell<u64>,
}

impl Counts {
    fn bump(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }
}

/// Counts a connection open for as long as it lives, however its task ends.
struct OpenGuard(Rc<Counts>);

impl OpenGuard {
    fn new(counts: Rc<Counts>) -> Self {
        Counts::bump(&counts.open);
        Self(counts)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Serves on `addr` until `stop` is set or the run's time is up; `on_bound` hears the
/// address actually bound (port 0 picks one) before the first accept.
pub fn run(
    opts: ServerOptions,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<ServerReport> {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bare-tls")
        .io_memory(opts.io_memory_bytes)
        .ring_depth(opts.io_ring_depth)
        .make()
        .map_err(|e| anyhow!("starting the glommio executor: {e}"))?;
    executor.run(serve(opts, addr, stop, on_bound))
}

async fn serve(
    opts: ServerOptions,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<ServerReport> {
    let listener = TcpListener::bind(addr)
        .map_err(io::Error::from)
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().map_err(io::Error::from)?;
    on_bound(bound);
    let started = Instant::now();
    let counts = Rc::new(Counts::default());
    let permits = Rc::new(Semaphore::new(opts.handshakes_in_flight));
    let acceptor = TlsAcceptor::from(opts.tls.clone());
    let stopped = stop_requested(stop, opts.run_for);
    pin_mut!(stopped);
    loop {
        let acquire = permits.acquire_static_permit(1);
        pin_mut!(acquire);
        let permit = match future::select(acquire, stopped.as_mut()).await {
            Either::Left((Ok(permit), _)) => permit,
            Either::Left((Err(_), _)) | Either::Right(_) => break,
        };
        let accept = listener.accept();
        pin_mut!(accept);
        let accepted = match future::select(accept, stopped.as_mut()).await {
            Either::Left((accepted, _)) => accepted.map_err(io::Error::from),
            Either::Right(_) => break,
        };
        match accepted {
            Ok(stream) => {
                Counts::bump(&counts.accepted);
                let conn = connection(
                    acceptor.clone(),
                    stream,
                    permit,
                    OpenGuard::new(counts.clone()),
                    opts.handshake_timeout,
                );
                glommio::spawn_local(conn).detach();
            }
            Err(e) => {
                // EMFILE leaves the listener readable: back off instead of spinning.
                Counts::bump(&counts.accept_errors);
                eprintln!("loadgen: bare TLS server: accept failed: {e}");
                glommio::timer::sleep(ACCEPT_BACKOFF_ON_EMFILE).await;
            }
        }
    }
    drop(listener);
    idle_within(STOP_GRACE, STOP_POLL_INTERVAL, || counts.open.get() > 0).await;
    Ok(ServerReport {
        listen: bound.to_string(),
        // SAFETY: sched_getcpu has no preconditions.
        cpu: unsafe { libc::sched_getcpu() },
        seconds: started.elapsed().as_secs_f64(),
        connections_accepted: counts.accepted.get(),
        handshakes_completed: counts.completed.get(),
        handshakes_resumed: counts.resumed.get(),
        handshake_failures: counts.failures.get(),
        accept_errors: counts.accept_errors.get(),
    })
}

/// Resolves once `stop` is set (the signal handler's flag) or `run_for` has passed.
async fn stop_requested(stop: Arc<AtomicBool>, run_for: Option<Duration>) {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && run_for.is_none_or(|limit| started.elapsed() < limit) {
        glommio::timer::sleep(STOP_POLL_INTERVAL).await;
    }
}

/// One connection: TCP_NODELAY as the frontend sets it, the handshake under the
/// frontend's deadline holding the permit, then read to the client's close and close.
async fn connection(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    permit: StaticPermit,
    open: OpenGuard,
    handshake_timeout: Duration,
) {
    let counts = &open.0;
    let _ = stream.set_nodelay(true);
    let handshake = async {
        let mut tls = acceptor.accept(stream).await?;
        // The session ticket is written when the client's Finished is read; flushing
        // here sends it whether or not the acceptor flushed it on its way out.
        tls.flush().await?;
        Ok::<_, io::Error>(tls)
    };
    let mut tls = match with_deadline(handshake_timeout, handshake).await {
        Some(Ok(tls)) => tls,
        Some(Err(_)) | None => return Counts::bump(&counts.failures),
    };
    drop(permit);
    Counts::bump(&counts.completed);
    if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        Counts::bump(&counts.resumed);
    }
    let client_closed = async {
        let mut discard = [0u8; DISCARD_BUFFER_BYTES];
        while tls.read(&mut discard).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    // Read errors (a reset, a FIN without close_notify) and stalls end the connection
    // all the same: the handshake was what counts. Dropping `tls` closes the socket.
    let _ = with_deadline(CLOSE_WAIT_LIMIT, client_closed).await;
}
