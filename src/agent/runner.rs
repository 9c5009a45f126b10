//! What runs a task: the real agent's native artifacts, or loadgen's synthetic ones.

use std::collections::BTreeMap;

use crate::agent::collected::{ArtifactOutput, CollectContext};
use crate::protocol::pb;

pub trait Runner: Send + Sync + 'static {
    /// Collects every artifact of the task within `ctx` (its limits, a cancel, where file
    /// snapshots go). May block (it runs on a blocking thread when `is_blocking` says so).
    fn collect(&self, task: &pb::Task, ctx: &CollectContext) -> Vec<ArtifactOutput>;
    fn is_blocking(&self) -> bool;
    /// For a runner that makes its output at once (not blocking): how long the
    /// collection is held before its output is queued, as a real collection would take
    /// (loadgen's `--collect-ms`). The session keeps serving its stream meanwhile.
    fn collect_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

// Event queries are per agent, not per runner (loadgen shares one runner between
// thousands of agents): see `agent::events::EventQueries`.

/// Appends `row` as one JSONL line.
pub fn push_row(jsonl: &mut Vec<u8>, row: &serde_json::Value) {
    serde_json::to_writer(&mut *jsonl, row).expect("a JSON value always serialises");
    jsonl.push(b'\n');
}

/// The real agent: artifacts read from this host. Runs the task's artifacts in request
/// order with one flow-wide tally, so `max_rows` and `max_upload_bytes` count over the
/// whole flow and upload numbers run 0, 1, 2.. over all artifacts' files (the numbers
/// `FileChunk.upload` carries). Once a limit, a cancel or the timeout stops one artifact,
/// the rest are answered empty (with that `limit_hit`) instead of run.
pub struct NativeRunner;

impl Runner for NativeRunner {
    fn collect(&self, task: &pb::Task, ctx: &CollectContext) -> Vec<ArtifactOutput> {
        use crate::agent::artifacts::sink::{ArtifactSink, FlowTally, LIMIT_TIMEOUT};
        let mut tally = FlowTally::default();
        let mut outputs = Vec::with_capacity(task.artifacts.len());
        for request in &task.artifacts {
            let stopped = tally.limit_hit.is_some() || ctx.should_stop();
            let mut sink = ArtifactSink::new(ctx, &mut tally);
            if stopped {
                if ctx.timed_out() {
                    sink.hit(LIMIT_TIMEOUT);
                }
                sink.carry_flow_limit();
                outputs.push(sink.finish(&request.name, None));
                continue;
            }
            let params: BTreeMap<String, String> = request.parameters.clone().into_iter().collect();
            let result = crate::agent::artifacts::collect_into(&request.name, &params, &mut sink);
            outputs.push(sink.finish(&request.name, result.err().map(|e| e.to_string())));
        }
        outputs
    }

    fn is_blocking(&self) -> bool {
        true
    }
}
