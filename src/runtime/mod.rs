//! Executor primitives every server-side module builds on: running blocking work off an
//! executor, deadlines, the shutdown signal, token-bucket rates and the bounded
//! cross-executor channel helpers, and the glue from glommio sockets to tokio-io (h2,
//! hyper). It knows no sessions, no API and no datastore.

pub mod channel;
pub mod deadline;
pub mod io_compat;
pub mod offload;
pub mod rate;
pub mod shutdown;
