//! The endpoint agent: comms client (one implementation, also used by loadgen),
//! artifacts, event queries and their buffer, outbox, writeback. Knows nothing of the
//! server side.
pub mod artifacts;
pub mod collected;
pub mod comms;
pub mod events;
pub mod outbox;
pub mod run;
pub mod runner;
pub mod service;
pub mod writeback;
