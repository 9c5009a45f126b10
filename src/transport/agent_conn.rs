//! One agent connection on an agent shard: mTLS handshake under a deadline, the client
//! id from the certificate's key, then HTTP/2 with each request routed to the session
//! code. The connection's open result sets live and die with it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{self, Either};
use futures::pin_mut;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use glommio::sync::StaticPermit;
use h2::server::SendResponse;
use http::{Method, Request, StatusCode};

use crate::ids::ClientId;
use crate::limits::{
    H2_CONNECTION_WINDOW_IDLE_BYTES, H2_STREAM_WINDOW_BYTES, MAX_H2_CONCURRENT_STREAMS_COUNT,
    MAX_H2_HEADER_LIST_BYTES,
};
use crate::metrics::{metrics, ConnectionRefusal, RejectReason};
use crate::protocol::event_table::{TableDigest, EVENT_TABLE_HEADER};
use crate::protocol::{TASKS_PATH, UPLOAD_PATH};
use crate::runtime::deadline::with_deadline;
use crate::runtime::io_compat as compat;
use crate::sessions::flows::OpenFlows;
use crate::sessions::shard::ShardCtx;
use crate::sessions::{tasks, upload};
use crate::transport::admission::Admission;
use crate::transport::body::{self, BodyError};
use crate::transport::receive_window::ReceiveWindow;

/// Decrements the open-connection gauge however the connection ends.
struct OpenGuard;
impl Drop for OpenGuard {
    fn drop(&mut self) {
        metrics().connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `handshake` is the shard's handshake permit, returned once HTTP/2 is up (or failed).
pub async fn serve(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    handshake: StaticPermit,
) {
    metrics().connections_open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard;
    let limits = &ctx.config.limits;
    // The handshake futures are boxed so that their state is freed once the connection is
    // up; inline, they would size this task's allocation for the connection's whole life.
    let tls = match with_deadline(limits.handshake_timeout, Box::pin(acceptor.accept(stream))).await
    {
        None => return metrics().connection_refused(ConnectionRefusal::HandshakeTimeout),
        Some(Err(e)) => {
            tracing::debug!("agent TLS handshake failed: {e}");
            let reason = if peer_gone(&e) {
                ConnectionRefusal::PeerGone
            } else {
                ConnectionRefusal::HandshakeFailed
            };
            return metrics().connection_refused(reason);
        }
        Some(Ok(tls)) => tls,
    };
    let client_id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::tls::identity::client_id_from_certificate(cert).ok());
    let Some(client_id) = client_id else {
        return metrics().connection_refused(ConnectionRefusal::NoClientCertificate);
    };
    metrics()
        .handshakes_completed
        .fetch_add(1, Ordering::Relaxed);
    if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        metrics().handshakes_resumed.fetch_add(1, Ordering::Relaxed);
    }

