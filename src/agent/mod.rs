//! The endpoint agent: comms client (one implementation, also used by loadgen),
//! artifacts, outbox, writeback. Knows nothing of the server side.
pub mod artifacts;
pub mod comms;
pub mod outbox;
pub mod run;
pub mod runner;
pub mod service;
pub mod writeback;
