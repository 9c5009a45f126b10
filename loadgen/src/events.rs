//! Synthetic client monitoring events: each simulated agent runs whatever event artifacts
//! its client event table lists, emitting rows of the artifact's synthetic shape at
//! `--events-per-second-per-agent` (shared by the artifacts listed) from one timer-driven
//! tokio task. No thread per agent: a worker runs up to 19,000 agents.
//!
//! Rows come from a small pool made once per artifact and shared by every agent, so an
//! event costs a copy into the agent's batch, not a JSON build.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use packhunt::agent::events::buffer::EventBuffer;
use packhunt::agent::events::queries::EventQueries;
use packhunt::agent::events::{EventSpool, OnDrop};
use packhunt::agent::run::{AgentEvents, Observer};
use packhunt::protocol::pb;

/// Shortest time between two wake-ups of an agent's event task: above 10 events/s an
/// agent emits several rows per wake-up instead of waking more often (19,000 agents at
/// 100 wake-ups/s each would spend the worker's cores on timers).
const MIN_EMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Distinct rows per artifact in the shared pool.
const POOL_ROWS: usize = 64;

/// What every agent of the fleet needs to build its event side.
#[derive(Clone, Copy)]
pub struct EventPlan {
    pub events_per_second_per_agent: f64,
    pub buffer_bytes: u64,
    pub max_upload_bytes: u64,
    /// From then on no new events are made (`--settle-s`).
    pub quiet_from: Option<tokio::time::Instant>,
}

impl EventPlan {
    /// One agent's events: a memory spool (its drops reported to `observer`), its flusher
    /// task, and the synthetic queries. Close the spool when the agent's run ends. With
    /// `tags` (`--record`) every row starts with the run id and its number.
    pub fn agent_events(
        &self,
        observer: Arc<dyn Observer>,
        tags: Option<EventTags>,
    ) -> AgentEvents {
        let on_drop: OnDrop = Box::new(move |artifact, rows, why| {
            observer.events_dropped(artifact, rows, why);
        });
        let spool = EventSpool::new(
            EventBuffer::memory(self.buffer_bytes),
            self.max_upload_bytes,
            on_drop,
        );
        tokio::spawn(spool.clone().run_flusher());
        AgentEvents {
            spool: spool.clone(),
            queries: Box::new(SyntheticQueries {
                spool,
                rate_per_second: self.events_per_second_per_agent,
                task: None,
                tags,
                quiet_from: self.quiet_from,
            }),
        }
    }
}

/// What numbers a recorded agent's event rows: its process's run id and its counters.
#[derive(Clone)]
pub struct EventTags {
    pub run: u32,
    pub agent: Arc<crate::record::AgentRecord>,
}

struct SyntheticQueries {
    spool: Arc<EventSpool>,
    rate_per_second: f64,
    task: Option<tokio::task::JoinHandle<()>>,
    tags: Option<EventTags>,
    quiet_from: Option<tokio::time::Instant>,
}

impl EventQueries for SyntheticQueries {
    fn table_changed(&mut self, table: &pb::EventTable) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let pools: Vec<(Arc<str>, Arc<[Bytes]>)> = table
            .queries
            .iter()
            .filter_map(|q| row_pool(&q.name).map(|pool| (Arc::from(q.name.as_str()), pool)))
            .collect();
        if pools.is_empty() || self.rate_per_second <= 0.0 {
            return;
        }
        let (spool, rate) = (self.spool.clone(), self.rate_per_second);
        let (tags, quiet_from) = (self.tags.clone(), self.quiet_from);
        self.task = Some(tokio::spawn(emit(spool, rate, pools, tags, quiet_from)));
    }
}

