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
    /// Rows past the task's `max_rows` (over all artifacts) and rows after its deadline
    /// are not kept; the output says which limit stopped it.
    fn collect(&self, task: &pb::Task, ctx: &CollectContext) -> Vec<ArtifactOutput> {
        let mut rows_left = match ctx.limits.max_rows {
            0 => u64::MAX,
            max => max,
        };
        task.artifacts
            .iter()
            .map(|request| {
                let params: BTreeMap<String, String> =
                    request.parameters.clone().into_iter().collect();
                let mut jsonl = Vec::new();
                let mut rows = 0u64;
                let mut limit_hit = None;
                let result = match ctx.should_stop() {
                    true => Ok(()),
                    false => crate::agent::artifacts::collect(&request.name, &params, &mut |row| {
                        if limit_hit.is_some() || ctx.should_stop() {
                            return;
                        }
                        if rows >= rows_left {
                            limit_hit = Some(crate::agent::outbox::MAX_ROWS);
                            return;
                        }
                        push_row(&mut jsonl, &row);
                        rows += 1;
                    }),
                };
                rows_left -= rows;
                if ctx.timed_out() {
                    limit_hit = Some(crate::agent::outbox::TIMEOUT_S);
                }
                ArtifactOutput {
                    name: request.name.clone(),
                    jsonl: jsonl.into(),
                    rows,
                    error: result.err().map(|e| e.to_string()),
                    limit_hit,
                    ..Default::default()
                }
            })
            .collect()
    }

    fn is_blocking(&self) -> bool {
        true
    }
}
