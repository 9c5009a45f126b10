//! The agent protocol shared by both ends: prost types generated from proto/agent.proto
//! and the length-delimited framing they travel in.

pub mod event_table;
pub mod framing;
pub mod tasks;

/// Generated protobuf types (proto/agent.proto).
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/packhunt.agent.v1.rs"));
}

/// HTTP/2 paths of the agent protocol.
pub const TASKS_PATH: &str = "/agent/v1/tasks";
pub const UPLOAD_PATH: &str = "/agent/v1/upload";
/// Content type of every agent protocol body.
pub const CONTENT_TYPE: &str = "application/x-packhunt-frames";
/// Carries the deployment's enrolment secret on every agent request, when it has one.
pub const ENROLMENT_HEADER: &str = "x-packhunt-enrolment";
