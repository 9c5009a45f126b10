//! One agent connection on an agent shard: mTLS handshake under a deadline, the client
//! id from the certificate's key, then HTTP/2 with each request routed to the session
//! code. The connection's open result sets live and die with it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future;
use glommio::net::TcpStream;
use glommio::sync::StaticPermit;
use h2::server::SendResponse;
use h2::Reason;
use http::{Method, Request, StatusCode};

use crate::ids::ClientId;
use crate::limits::{
    CLIENT_HELLO_TIMEOUT, H2_CONNECTION_WINDOW_IDLE_BYTES, H2_LOCAL_ERROR_RESETS_COUNT,
    H2_PENDING_ACCEPT_RESETS_COUNT, H2_SEND_BUFFER_BYTES, H2_STREAM_WINDOW_BYTES,
    MAX_FACTS_UPLOAD_BYTES, MAX_H2_CONCURRENT_STREAMS_COUNT, MAX_H2_HEADER_LIST_BYTES,
    UPLOAD_BODY_IDLE_TIMEOUT,
};
use crate::metrics::{metrics, ConnectionRefusal, FloodFrame, H2GoAway, RejectReason, UploadStall};
use crate::protocol::event_table::{TableDigest, EVENT_TABLE_HEADER};
use crate::protocol::{TASKS_PATH, UPLOAD_PATH};
use crate::runtime::coalesced_writes::CoalescedWrites;
use crate::runtime::deadline::with_deadline;
use crate::runtime::io_compat as compat;
use crate::sessions::flows::OpenFlows;
use crate::sessions::shard::ShardCtx;
use crate::sessions::{facts, tasks, upload};
use crate::transport::admission::Admission;
use crate::transport::agent_tls::{AgentTls, AgentTlsConfig};
use crate::transport::body::{self, BodyError};
use crate::transport::client_hello::{HelloSeen, HelloWatch};
use crate::transport::frame_meter::{FloodAlarm, FrameMeter};
use crate::transport::receive_window::ReceiveWindow;
use crate::transport::source_handshakes::SourceSlot;
use crate::transport::upload_permits::ConnectionUploads;

/// An agent connection as h2 sees it: TLS over the ClientHello watch over a socket that
/// sends at each flush, metered.
type AgentTlsStream = AgentTls<HelloWatch<CoalescedWrites<TcpStream>>>;
type AgentIo = compat::TokioCompat<FrameMeter<AgentTlsStream>>;

