//! Thread-per-core execution: the agent shards, the priority executor for the GUI/API,
//! and the bounded queues between them.
//!
//! pool — starts the executors; mesh — the cross-shard queues and their messages;
//! ctx — what one agent shard owns (sessions, open result sets), behind `Rc`.

pub mod ctx;
pub mod deadline;
pub mod hub;
pub mod mesh;
pub mod offload;
pub mod pool;
