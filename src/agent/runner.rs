//! What runs a task: the real agent's native artifacts, or loadgen's synthetic ones.

use std::collections::BTreeMap;

use crate::agent::collected::{ArtifactOutput, CollectContext};
use crate::protocol::pb;

pub trait Runner: Send + Sync + 'static {
    /// Collects every artifact of the task within `ctx` (its limits, a cancel, where file
    /// snapshots go). May block (it runs on a blocking thread when `is_blocking` says so).
    fn collect(&self, task: &pb::Task, ctx: &CollectContext) -> Vec<ArtifactOutput>;
    fn is_blocking(&self) -> bool;
}

// Event queries are per agent, not per runner (loadgen shares one runner between
// thousands of agents): see `agent::events::EventQueries`.

/// Appends `row` as one JSONL line.
pub fn push_row(jsonl: &mut Vec<u8>, row: &serde_json::Value) {
    serde_json::to_writer(&mut *jsonl, row).expect("a JSON value always serialises");
    jsonl.push(b'\n');
}

/// The real agent: artifacts read from this host.
pub struct NativeRunner;

impl Runner for NativeRunner {
    fn collect(&self, task: &pb::Task, _ctx: &CollectContext) -> Vec<ArtifactOutput> {
        task.artifacts
            .iter()
            .map(|request| {
                let params: BTreeMap<String, String> =
                    request.parameters.clone().into_iter().collect();
                let mut jsonl = Vec::new();
                let mut rows = 0u64;
                let result = crate::agent::artifacts::collect(&request.name, &params, &mut |row| {
                    push_row(&mut jsonl, &row);
                    rows += 1;
                });
                ArtifactOutput {
                    name: request.name.clone(),
                    jsonl: jsonl.into(),
                    rows,
                    error: result.err().map(|e| e.to_string()),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn is_blocking(&self) -> bool {
        true
    }
}