/// Decrements the open-connection gauge however the connection ends.
struct OpenGuard;
impl Drop for OpenGuard {
    fn drop(&mut self) {
        metrics().connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `handshake` is the shard's handshake permit and `source` the source address's slot:
/// both are returned once TLS is done (or failed), before HTTP/2 setup.
pub async fn serve(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    acceptor: AgentTlsConfig,
    stream: CoalescedWrites<TcpStream>,
    handshake: StaticPermit,
    source: SourceSlot,
) {
    metrics().connections_open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard;
    // Boxed: the set-up's state (handshake futures, deadlines) is freed once the
    // connection is up; inline, it would size this task's allocation for the
    // connection's whole life. The driver's future is made in a statement of its own so
    // that the set-up's result is not kept beside it.
    let driven = match Box::pin(set_up(&ctx, acceptor, stream, handshake, source)).await {
        Some(connected) => drive(ctx, admission, connected),
        None => return,
    };
    driven.await;
}

/// A connection through TLS and the HTTP/2 handshake.
struct Connected {
    client_id: ClientId,
    conn: h2::server::Connection<AgentIo, Bytes>,
    flood: FloodAlarm,
}

/// TLS and HTTP/2 under their deadlines; `None` (counted) if either failed.
async fn set_up(
    ctx: &ShardCtx,
    acceptor: AgentTlsConfig,
    stream: CoalescedWrites<TcpStream>,
    handshake: StaticPermit,
    source: SourceSlot,
) -> Option<Connected> {
    let limits = &ctx.config.limits;
    let started = Instant::now();
    let (watched, hello) = HelloWatch::new(stream);
    let accept = Box::pin(acceptor.accept(watched));
    let tls = match tls_handshake(limits.handshake_timeout, &hello, accept).await {
        Handshook::HelloTimeout => {
            metrics()
                .agentport_client_hello_timeouts
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Handshook::Timeout => {
            metrics().connection_refused(ConnectionRefusal::HandshakeTimeout);
            return None;
        }
        Handshook::Done(Err(e)) => {
            tracing::debug!("agent TLS handshake failed: {e}");
            let reason = if peer_gone(&e) {
                ConnectionRefusal::PeerGone
            } else {
                ConnectionRefusal::HandshakeFailed
            };
            metrics().connection_refused(reason);
            return None;
        }
        Handshook::Done(Ok(tls)) => tls,
    };
    // TLS is the costly part the permits bound; HTTP/2 setup is cheap and under its own
    // deadline.
    drop(handshake);
    drop(source);
    let client_id = tls
        .connection()
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::tls::identity::client_id_from_certificate(cert).ok());
    let Some(client_id) = client_id else {
        metrics().connection_refused(ConnectionRefusal::NoClientCertificate);
        return None;
    };
    metrics()
        .handshakes_completed
        .fetch_add(1, Ordering::Relaxed);
    if tls.connection().handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        metrics().handshakes_resumed.fetch_add(1, Ordering::Relaxed);
    }

    let (metered, flood) = FrameMeter::new(tls);
    let h2_handshake = h2::server::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_IDLE_BYTES)
        .max_concurrent_streams(MAX_H2_CONCURRENT_STREAMS_COUNT)
        .max_header_list_size(MAX_H2_HEADER_LIST_BYTES)
        .max_pending_accept_reset_streams(H2_PENDING_ACCEPT_RESETS_COUNT)
        .max_local_error_reset_streams(Some(H2_LOCAL_ERROR_RESETS_COUNT))
        .max_send_buffer_size(H2_SEND_BUFFER_BYTES)
        .handshake::<_, Bytes>(compat::TokioCompat::new(metered));
    let left = limits.handshake_timeout.saturating_sub(started.elapsed());
    let conn = match with_deadline(left, Box::pin(h2_handshake)).await {
        Some(Ok(conn)) => conn,
        Some(Err(e)) if e.get_io().is_some_and(peer_gone) => {
            metrics().connection_refused(ConnectionRefusal::PeerGone);
            return None;
        }
        _ => {
            metrics().connection_refused(ConnectionRefusal::Http2Failed);
            return None;
        }
    };
    Some(Connected {
        client_id,
        conn,
        flood,
    })
}

enum Handshook<T> {
    Done(std::io::Result<T>),
    /// The ClientHello had not arrived at `CLIENT_HELLO_TIMEOUT`.
    HelloTimeout,
    /// The whole handshake ran past the handshake deadline.
    Timeout,
}

/// Runs the TLS handshake under two deadlines: the ClientHello must be in by
/// `CLIENT_HELLO_TIMEOUT`, the whole handshake by `total`.
async fn tls_handshake<F, T>(total: Duration, hello: &HelloSeen, mut accept: F) -> Handshook<T>
where
    F: std::future::Future<Output = std::io::Result<T>> + Unpin,
{
    let first = CLIENT_HELLO_TIMEOUT.min(total);
    if let Some(done) = with_deadline(first, &mut accept).await {
        return Handshook::Done(done);
    }
    if first == total {
        return Handshook::Timeout;
    }
    if !hello.get() {
        return Handshook::HelloTimeout;
    }
    match with_deadline(total - first, accept).await {
        Some(done) => Handshook::Done(done),
        None => Handshook::Timeout,
    }
}

