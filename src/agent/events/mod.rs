//! Client monitoring events on the agent: the queries of the client event table, each
//! long-running until the table drops it, their rows batched per artifact, and the
//! bounded buffer the batches wait in until the server acknowledges them.
//!
//! Owns: running event queries (`queries`, one module per query), batching
//! (`batch`), the buffer and its sequence numbers (`buffer`), and the spool that joins
//! them for producers and the session (`spool`). Must not: talk to the server (the
//! session in `agent::run` takes batches from the spool and reports the answers back)
//! or know anything of the server side.
//!
//! Threads: on the real agent every query runs on a thread of its own and the spool's
//! flusher too, so a slow /proc or disk never blocks the session task; loadgen's
//! synthetic queries are tokio tasks (it runs thousands of agents per process).

pub mod batch;
pub mod buffer;
mod client_stats;
mod log_tail;
mod process_start;
pub mod queries;
pub mod spool;
pub mod stop;

pub use queries::{EventQueries, NativeQueries};
pub use spool::EventSpool;

/// Why the agent gave up rows of an event artifact; counted, logged and reported to the
/// server in the next batch's `dropped_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The buffer reached its bound: its oldest batches went first.
    BufferFull,
    /// The server refused the batch for good (a 4xx other than 413, or REJECTED).
    Refused,
    /// One row is larger than an upload may be.
    RowTooLarge,
    /// The batch could not be written to, or read back from, the buffer's folder.
    Storage,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer full",
            DropReason::Refused => "refused by the server",
            DropReason::RowTooLarge => "row larger than an upload",
            DropReason::Storage => "buffer storage error",
        }
    }
}

/// Told of every drop, outside the spool's lock (loadgen counts, the agent logs).
pub type OnDrop = Box<dyn Fn(&str, u64, DropReason) + Send + Sync>;