impl Drop for SyntheticQueries {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Emits `rate` rows per second, round-robin over the artifacts, until aborted.
async fn emit(
    spool: Arc<EventSpool>,
    rate: f64,
    pools: Vec<(Arc<str>, Arc<[Bytes]>)>,
    tags: Option<EventTags>,
    quiet_from: Option<tokio::time::Instant>,
) {
    let interval = Duration::from_secs_f64(1.0 / rate).max(MIN_EMIT_INTERVAL);
    let per_tick = rate * interval.as_secs_f64();
    // A random phase, so a fleet that got its table at once does not emit at once.
    let phase = rand::thread_rng().gen_range(0.0..1.0) * interval.as_secs_f64();
    let start = tokio::time::Instant::now() + Duration::from_secs_f64(phase);
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut owed, mut next) = (0.0f64, rand::thread_rng().gen_range(0..POOL_ROWS));
    loop {
        ticker.tick().await;
        if quiet_from.is_some_and(|at| tokio::time::Instant::now() >= at) {
            return;
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let (artifact, pool) = &pools[next % pools.len()];
            let row = &pool[next % pool.len()];
            match &tags {
                Some(tags) => {
                    let seq = tags.agent.next_event(artifact);
                    let fields = format!(
                        "\"{}\":{},\"{}\":{seq}",
                        crate::record::EVENT_RUN_FIELD,
                        tags.run,
                        crate::record::EVENT_SEQ_FIELD
                    );
                    let mut tagged = Vec::with_capacity(row.len() + fields.len() + 2);
                    crate::record::push_tagged(&mut tagged, &fields, row);
                    spool.push(artifact, packhunt::clock::now_ms(), &tagged);
                }
                None => spool.push(artifact, packhunt::clock::now_ms(), row),
            }
            next = next.wrapping_add(1);
        }
    }
}

/// The shared rows of `artifact` (None for an artifact without a synthetic form).
fn row_pool(artifact: &str) -> Option<Arc<[Bytes]>> {
    static POOLS: OnceLock<Mutex<HashMap<String, Arc<[Bytes]>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .expect("no thread panics holding the pool map");
    if let Some(pool) = pools.get(artifact) {
        return Some(pool.clone());
    }
    let rows = packhunt::agent::artifacts::synthetic::synthetic_rows(
        artifact,
        POOL_ROWS,
        crate::fnv1a(artifact.as_bytes()),
    );
    if rows.is_empty() {
        return None;
    }
    let pool: Arc<[Bytes]> = rows
        .iter()
        .map(|r| Bytes::from(serde_json::to_vec(r).expect("a JSON value always serialises")))
        .collect();
    pools.insert(artifact.to_string(), pool.clone());
    Some(pool)
}

#[cfg(test)]
mod tests {
    //! Goal: an agent emits rows only for the artifacts its table lists, at about the rate
    //! asked, and stops when the table empties. Method: a real spool, the tokio clock
    //! paused and advanced.

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn emits_for_the_listed_artifacts_until_the_table_empties() {
        struct Nobody;
        impl Observer for Nobody {}
        let plan = EventPlan {
            events_per_second_per_agent: 20.0,
            buffer_bytes: 1 << 20,
            max_upload_bytes: 5 << 20,
            quiet_from: None,
        };
        let mut events = plan.agent_events(Arc::new(Nobody), None);
        let table = |names: &[&str]| pb::EventTable {
            version: 1,
            queries: names
                .iter()
                .map(|n| pb::ArtifactRequest {
                    name: n.to_string(),
                    parameters: Default::default(),
                })
                .collect(),
        };
        events.queries.table_changed(&table(&[
            packhunt::artifacts::PROCESS_START,
            "Not.An.Artifact",
        ]));
        tokio::time::sleep(Duration::from_secs(10)).await;
        events.queries.table_changed(&table(&[]));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Sealed by close rather than by age: the batch age runs on the real clock.
        events.spool.close();
        let mut rows = 0;
        let mut sizes = Vec::new();
        while let Some(batch) = events.spool.front() {
            assert_eq!(batch.artifact, packhunt::artifacts::PROCESS_START);
            rows += batch.row_count;
            sizes.push(batch.jsonl.len() / batch.row_count as usize);
            events.spool.acked(&batch);
        }
        assert!((190..=202).contains(&rows), "{rows} rows in 10 s at 20/s");
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((150..=450).contains(&mean), "mean row {mean} bytes");
        tokio::time::sleep(Duration::from_secs(5)).await;
        events.spool.close();
        assert!(
            events.spool.front().is_none(),
            "no rows after the table emptied"
        );
    }
}
