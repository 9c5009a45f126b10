//! The server -> agent task frame: what a shard pushes down an agent's task stream and
//! what crosses the replication link so a minion need not read request.json.

use bytes::Bytes;

use crate::protocol::{framing, pb};

/// The frame that carries `task` down a task stream.
pub fn task_frame(task: pb::Task) -> Bytes {
    framing::encode(&pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Task(task)),
    })
}
