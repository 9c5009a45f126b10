//! The GUI/API server. It runs on the priority executor (or, in the `shared` baseline,
//! on agent shard 0) and reaches agent shards only through the notifier: it writes
//! requests to the datastore and says "client C has new work"; it never touches a
//! session.

pub mod assets;
pub mod audit;
pub mod auth;
pub mod cancel;
pub mod clients;
pub mod connection;
pub mod csv;
pub mod events;
pub mod export;
pub mod health;
pub mod hunts;
pub mod live;
pub mod login;
pub mod monitoring;
pub mod permissions;
pub mod request_checks;
pub mod routes;
pub mod session;
pub mod stream;
pub mod throttle;
pub mod uploads;
pub mod users;
pub mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpListener;
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

use crate::config::{FrontendRole, ServerConfig};
use crate::datastore::Datastore;
use crate::events::WatchHub;
use crate::metrics;
use crate::notify::presence::Presence;
use crate::notify::FleetNotifier;
use crate::runtime::shutdown::ShutdownSignal;

/// What every API request can reach.
pub struct ApiCtx {
    pub config: Arc<ServerConfig>,
    pub datastore: Datastore,
    pub fleet: Rc<FleetNotifier>,
    /// The client event table (the master only).
    pub event_table: events::EventTableSource,
    /// Hunts (the master only).
    pub hunts: Option<Rc<crate::hunts::Hunts>>,
    pub presence: Rc<Presence>,
    /// The client index every client list and search reads (the master only).
    pub clients: Option<Rc<crate::clients::ClientIndex>>,
    pub auth: auth::Authenticator,
    pub frontend_name: String,
    /// A minion serves only `/metrics` (it has no GUI).
    pub role: FrontendRole,
    /// Live watchers of client events (the master only).
    pub watch: Option<WatchHub>,
    /// The GUI's live streams (server-sent events).
    pub live: live::LiveStreams,
    /// The audit trail every change is recorded in.
    pub audit: crate::audit::AuditLog,
    /// Calls being routed (HTTP and gRPC): a stop waits for them, so that none is cut
    /// between the documents it writes.
    pub calls_in_flight: std::cell::Cell<usize>,
}

/// Runs hyper's connection futures on the current glommio executor.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

pub fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).map_err(std::io::Error::from)
}

/// Accepts GUI/API connections until shutdown, each within the limits of
/// `connection.rs` (a cap on how many, deadlines on the handshake, headers and idleness).
pub async fn serve(
    ctx: Rc<ApiCtx>,
    listener: TcpListener,
    tls: TlsAcceptor,
    shutdown: ShutdownSignal,
) {
    use futures::future::{self, Either};
    let mut shutdown = shutdown;
    let limits = ctx.config.gui.connections;
    let cap = connection::ConnectionCap::new(&limits);
    loop {
        let accept = listener.accept();
        futures::pin_mut!(accept);
        let stream = match future::select(accept, shutdown).await {
            Either::Left((Ok(stream), signal)) => {
                shutdown = signal;
                stream
            }
            Either::Left((Err(e), signal)) => {
                shutdown = signal;
                tracing::warn!("GUI accept failed: {e}");
                glommio::timer::sleep(crate::limits::ACCEPT_BACKOFF_ON_EMFILE).await;
                continue;
            }
            Either::Right(_) => {
                ctx.live
                    .wait_ended(crate::limits::LIVE_STREAMS_END_ON_SHUTDOWN)
                    .await;
                return calls_finished(&ctx).await;
            }
        };
        // Over the cap: dropping the stream closes it before any TLS work.
        let Some(slot) = cap.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok().map(|a| auth::PeerAddress(a.ip()));
        let (ctx, tls) = (ctx.clone(), tls.clone());
        glommio::spawn_local(async move {
            serve_connection(ctx, tls, stream, peer, limits).await;
            drop(slot);
        })
        .detach();
    }
}

/// Waits (up to API_CALLS_FINISH_ON_SHUTDOWN) for the calls being routed to be answered.
async fn calls_finished(ctx: &ApiCtx) {
    // How often the stop looks whether the calls are done.
    const CALLS_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
    let limit = crate::limits::API_CALLS_FINISH_ON_SHUTDOWN;
    let busy = || ctx.calls_in_flight.get() > 0;
    if !crate::runtime::deadline::idle_within(limit, CALLS_POLL_INTERVAL, busy).await {
        tracing::warn!(
            calls = ctx.calls_in_flight.get(),
            "API calls still being answered at shutdown are cut"
        );
    }
}

async fn serve_connection(
    ctx: Rc<ApiCtx>,
    tls: TlsAcceptor,
    stream: glommio::net::TcpStream,
    peer: Option<auth::PeerAddress>,
    limits: crate::config::GuiConnectionLimits,
) {
    use futures::future::{self, Either};
    let watch = connection::Watch::new();
    let handshake = crate::runtime::deadline::with_deadline(
        limits.tls_accept_timeout,
        Box::pin(tls.accept(stream)),
    );
    let tls_stream = match handshake.await {
        Some(Ok(tls_stream)) => tls_stream,
        Some(Err(e)) => return tracing::debug!("GUI TLS handshake failed: {e}"),
        None => {
            return metrics::metrics().gui_connection_closed(metrics::GuiConnectionEnd::TlsTimeout)
        }
    };
    watch.handshake_done();
    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        watch.speaks_h2();
    }
    // Watched above TLS: a request's first bytes often share a read with the client's
    // Finished, so only plaintext reads say when a request's headers began.
    let tls_stream = crate::runtime::observed_read::ObservedRead::with(
        tls_stream,
        connection::HeaderWatch(watch.clone()),
    );
    let io = TokioIo::new(crate::runtime::io_compat::TokioCompat::new(tls_stream));
    let requests = watch.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = requests.request_started();
        if let Some(peer) = peer {
            req.extensions_mut().insert(peer);
        }
        let ctx = ctx.clone();
        async move {
            let response = routes::handle(&ctx, req).await;
            Ok::<_, Infallible>(response.map(|body| connection::Tracked::new(body, in_flight)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(LocalExec);
    // The watchdog below bounds headers and idleness: hyper's own timer needs a Send
    // sleep, which a glommio executor has not.
    builder.http1().header_read_timeout(None);
    let served = builder.serve_connection(io, service);
    let expired = watch.expired(limits);
    futures::pin_mut!(served, expired);
    // A connection past a limit is dropped: its socket closes at once.
    if let Either::Left((Err(e), _)) = future::select(served, expired).await {
        tracing::debug!("GUI connection ended: {e}");
    }
}

pub type ApiResponse = hyper::Response<ApiBody>;

/// A response body: whole (every JSON answer), streamed for as long as the request
/// lasts (live watch), or streamed from a datastore reader that may fail midway
/// (downloads, exports: an error then aborts the response, so the client never takes a
/// cut-short body for a whole one). `Send`, since the blocking pool builds whole responses.
pub enum ApiBody {
    Whole(Full<Bytes>),
    Streamed(Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>),
    Fallible(Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>),
}

impl ApiBody {
    pub fn whole(bytes: Bytes) -> Self {
        Self::Whole(Full::new(bytes))
    }
}

impl hyper::body::Body for ApiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Whole(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|e: Infallible| match e {}))),
            Self::Streamed(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
            Self::Fallible(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|chunk| chunk.map(|bytes| bytes.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(full) => full.is_end_stream(),
            Self::Streamed(_) | Self::Fallible(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(full) => full.size_hint(),
            Self::Streamed(_) | Self::Fallible(_) => SizeHint::default(),
        }
    }
}
