//! TLS: PEM handling, agent identity, rustls configs for both ends.
pub mod pem;
pub mod agent_key;
pub mod identity;
pub mod client;
pub mod server;
pub mod replication;
