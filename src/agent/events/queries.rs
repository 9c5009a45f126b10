//! Which event queries run: the client event table says, and this keeps exactly its
//! queries running, each on a thread of its own on the real agent. A query the table no
//! longer lists is stopped; one whose parameters changed is stopped and started again.
//!
//! Owns: the per-agent set of running queries and their threads. Must not: batch or send
//! rows (the spool and the session do) or block the session task (`table_changed` only
//! spawns and signals threads).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use prost::Message;
use serde_json::Value;

use crate::agent::events::stop::StopSignal;
use crate::agent::events::{client_stats, log_tail, process_start, EventSpool};
use crate::artifacts::{self as catalogue, ArtifactError};
use crate::limits::MAX_TASK_FRAME_BYTES;
use crate::protocol::pb;

/// What runs the queries of one agent's client event table.
pub trait EventQueries: Send + Sync + 'static {
    /// The table changed: run exactly `table.queries` from now on (an empty list stops
    /// everything). Called on the agent's session task, so it must return at once.
    fn table_changed(&mut self, table: &pb::EventTable);

    /// The table the agent held when it last ran, to run before any server is reached
    /// (an agent restarted while offline keeps monitoring). None: wait for the server's.
    fn saved_table(&mut self) -> Option<pb::EventTable> {
        None
    }
}

/// One query as the table asks for it: its name and its parameters as sent.
pub type QuerySpec = (String, BTreeMap<String, String>);

/// The table's queries in order, parameters sorted (so equal tables compare equal).
pub fn specs(table: &pb::EventTable) -> Vec<QuerySpec> {
    table
        .queries
        .iter()
        .map(|q| (q.name.clone(), q.parameters.clone().into_iter().collect()))
        .collect()
}

/// Which of `running` to stop and which of `wanted` to start, so that exactly `wanted`
/// runs: a query whose parameters changed is in both lists.
pub fn plan_changes(running: &[QuerySpec], wanted: &[QuerySpec]) -> (Vec<usize>, Vec<usize>) {
    let stop = (0..running.len())
        .filter(|&i| !wanted.contains(&running[i]))
        .collect();
    let start = (0..wanted.len())
        .filter(|&i| !running.contains(&wanted[i]))
        .collect();
    (stop, start)
}

/// The real agent's queries, each on its own thread, rows into `spool`.
pub struct NativeQueries {
    spool: Arc<EventSpool>,
    running: Vec<(QuerySpec, StopSignal)>,
    /// Where the last table is kept for the next start (None: not kept).
    table_file: Option<PathBuf>,
}

impl NativeQueries {
    pub fn new(spool: Arc<EventSpool>, table_file: Option<PathBuf>) -> Self {
        Self {
            spool,
            running: Vec::new(),
            table_file,
        }
    }

    /// Keeps `table` for the next start: a few hundred bytes, replaced atomically, only
    /// when the table changes.
    fn save(&self, table: &pb::EventTable) {
        let Some(path) = &self.table_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let written =
            std::fs::write(&tmp, table.encode_to_vec()).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "client event table not kept: {e}");
        }
    }

    fn start(&mut self, spec: QuerySpec) {
        let (name, params) = &spec;
        let resolved = catalogue::find_event(name).and_then(|def| {
            catalogue::resolve_params(def, params).map(|params| (def.name, params))
        });
        let (artifact, params) = match resolved {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(query = %name, "event query not started: {e}");
                return;
            }
        };
        let stop = StopSignal::new();
        let (spool, signal) = (self.spool.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("event {artifact}"))
            .spawn(move || run_query(artifact, &params, &spool, &signal));
        match spawned {
            Ok(_) => {
                tracing::info!(query = %artifact, "event query started");
                self.running.push((spec, stop));
            }
            Err(e) => tracing::warn!(query = %artifact, "event query thread not started: {e}"),
        }
    }
}

impl EventQueries for NativeQueries {
    fn saved_table(&mut self) -> Option<pb::EventTable> {
        let path = self.table_file.as_ref()?;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TASK_FRAME_BYTES as u64).read_to_end(&mut bytes))
            .ok()?;
        match pb::EventTable::decode(bytes.as_slice()) {
            Ok(table) => Some(table),
            Err(e) => {
                tracing::warn!(path = %path.display(), "kept client event table unreadable: {e}");
                None
            }
        }
    }

    fn table_changed(&mut self, table: &pb::EventTable) {
        self.save(table);
        let wanted = specs(table);
        let running: Vec<QuerySpec> = self.running.iter().map(|(s, _)| s.clone()).collect();
        let (stop, start) = plan_changes(&running, &wanted);
        for &i in stop.iter().rev() {
            let (spec, signal) = self.running.remove(i);
            signal.stop();
            tracing::info!(query = %spec.0, "event query stopped");
        }
        for i in start {
            self.start(wanted[i].clone());
        }
    }
}

impl Drop for NativeQueries {
    fn drop(&mut self) {
        for (_, signal) in &self.running {
            signal.stop();
        }
    }
}

/// One query's thread: runs until stopped; an error that ends it early is logged.
fn run_query(
    artifact: &'static str,
    params: &BTreeMap<String, String>,
    spool: &EventSpool,
    stop: &StopSignal,
) {
    let emit = |row: Value| spool.push_value(artifact, crate::clock::now_ms(), &row);
    let result = match artifact {
        catalogue::CLIENT_STATS => client_stats::run(params, &emit, stop),
        catalogue::PROCESS_START => process_start::run(&emit, stop),
        catalogue::LOG_TAIL => log_tail::run(params, &emit, stop),
        // A catalogue entry without an implementation is our bug; the agent keeps going.
        other => Err(ArtifactError::UnknownArtifact(other.to_string())),
    };
    if let Err(e) = result {
        tracing::warn!(query = %artifact, "event query ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    //! Goal: a table change stops dropped queries, restarts changed ones and leaves the
    //! rest running. Method: plan from hand-built specs.

    use super::*;

    fn spec(name: &str, p: &[(&str, &str)]) -> QuerySpec {
        (
            name.into(),
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn changed_parameters_restart_and_dropped_queries_stop() {
        let running = vec![
            spec("A", &[("period_s", "10")]),
            spec("B", &[]),
            spec("C", &[]),
        ];
        let wanted = vec![
            spec("B", &[]),
            spec("A", &[("period_s", "5")]),
            spec("D", &[]),
        ];
        let (stop, start) = plan_changes(&running, &wanted);
        assert_eq!(stop, vec![0, 2]);
        assert_eq!(start, vec![1, 2]);
        assert_eq!(plan_changes(&wanted, &wanted), (vec![], vec![]));
        assert_eq!(plan_changes(&wanted, &[]).0, vec![0, 1, 2]);
    }
}
