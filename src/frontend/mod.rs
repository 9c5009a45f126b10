//! The composition root: starts one pinned executor per agent shard and the priority
//! executor (GUI/API and the hub), wires the bounded queues between them and the
//! replication thread, and shuts everything down in order. The only module that
//! imports all the others; nothing imports it but `main.rs`.
//!
//! run — executors, listeners, signals and the stop order; hub — the executor that sees
//! the whole frontend (presence, the notifier, the glommio end of replication).

pub mod hub;
pub mod run;

pub use run::{run_frontend, FrontendError};
