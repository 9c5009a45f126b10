//! The accept loop of one agent shard. Every shard binds the agent port with
//! SO_REUSEPORT (glommio's default), so the kernel spreads new connections over shards.
//! Admission happens before any TLS work: a connection above the open-files budget is
//! closed at once. A shard accepts only while it has a handshake permit
//! (`limits.handshakes_in_flight_per_shard`): beyond that, connections wait in the
//! kernel's accept queue instead of sharing the core so thinly that they all miss the
//! handshake deadline. One source address holds at most
//! `HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT` of them; its connections beyond are closed at
//! once, so it cannot keep other sources waiting. On EMFILE the listener stays readable, so the loop sleeps
//! instead of spinning. On shutdown the listener is closed at once and the shard drains
//! (`transport::drain`).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures::future::{self, Either};
use futures::pin_mut;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};

use crate::limits::{
    ACCEPT_BACKOFF_ON_EMFILE, HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT, RESERVED_FILES_COUNT,
    TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL,
};
use crate::metrics::{metrics, ConnectionRefusal};
use crate::runtime::coalesced_writes::CoalescedWrites;
use crate::sessions::shard::ShardCtx;
use crate::transport::admission::Admission;
use crate::transport::agent_conn;
use crate::transport::agent_tls::AgentTlsConfig;
use crate::transport::drain::{self, DrainReport};
use crate::transport::source_handshakes::{SourceHandshakes, SourceSlot};

pub fn bind(ctx: &ShardCtx) -> io::Result<TcpListener> {
    TcpListener::bind(std::net::SocketAddr::new(
        ctx.config.frontend.bind_address,
        ctx.agent_port,
    ))
    .map_err(io::Error::from)
}

/// Accepts until shutdown, then drains this shard's connections; returns what the drain
/// did.
pub async fn run(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    listener: TcpListener,
    acceptor: AgentTlsConfig,
) -> DrainReport {
    let max_connections = (ctx.config.frontend.max_open_files - RESERVED_FILES_COUNT) as i64;
    let live = Rc::new(Cell::new(0usize));
    let permits = Rc::new(Semaphore::new(u64::from(
        ctx.config.limits.handshakes_in_flight_per_shard.get(),
    )));
    let sources = SourceHandshakes::new(HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT);
    let mut shutdown = ctx.shutdown_signal();
    loop {
        let permit = {
            let acquire = permits.acquire_static_permit(1);
            pin_mut!(acquire);
            match future::select(acquire, shutdown).await {
                Either::Left((Ok(permit), signal)) => {
                    shutdown = signal;
                    permit
                }
                Either::Left((Err(_), _)) | Either::Right(_) => break,
            }
        };
        let accept = listener.accept();
        pin_mut!(accept);
        let accepted = match future::select(accept, shutdown).await {
            Either::Left((accepted, signal)) => {
                shutdown = signal;
                accepted
            }
            Either::Right(_) => break,
        };
        match accepted.map_err(io::Error::from) {
            Ok(stream) => {
                metrics()
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                if !admission.accept_rate.try_take() {
                    metrics().connection_refused(ConnectionRefusal::RateLimited);
                    continue; // closed before any TLS work: the agent backs off
                }
                if metrics().connections_open.load(Ordering::Relaxed) >= max_connections {
                    metrics().connection_refused(ConnectionRefusal::OutOfFiles);
                    continue; // dropping the stream closes it before any TLS work
                }
                let Some(source) = stream
                    .peer_addr()
                    .ok()
                    .and_then(|a| sources.try_begin(a.ip()))
                else {
                    metrics()
                        .agentport_source_handshakes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    continue; // closed before any TLS work; the permit comes back
                };
                admit(&ctx, &admission, &acceptor, &live, stream, (permit, source));
            }
            Err(e) if is_out_of_files(&e) => {
                metrics().connection_refused(ConnectionRefusal::OutOfFiles);
                tracing::warn!(shard = ctx.shard, "accept: {e}; backing off");
                glommio::timer::sleep(ACCEPT_BACKOFF_ON_EMFILE).await;
            }
            Err(e) => {
                tracing::warn!(shard = ctx.shard, "accept failed: {e}");
                glommio::timer::sleep(ACCEPT_BACKOFF_ON_EMFILE).await;
            }
        }
    }
    // Closed before anything else: new agents go elsewhere while these drain.
    drop(listener);
    drain::drain(&ctx, &admission.drain, &live).await
}

fn admit(
    ctx: &Rc<ShardCtx>,
    admission: &Rc<Admission>,
    acceptor: &AgentTlsConfig,
    live: &Rc<Cell<usize>>,
    stream: TcpStream,
    (handshake, source): (StaticPermit, SourceSlot),
) {
    // Nagle × delayed ACK gave 40 ms outliers on task pushes (docs/architecture.md).
    let _ = stream.set_nodelay(true);
    set_keepalive(&stream);
    live.set(live.get() + 1);
    let (ctx, admission, acceptor, live) = (
        ctx.clone(),
        admission.clone(),
        acceptor.clone(),
        live.clone(),
    );
    // One send per poll of the connection task (runtime/coalesced_writes.rs).
    let (socket, sends) = CoalescedWrites::deferred(stream);
    let serve = sends.after_each_poll(agent_conn::serve(
        ctx, admission, acceptor, socket, handshake, source,
    ));
    glommio::spawn_local(async move {
        serve.await;
        live.set(live.get() - 1);
    })
    .detach();
}

fn set_keepalive(stream: &TcpStream) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `stream`, which outlives this borrow; the borrow is only
    // used for the setsockopt calls below and never closes the fd.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    let _ = sock.set_tcp_keepalive(&keepalive);
}

fn is_out_of_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
