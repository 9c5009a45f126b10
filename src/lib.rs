//! packhunt: a thread-per-core frontend server for endpoint-visibility fleets, its
//! endpoint agent and the shared pieces both ends use. See docs/architecture.md for the map
//! and docs/operating.md for running it.
//!
//! The top-level modules, each a folder (or file) named for its concern, from the bottom
//! up; a module uses only modules below it (tests/module_graph.rs fails on a cycle):
//! - vocabulary: `ids`, `clock`, `limits`, `metrics`, `protocol`, `artifacts`, `gui`
//!   (embedded assets); `runtime` (executor primitives), `tls`, `datastore`, `audit`
//!   (the audit trail's writer thread and reader);
//! - `config` (files parsed once into typed values); `replication` (the gRPC link) and
//!   `agent` (the endpoint agent, whose comms client loadgen shares);
//! - `notify` (presence and "client C has new work"); `sessions`, `hunts` and `clients`
//!   (the master's client index); `events` (the client event table);
//! - `transport` (accept, TLS, HTTP/2 for agents); `api` (JSON API on the priority
//!   executor); `frontend` (the composition root, used only by `main.rs`).

/// Prints a line for the operator on stdout. Unlike `println!` it never panics: a
/// process whose stdout was closed (a supervisor or test that stopped reading, a shell
/// pipe that ended) keeps running instead of dying on the next status line.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod agent;
pub mod api;
pub mod artifacts;
pub mod audit;
pub mod clients;
pub mod clock;
pub mod config;
pub mod datastore;
pub mod events;
pub mod frontend;
pub mod gui;
pub mod hunts;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod sessions;
pub mod sinks;
pub mod tls;
pub mod transport;
