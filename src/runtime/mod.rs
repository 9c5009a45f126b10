//! Executor primitives every server-side module builds on: running blocking work off an
//! executor (one job at a time, or many small ones a batch per trip), deadlines, the shutdown signal, token-bucket rates, the bounded
//! cross-executor channel helpers, values published to every shard (`published`), whether
//! the frontend takes new agents (`readiness`), streams read through an observer, socket writes held until a flush, and
//! the glue from glommio sockets to tokio-io (h2, hyper). It knows no sessions, no API
//! and no datastore.

pub mod batched_offload;
pub mod channel;
pub mod coalesced_writes;
pub mod deadline;
pub mod io_compat;
pub mod observed_read;
pub mod offload;
pub mod published;
pub mod queued_permits;
pub mod rate;
pub mod readiness;
pub mod shutdown;
pub mod thread_nice;
pub mod write_out;
