//! TLS: PEM handling, agent identity, rustls configs for both ends.
pub mod agent_key;
pub mod client;
pub mod connected;
pub mod identity;
pub mod pem;
pub mod replication;
pub mod server;
#[cfg(test)]
pub mod tests;
