//! packhunt: a thread-per-core frontend server for endpoint-visibility fleets, its
//! endpoint agent and the shared pieces both ends use. See DESIGN.md for the map.

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
pub mod clock;
pub mod config;
pub mod datastore;
pub mod hunts;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod rate;
pub mod replication;
pub mod sessions;
pub mod shard;
pub mod tls;
pub mod transport;