/// Counts a connection h2 ended with a GOAWAY of its own (not one the peer sent, not
/// the I/O failing).
fn count_h2_goaway(e: &h2::Error) {
    if !e.is_go_away() || e.is_remote() {
        return;
    }
    let reason = match e.reason() {
        Some(Reason::NO_ERROR) | None => return,
        Some(Reason::ENHANCE_YOUR_CALM) => H2GoAway::EnhanceYourCalm,
        Some(Reason::PROTOCOL_ERROR) | Some(Reason::COMPRESSION_ERROR) => H2GoAway::ProtocolError,
        Some(_) => H2GoAway::Other,
    };
    metrics().agentport_h2_goaway(reason);
}

/// The peer closed or reset the connection before the handshake finished: typically an
/// agent that gave up waiting in the accept queue during a storm, not a broken client.
fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
    )
}

/// Why the accept loop stopped waiting for the next request.
enum Interrupt {
    Shutdown,
    Idle,
    /// The admitted uploads changed: the connection window's new target.
    Window(u32),
    /// The peer sent frames of one kind faster than allowed.
    Flood(FloodFrame),
}

/// Requests in flight on one connection and when the last one ended. A connection with
/// no request for `idle_timeout` is closed; the task stream counts as a request, so a
/// healthy agent never idles out (dead peers are found by TCP keepalive).
#[derive(Clone)]
struct Activity {
    in_flight: Rc<Cell<usize>>,
    last_end: Rc<Cell<Instant>>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: Rc::new(Cell::new(0)),
            last_end: Rc::new(Cell::new(Instant::now())),
        }
    }

    /// Counts one request in flight until the returned guard drops.
    fn begin(&self) -> ActivityGuard {
        self.in_flight.set(self.in_flight.get() + 1);
        ActivityGuard(self.clone())
    }

    /// Ready once the connection has been idle for `limit`; `timer` is the caller's,
    /// armed for the next check.
    fn poll_idle(
        &self,
        cx: &mut Context<'_>,
        limit: Duration,
        timer: &mut Option<glommio::timer::Timer>,
    ) -> Poll<()> {
        loop {
            let due = self.last_end.get() + limit;
            let now = Instant::now();
            if self.in_flight.get() == 0 && now >= due {
                *timer = None;
                return Poll::Ready(());
            }
            let wait = if now < due { due - now } else { limit };
            let armed = timer.get_or_insert_with(|| glommio::timer::Timer::new(wait));
            match Pin::new(armed).poll(cx) {
                Poll::Ready(_) => *timer = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
        self.0.last_end.set(Instant::now());
    }
}

/// Accepts requests until the agent leaves; on shutdown (or when idle), says GOAWAY and
/// lets the requests in flight (uploads) finish. An agent whose task stream the drain
/// ended is reported gone once the connection closes, after those uploads.
/// A plain fn around an async block: an async fn's arguments take room in its future
/// twice (as arguments and as the locals they move into), and the h2 connection is
/// 2.7 KiB of every idle agent.
fn drive(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    connected: Connected,
) -> impl Future<Output = ()> {
    let Connected {
        client_id,
        mut conn,
        flood,
    } = connected;
    async move {
        // Lets the clone check ask this connection for a PING answer while it is driven.
        let _attached = ctx.sessions.liveness.attach(&client_id, conn.ping_pong());
        let flows = Rc::new(OpenFlows::default());
        let activity = Activity::new();
        let window = Rc::new(ReceiveWindow::default());
        let uploads = Rc::new(ConnectionUploads::new(ctx.config.limits.concurrency_wait));
        let moved = Rc::new(Cell::new(None));
        let idle_timeout = ctx.config.limits.idle_timeout;
        let mut closing = false;
        let mut flooded = false;
        let mut shutdown = ctx.shutdown_signal();
        let mut idle_timer = None;
        loop {
            // One poll over everything the loop waits for, in this order: the next request,
            // the stop signal, the idle deadline, a new window target, a frame flood. Nested
            // select futures of async blocks made this wait ~3.5 KiB of every idle agent's
            // connection task; this one holds a few pointers.
            let raced = future::poll_fn(|cx| {
                if let Poll::Ready(next) = conn.poll_accept(cx) {
                    return Poll::Ready(Ok(next));
                }
                if !closing {
                    // Not polled again once it fired: `closing` is set below.
                    if Pin::new(&mut shutdown).poll(cx).is_ready() {
                        return Poll::Ready(Err(Interrupt::Shutdown));
                    }
                    if activity
                        .poll_idle(cx, idle_timeout, &mut idle_timer)
                        .is_ready()
                    {
                        return Poll::Ready(Err(Interrupt::Idle));
                    }
                }
                if let Poll::Ready(target) = window.poll_changed(cx) {
                    return Poll::Ready(Err(Interrupt::Window(target)));
                }
                if !flooded {
                    if let Poll::Ready(frame) = flood.poll_tripped(cx) {
                        return Poll::Ready(Err(Interrupt::Flood(frame)));
                    }
                }
                Poll::Pending
            })
            .await;
            let next = match raced {
                Ok(next) => next,
                Err(Interrupt::Window(target)) => {
                    conn.set_target_window_size(target);
                    continue;
                }
                Err(Interrupt::Flood(frame)) => {
                    metrics().agentport_flood(frame);
                    tracing::warn!(client = %client_id, frame = frame.label(), "frame flood; ending the connection");
                    flooded = true;
                    closing = true;
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    continue;
                }
                Err(why) => {
                    if matches!(why, Interrupt::Idle) {
                        metrics().connection_refused(ConnectionRefusal::IdleTimeout);
                    }
                    closing = true;
                    conn.graceful_shutdown();
                    continue;
                }
            };
            match next {
                Some(Ok((request, respond))) => {
                    let guard = activity.begin();
                    let conn_state = PerConnection {
                        flows: flows.clone(),
                        window: window.clone(),
                        uploads: uploads.clone(),
                        moved: moved.clone(),
                    };
                    start_request(
                        &ctx, &admission, &client_id, conn_state, request, respond, guard,
                    );
                }
                Some(Err(e)) => {
                    tracing::debug!(client = %client_id, "agent connection ended: {e}");
                    if !flooded {
                        count_h2_goaway(&e);
                    }
                    break;
                }
                None => break,
            }
        }
        if let Some(session) = moved.get() {
            tasks::report_left(&ctx, client_id, session).await;
        }
    }
}

/// What one connection's requests share.
struct PerConnection {
    flows: Rc<OpenFlows>,
    window: Rc<ReceiveWindow>,
    uploads: Rc<ConnectionUploads>,
    /// The session of the task stream the drain ended on this connection, if it did.
    moved: Rc<Cell<Option<u64>>>,
}

/// Routes a request and spawns its task. Each kind of request gets a task of its own
/// size: the task stream's lives as long as the agent, and h2 may keep a waker of a
/// finished upload's task until the next request, which keeps that task's allocation.
fn start_request(
    ctx: &Rc<ShardCtx>,
    admission: &Rc<Admission>,
    client_id: &ClientId,
    conn: PerConnection,
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
    activity: ActivityGuard,
) {
    let Some(respond) = crate::transport::enrolment::admit(&ctx.config, &request, respond) else {
        return;
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, TASKS_PATH) => {
            // The stream lives as long as the agent: a body on it would never be read,
            // and its window would pin memory. Dropping the body resets that half.
            if !request.body().is_end_stream() {
                metrics()
                    .agentport_task_stream_bodies_refused
                    .fetch_add(1, Ordering::Relaxed);
                drop(request);
                return respond_bytes(respond, StatusCode::BAD_REQUEST, Bytes::new(), None);
            }
            let held = request
                .headers()
                .get(EVENT_TABLE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(TableDigest::parse_hex);
            // The request's headers are not kept for the stream's life.
            drop(request);
            let (ctx, client_id, moved) = (ctx.clone(), client_id.clone(), conn.moved);
            glommio::spawn_local(async move {
                if let tasks::StreamEnd::Moved { session } =
                    tasks::serve_task_stream(ctx, client_id, held, respond).await
                {
                    moved.set(Some(session));
                }
                drop(activity);
            })
            .detach();
        }
        (&Method::POST, UPLOAD_PATH) => {
            let in_flight = admission.drain.upload_begins();
            // Boxed: freed when the upload ends, whoever keeps the task's waker.
            let upload = Box::pin(handle_upload(
                ctx.clone(),
                admission.clone(),
                client_id.clone(),
                conn,
                request,
                respond,
            ));
            glommio::spawn_local(async move {
                upload.await;
                drop(in_flight);
                drop(activity);
            })
            .detach();
        }
        _ => respond_bytes(respond, StatusCode::NOT_FOUND, Bytes::new(), None),
    }
}

/// One upload: nothing shared is taken until its first DATA frame is in (headers alone
/// hold no permit); an agent's facts then go their own way (`handle_facts`), anything
/// else takes a slot of the connection's and a permit of the shard's; the body
/// must keep flowing (`UPLOAD_BODY_IDLE_TIMEOUT` between frames) and be whole within the
/// request timeout.
async fn handle_upload(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    client_id: ClientId,
    conn: PerConnection,
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let limits = &ctx.config.limits;
    let max_bytes = limits.max_upload_bytes.get();
    let declared = body::declared_length(request.headers());
    if body::declared_too_large(declared, max_bytes) {
        let too_large = upload::UploadError::TooLarge { max_bytes };
        let answer = upload::Answer::rejected(&too_large, limits.disk_full_retry_after);
        return respond_bytes(respond, answer.status, answer.encode(), answer.retry_after);
    }
    let mut recv = request.into_body();
    let first = match body::first_chunk(&mut recv, UPLOAD_BODY_IDLE_TIMEOUT).await {
        Some(Ok(first)) => first,
        Some(Err(e)) => {
            tracing::debug!(client = %client_id, "upload body failed: {e}");
            return;
        }
        None => {
            metrics().agentport_upload_stalled(UploadStall::BeforeBody);
            return respond_bytes(respond, StatusCode::REQUEST_TIMEOUT, Bytes::new(), None);
        }
    };
    if facts::is_facts_upload(&first) {
        let incoming = Incoming {
            recv,
            first,
            declared,
        };
        return handle_facts(ctx, client_id, conn, incoming, respond).await;
    }
    let Some(_connection_slot) = conn.uploads.admit().await else {
        return refuse_connection_busy(respond);
    };
    // The permit comes before the rest of the body: what is not admitted is never read.
    let Some(slot) = admission.uploads.admit().await else {
        metrics().upload_rejected(RejectReason::Concurrency);
        return respond_busy(respond);
    };
    // Only now may the agent send more than the idle window: the body is read at once.
    let widened = conn.window.widen();
    let read = with_deadline(
        limits.request_timeout,
        body::read_capped(
            &mut recv,
            first,
            declared,
            max_bytes,
            UPLOAD_BODY_IDLE_TIMEOUT,
        ),
    );
    let read = read.await;
    drop(widened);
    let answer = match read {
        Some(Ok(bytes)) => {
            slot.hold_bytes(bytes.len() as u64);
            upload::handle(&ctx, &client_id, &conn.flows, bytes).await
        }
        Some(Err(e)) => return refuse_body(&ctx, &client_id, respond, Some(e)),
        None => return refuse_body(&ctx, &client_id, respond, None),
    };
    respond_bytes(respond, answer.status, answer.encode(), answer.retry_after);
}

/// An upload body whose first DATA frame is in.
struct Incoming {
    recv: h2::RecvStream,
    first: Bytes,
    declared: Option<u64>,
}

/// An agent's facts (sessions/facts.rs): a slot of the connection's like any upload, but
/// no upload permit: facts wait for their shard's own small budget, and only when the
/// shard has not seen them recently. The body (≤ `MAX_FACTS_UPLOAD_BYTES`) fits the
/// connection's idle window, so it is read without widening it.
async fn handle_facts(
    ctx: Rc<ShardCtx>,
    client_id: ClientId,
    conn: PerConnection,
    mut incoming: Incoming,
    respond: SendResponse<Bytes>,
) {
    let Some(_connection_slot) = conn.uploads.admit().await else {
        return refuse_connection_busy(respond);
    };
    let read = with_deadline(
        ctx.config.limits.request_timeout,
        body::read_capped(
            &mut incoming.recv,
            incoming.first,
            incoming.declared,
            MAX_FACTS_UPLOAD_BYTES,
            UPLOAD_BODY_IDLE_TIMEOUT,
        ),
    );
    let bytes = match read.await {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return refuse_body(&ctx, &client_id, respond, Some(e)),
        None => return refuse_body(&ctx, &client_id, respond, None),
    };
    match facts::handle(&ctx, &client_id, bytes).await {
        Ok(answer) => respond_bytes(respond, answer.status, answer.encode(), answer.retry_after),
        Err(facts::FactsBusy) => respond_busy(respond),
    }
}

/// 503: the connection has as many uploads admitted as it may.
fn refuse_connection_busy(respond: SendResponse<Bytes>) {
    metrics()
        .agentport_uploads_connection_busy
        .fetch_add(1, Ordering::Relaxed);
    respond_busy(respond);
}

/// 503 with a jittered Retry-After: busy now, the agent keeps what it sent and comes back.
fn respond_busy(respond: SendResponse<Bytes>) {
    let wait = crate::transport::upload_permits::retry_after();
    respond_bytes(
        respond,
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::new(),
        Some(wait),
    );
}

/// Answers (or drops) an upload whose body could not be read: `None` is the request
/// timeout.
fn refuse_body(
    ctx: &ShardCtx,
    client_id: &ClientId,
    respond: SendResponse<Bytes>,
    error: Option<BodyError>,
) {
    match error {
        Some(BodyError::TooLarge { max_bytes }) => {
            let too_large = upload::UploadError::TooLarge { max_bytes };
            let retry_after = ctx.config.limits.disk_full_retry_after;
            let answer = upload::Answer::rejected(&too_large, retry_after);
            respond_bytes(respond, answer.status, answer.encode(), answer.retry_after);
        }
        Some(BodyError::Stalled { .. }) => {
            metrics().agentport_upload_stalled(UploadStall::InBody);
            respond_bytes(respond, StatusCode::REQUEST_TIMEOUT, Bytes::new(), None);
        }
        Some(BodyError::Stream(e)) => {
            tracing::debug!(client = %client_id, "upload body failed: {e}");
        }
        None => {
            metrics().upload_rejected(RejectReason::Timeout);
            respond_bytes(respond, StatusCode::REQUEST_TIMEOUT, Bytes::new(), None);
        }
    }
}

fn respond_bytes(
    mut respond: SendResponse<Bytes>,
    status: StatusCode,
    body: Bytes,
    retry_after: Option<Duration>,
) {
    let mut response = http::Response::builder()
        .status(status)
        .header("content-type", crate::protocol::CONTENT_TYPE);
    if let Some(wait) = retry_after {
        response = response.header("retry-after", wait.as_secs());
    }
    let response = response.body(()).expect("static response parts are valid");
    if let Ok(mut stream) = respond.send_response(response, body.is_empty()) {
        if !body.is_empty() {
            let _ = stream.send_data(body, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_bytes<F, A, B, C, D, E, G, Fut>(_: &F) -> usize
    where
        F: FnOnce(A, B, C, D, E, G) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The connection's future is allocated for the agent's whole life: its set-up is
    /// boxed away and the h2 connection is held once, not once as an argument and once
    /// as a local (what an async fn does with its arguments). 7.5 KiB before both.
    #[test]
    fn an_idle_connections_future_holds_the_h2_connection_once() {
        let connection = std::mem::size_of::<h2::server::Connection<AgentIo, Bytes>>();
        let serve = future_bytes(&serve);
        eprintln!("serve future {serve} bytes, h2 connection {connection} bytes");
        assert!(
            serve < connection * 3 / 2,
            "serve's future is {serve} bytes for a {connection}-byte h2 connection"
        );
    }
}
