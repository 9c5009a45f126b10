//! The gRPC API (`proto/api.proto`, docs/security/grpc-api.md): the master serves it on
//! its `[api]` port, on a thread of its own running tonic (tokio), over mutual TLS with
//! client certificates the deployment CA issued (`packhunt config api-client`). Who calls
//! is read from the verified certificate (`config::api_client`).
//!
//! Every call is turned into the `ApiCall` the JSON API would build and answered by
//! `api::routes::route` on the priority executor, where the API's state lives
//! (`bridge`), so permissions, limits, errors and audit are the JSON API's. The answer
//! (status and body, streamed bodies chunk by chunk with backpressure) comes back and is
//! turned into the proto's messages (`convert`, `service`).

pub mod bridge;
pub mod convert;
pub mod server;
pub mod service;

pub mod pb {
    tonic::include_proto!("packhunt.api.v1");
}

/// Why the gRPC API could not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcApiError {
    #[error("cannot listen on the gRPC API port {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("gRPC API TLS: {0}")]
    Tls(#[from] crate::tls::server::TlsConfigError),
    #[error("cannot start the gRPC API thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}
