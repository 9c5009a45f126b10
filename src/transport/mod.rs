//! Agent-facing transport: the per-shard accept loop (SO_REUSEPORT, admission, EMFILE
//! backoff) and one agent connection (TLS, HTTP/2, request routing, timeouts).

pub mod accept;
pub mod admission;
pub mod agent_conn;
pub mod agent_tls;
pub mod body;
pub mod client_hello;
pub mod drain;
pub mod enrolment;
pub mod frame_meter;
pub mod receive_window;
pub mod source_handshakes;
pub mod upload_permits;
