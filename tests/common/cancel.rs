//! Helpers for the cancel tests: cancelling through the API, reading Cancel frames off a
//! raw agent's task stream, and sending result batches and flow ends as an agent would.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use packhunt::protocol::pb::{self, server_message::Kind, upload};
use serde_json::Value;

use super::{Api, RawAgent};

/// The artifact the cancel tests collect: its rows are small and any JSON object is one.
pub const ARTIFACT: &str = "Linux.Sys.Users";

/// `POST .../collections/{flow}/cancel` as `api`'s user.
pub fn cancel(api: &Api, client: &str, flow: &str) -> Result<(u16, Value)> {
    api.post(
        &format!("/api/v1/clients/{client}/collections/{flow}/cancel"),
        &Value::Null,
    )
}

/// The flow's status as the API shows it.
pub fn status(api: &Api, client: &str, flow: &str) -> Result<Value> {
    let (code, body) = api.get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
    anyhow::ensure!(code == 200, "GET flow {flow}: {code} {body}");
    Ok(body)
}

/// Reads the task stream until a Cancel for `flow` arrives (tasks and event tables before
/// it are passed over); 10 s at most per message.
pub fn expect_cancel(agent: &mut RawAgent, flow: &str) -> Result<pb::Cancel> {
    loop {
        match agent.next_message()? {
            Kind::Cancel(cancel) if cancel.flow_id == flow => return Ok(cancel),
            Kind::Cancel(other) => bail!("a Cancel for another flow: {other:?}"),
            Kind::Task(_) | Kind::EventTable(_) => continue,
            Kind::Hello(hello) => bail!("a second Hello: {hello:?}"),
            Kind::Rekey(rekey) => bail!("told to re-key: {rekey:?}"),
        }
    }
}

/// The next task on the stream, whatever its flow (event tables are passed over).
pub fn next_task(agent: &mut RawAgent) -> Result<pb::Task> {
    loop {
        match agent.next_message()? {
            Kind::Task(task) => return Ok(task),
            Kind::EventTable(_) => continue,
            other => bail!("expected a task, got {other:?}"),
        }
    }
}

/// Sends `rows` rows of `ARTIFACT` as batch `seq` of `flow`; returns the HTTP status.
pub fn send_rows(agent: &mut RawAgent, flow: &str, seq: u64, rows: usize) -> Result<u16> {
    let jsonl: String = (0..rows)
        .map(|i| format!("{{\"user\":\"u{seq}-{i}\"}}\n"))
        .collect();
    let batch = pb::ResultBatch {
        flow_id: flow.into(),
        artifact: ARTIFACT.into(),
        seq,
        jsonl: jsonl.into(),
        row_count: rows as u32,
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(upload::Kind::Result(batch)),
    })?;
    Ok(reply.status)
}

/// Says the flow is done with `rows` rows of `ARTIFACT`; returns the HTTP status.
pub fn send_end(agent: &mut RawAgent, flow: &str, rows: u64, batches: u64) -> Result<u16> {
    let done = pb::FlowStatus {
        flow_id: flow.into(),
        artifacts: vec![pb::ArtifactRows {
            name: ARTIFACT.into(),
            rows,
            batches,
        }],
        ..Default::default()
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(upload::Kind::Status(done)),
    })?;
    Ok(reply.status)
}

/// Rows of `ARTIFACT` stored for the flow (lines of its .jsonl; 0 without one).
pub fn stored_rows(datastore: &Path, client: &str, flow: &str) -> usize {
    let path = super::flow_results(datastore, client, flow, ARTIFACT);
    if path.exists() {
        super::count_lines(&path)
    } else {
        0
    }
}

/// Whether the flow is still in the agent's task queue on disk.
pub fn queued(datastore: &Path, client: &str, flow: &str) -> bool {
    datastore
        .join("clients")
        .join(client)
        .join("tasks")
        .join(flow)
        .exists()
}

/// The same agent on a new connection to the first URL of `config` (its uploads are then
/// handled by a connection that never saw the flow before).
pub fn reconnect(agent: RawAgent, config: &Path) -> Result<RawAgent> {
    let identity = agent.identity.clone();
    drop(agent);
    RawAgent::connect_as(config, identity).context("reconnecting the agent")
}

/// Generous: only a server that stopped answering takes this long.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);
