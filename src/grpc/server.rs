//! The gRPC API's thread: a current-thread tokio runtime (tonic needs tokio; the GUI/API
//! state lives on the glommio priority executor, reached through `bridge`) that accepts
//! connections on the `[api]` port, runs their TLS handshakes (a client certificate the
//! deployment CA signed is required: no certificate, another CA's, or an expired one fail
//! there), reads the API client the certificate names, and serves `PackhuntApi`.
//! Connections are capped (`MAX_GRPC_CONNECTIONS_COUNT`, handshakes included); refusals
//! are counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;

use super::bridge::CallQueue;
use super::pb::packhunt_api_server::PackhuntApiServer;
use super::service::{ApiService, ConnInfo};
use super::GrpcApiError;
use crate::config::api_client::ApiClientIdentity;
use crate::config::ServerConfig;
use crate::limits::{
    ACCEPT_BACKOFF_ON_EMFILE, GRPC_HANDSHAKE_TIMEOUT, GRPC_KEEPALIVE_INTERVAL,
    GRPC_KEEPALIVE_TIMEOUT, MAX_API_BODY_BYTES, MAX_GRPC_CALLS_IN_FLIGHT_COUNT,
    MAX_GRPC_CONNECTIONS_COUNT,
};
use crate::metrics::metrics;

/// The running thread; `stop` ends it (and every API connection) and waits.
pub struct ApiThread {
    handle: std::thread::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl ApiThread {
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.join();
    }
}

/// Binds the API port: done before the frontend reports ready, so a port in use is a
/// start-up error.
pub fn bind(address: SocketAddr) -> Result<std::net::TcpListener, GrpcApiError> {
    let bind_error = |source| GrpcApiError::Bind {
        address: address.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

/// Starts the API thread serving on `listener`; calls go to `queue`.
pub fn spawn(
    config: &ServerConfig,
    listener: std::net::TcpListener,
    queue: CallQueue,
) -> Result<ApiThread, GrpcApiError> {
    // Client certificates are checked against the deployment CA, exactly as minions'
    // are on the replication port; the master presents its own certificate.
    let tls = crate::tls::replication::link_server_config(
        &config.tls.ca_certificate,
        config.frontend.master_tls()?,
    )?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GrpcApiError::Thread)?;
    let handle = std::thread::Builder::new()
        .name("grpc-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let serve = serve(listener, tokio_rustls::TlsAcceptor::from(tls), queue);
                tokio::select! {
                    result = serve => if let Err(e) = result {
                        tracing::error!("gRPC API stopped: {e}");
                    },
                    _ = stopped.wait_for(|s| *s) => {}
                }
            })
        })
        .map_err(GrpcApiError::Thread)?;
    Ok(ApiThread { handle, stop })
}

async fn serve(
    listener: std::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    queue: CallQueue,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let (conn_tx, conn_rx) =
        tokio::sync::mpsc::channel::<Result<ApiIo, std::io::Error>>(MAX_GRPC_CONNECTIONS_COUNT);
    let acceptor = tokio::spawn(accept_loop(listener, tls, conn_tx));
    let service = PackhuntApiServer::new(ApiService::new(queue))
        .max_decoding_message_size(MAX_API_BODY_BYTES);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_GRPC_CALLS_IN_FLIGHT_COUNT as u32))
        .serve_with_incoming(service, ReceiverStream::new(conn_rx))
        .await;
    acceptor.abort();
    result.map_err(|e| e.to_string())
}

/// Counts an API connection from accept to close.
struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl ConnectionSlot {
    /// A slot, or none when `MAX_GRPC_CONNECTIONS_COUNT` are taken.
    fn take(open: &Arc<AtomicUsize>) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_GRPC_CONNECTIONS_COUNT).then_some(n + 1)
        })
        .ok()?;
        metrics()
            .grpc_connections_open
            .fetch_add(1, Ordering::Relaxed);
        Some(Self { open: open.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics()
            .grpc_connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    conns: tokio::sync::mpsc::Sender<Result<ApiIo, std::io::Error>>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("gRPC API accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF_ON_EMFILE).await;
                continue;
            }
        };
        let Some(slot) = ConnectionSlot::take(&open) else {
            metrics()
                .grpc_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, "gRPC API connection refused: {MAX_GRPC_CONNECTIONS_COUNT} are open");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, conns) = (tls.clone(), conns.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(GRPC_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let identity = match stream.get_ref().1.peer_certificates() {
                        Some([leaf, ..]) => ApiClientIdentity::from_certificate(leaf.as_ref()),
                        _ => Err(crate::config::api_client::IdentityError::Missing),
                    };
                    let info = ConnInfo {
                        identity,
                        remote: Some(remote),
                    };
                    let io = ApiIo::new(stream, info, slot);
                    let _ = conns.send(Ok(io)).await;
                }
                Ok(Err(e)) => {
                    metrics()
                        .grpc_handshakes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, "gRPC API connection refused in the TLS handshake: {e}");
                }
                Err(_) => {
                    metrics()
                        .grpc_handshakes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, "gRPC API connection refused: no TLS handshake within {GRPC_HANDSHAKE_TIMEOUT:?}");
                }
            }
        });
    }
}

/// A handshaken API connection, as tonic sees it; it holds its connection slot.
type ApiIo = crate::tls::connected::TlsConnected<ConnInfo, ConnectionSlot>;