    let h2_handshake = h2::server::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_IDLE_BYTES)
        .max_concurrent_streams(MAX_H2_CONCURRENT_STREAMS_COUNT)
        .max_header_list_size(MAX_H2_HEADER_LIST_BYTES)
        .handshake::<_, Bytes>(compat::tokio_io(tls));
    let conn = match with_deadline(limits.handshake_timeout, Box::pin(h2_handshake)).await {
        Some(Ok(conn)) => conn,
        Some(Err(e)) if e.get_io().is_some_and(peer_gone) => {
            return metrics().connection_refused(ConnectionRefusal::PeerGone)
        }
        _ => return metrics().connection_refused(ConnectionRefusal::Http2Failed),
    };
    drop(handshake);
    drive(ctx, admission, client_id, conn).await;
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

    /// Resolves once the connection has been idle for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let due = self.last_end.get() + limit;
            let now = Instant::now();
            if self.in_flight.get() == 0 && now >= due {
                return;
            }
            glommio::timer::sleep(if now < due { due - now } else { limit }).await;
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
/// lets the requests in flight (uploads) finish.
async fn drive(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    client_id: ClientId,
    mut conn: h2::server::Connection<compat::ServerIo, Bytes>,
) {
    let flows = Rc::new(OpenFlows::default());
    let activity = Activity::new();
    let window = Rc::new(ReceiveWindow::default());
    let idle_timeout = ctx.config.limits.idle_timeout;
    let mut closing = false;
    loop {
        let raced = {
            let accept = conn.accept();
            let ended = async {
                if closing {
                    return future::pending().await;
                }
                let shutdown = ctx.shutdown_signal();
                let idle = activity.idle_for(idle_timeout);
                pin_mut!(idle);
                match future::select(shutdown, idle).await {
                    Either::Left(_) => Interrupt::Shutdown,
                    Either::Right(_) => Interrupt::Idle,
                }
            };
            let interrupt = async {
                let widened = window.changed();
                pin_mut!(ended, widened);
                match future::select(ended, widened).await {
                    Either::Left((why, _)) => why,
                    Either::Right((target, _)) => Interrupt::Window(target),
                }
            };
            pin_mut!(accept, interrupt);
            match future::select(accept, interrupt).await {
                Either::Left((next, _)) => Ok(next),
                Either::Right((why, _)) => Err(why),
            }
        };
        let next = match raced {
            Ok(next) => next,
            Err(Interrupt::Window(target)) => {
                conn.set_target_window_size(target);
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
                let task = route(
                    ctx.clone(),
                    admission.clone(),
                    client_id.clone(),
                    flows.clone(),
                    window.clone(),
                    request,
                    respond,
                );
                glommio::spawn_local(async move {
                    task.await;
                    drop(guard);
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::debug!(client = %client_id, "agent connection ended: {e}");
                break;
            }
            None => break,
        }
    }
}

async fn route(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    client_id: ClientId,
    flows: Rc<OpenFlows>,
    window: Rc<ReceiveWindow>,
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let Some(respond) = crate::transport::enrolment::admit(&ctx.config, &request, respond) else {
        return;
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, TASKS_PATH) => {
            let held = request
                .headers()
                .get(EVENT_TABLE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(TableDigest::parse_hex);
            tasks::serve_task_stream(ctx, client_id, held, respond).await
        }
        // Boxed: h2 may keep a waker of a finished request's task until the next request,
        // which keeps the task's allocation, sized by its largest future, alive with it.
        (&Method::POST, UPLOAD_PATH) => {
            Box::pin(handle_upload(
                ctx, admission, client_id, flows, window, request, respond,
            ))
            .await
        }
        _ => respond_bytes(respond, StatusCode::NOT_FOUND, Bytes::new(), None),
    }
}

async fn handle_upload(
    ctx: Rc<ShardCtx>,
    admission: Rc<Admission>,
    client_id: ClientId,
    flows: Rc<OpenFlows>,
    window: Rc<ReceiveWindow>,
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let limits = &ctx.config.limits;
    // The permit comes before the body: what is not admitted is never read into memory.
    let Some(slot) = admission.uploads.admit().await else {
        metrics().upload_rejected(RejectReason::Concurrency);
        let wait = crate::transport::upload_permits::retry_after();
        return respond_bytes(
            respond,
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::new(),
            Some(wait),
        );
    };
    // Only now may the agent send more than the idle window: the body is read at once.
    let widened = window.widen();
    let declared = body::declared_length(request.headers());
    let mut recv = request.into_body();
    let read = with_deadline(
        limits.request_timeout,
        body::read_capped(&mut recv, declared, limits.max_upload_bytes.get()),
    );
    let read = read.await;
    drop(widened);
    let answer = match read {
        Some(Ok(bytes)) => {
            slot.hold_bytes(bytes.len() as u64);
            upload::handle(&ctx, &client_id, &flows, bytes).await
        }
        Some(Err(BodyError::TooLarge { max_bytes })) => {
            upload::Answer::rejected(&upload::UploadError::TooLarge { max_bytes })
        }
        Some(Err(BodyError::Stream(e))) => {
            tracing::debug!(client = %client_id, "upload body failed: {e}");
            return;
        }
        None => {
            metrics().upload_rejected(RejectReason::Timeout);
            return respond_bytes(respond, StatusCode::REQUEST_TIMEOUT, Bytes::new(), None);
        }
    };
    respond_bytes(respond, answer.status, answer.encode(), answer.retry_after);
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
