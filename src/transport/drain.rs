//! A shard's drain when the frontend stops (SIGTERM/SIGINT): the accept loop has stopped
//! and closed its listener; every task stream ends (the agent is told to move; its
//! connection says GOAWAY, `agent_conn::drive`), and the uploads in flight get until
//! `frontend.drain_timeout_ms` to finish. What is still in flight then is cut with the
//! process: the agent holds it in its outbox until acknowledged and resends it to the
//! next frontend. Counts go to the log and the metrics. Knows nothing of what an upload
//! is beyond its start and end (`UploadInFlight`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::limits::DRAIN_POLL_INTERVAL;
use crate::metrics::metrics;
use crate::sessions::shard::ShardCtx;

/// One shard's uploads as the drain counts them.
#[derive(Default)]
pub struct DrainTally {
    /// Uploads being read, written or answered on this shard now.
    in_flight: Rc<Cell<u64>>,
    phase: Rc<Cell<Phase>>,
    /// Uploads that ended while the shard drained, before its deadline.
    finished: Rc<Cell<u64>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Serving,
    Draining,
    /// The deadline passed: what ends now was cut, not finished.
    Cut,
}

/// Counts one upload in flight until dropped.
pub struct UploadInFlight {
    in_flight: Rc<Cell<u64>>,
    phase: Rc<Cell<Phase>>,
    finished: Rc<Cell<u64>>,
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        self.in_flight.set(self.in_flight.get() - 1);
        if self.phase.get() == Phase::Draining {
            self.finished.set(self.finished.get() + 1);
            metrics()
                .drain_uploads_finished
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl DrainTally {
    /// An upload begins (its request was routed): counted until the guard drops.
    pub fn upload_begins(&self) -> UploadInFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        UploadInFlight {
            in_flight: self.in_flight.clone(),
            phase: self.phase.clone(),
            finished: self.finished.clone(),
        }
    }
}

/// What one shard's drain did, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub agents_moved: u64,
    pub uploads_in_flight_at_start: u64,
    pub uploads_finished: u64,
    pub uploads_cut: u64,
    pub connections_cut: u64,
}

/// Ends every task stream, then waits (up to the drain timeout) for this shard's
/// connections (`live`) to finish their uploads and close. Agents learn they are to move
/// from their task stream's end and their connection's GOAWAY; presence hears each one
/// leave when its connection closes.
pub async fn drain(ctx: &ShardCtx, tally: &DrainTally, live: &Cell<usize>) -> DrainReport {
    tally.phase.set(Phase::Draining);
    let uploads_in_flight_at_start = tally.in_flight.get();
    let moved = ctx.sessions.close_all();
    let agents_moved = moved.len() as u64;
    metrics()
        .drain_agents_moved
        .fetch_add(agents_moved, Ordering::Relaxed);
    let deadline = Instant::now() + ctx.config.frontend.drain_timeout;
    while live.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL_INTERVAL).await;
    }
    tally.phase.set(Phase::Cut);
    let uploads_cut = tally.in_flight.get();
    let connections_cut = live.get() as u64;
    let m = metrics();
    m.drain_uploads_cut
        .fetch_add(uploads_cut, Ordering::Relaxed);
    m.drain_connections_cut
        .fetch_add(connections_cut, Ordering::Relaxed);
    DrainReport {
        agents_moved,
        uploads_in_flight_at_start,
        uploads_finished: tally.finished.get(),
        uploads_cut,
        connections_cut,
    }
}

impl DrainReport {
    /// Adds another shard's report (the frontend logs one line for all shards).
    pub fn add(&mut self, other: &DrainReport) {
        self.agents_moved += other.agents_moved;
        self.uploads_in_flight_at_start += other.uploads_in_flight_at_start;
        self.uploads_finished += other.uploads_finished;
        self.uploads_cut += other.uploads_cut;
        self.connections_cut += other.connections_cut;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: an upload that ends while draining counts as finished, one that ends after
    // the deadline does not (it was cut), and one that ends while serving is neither.
    #[test]
    fn uploads_count_as_finished_only_while_draining() {
        let tally = DrainTally::default();
        drop(tally.upload_begins());
        assert_eq!(tally.finished.get(), 0);
        let (a, b) = (tally.upload_begins(), tally.upload_begins());
        assert_eq!(tally.in_flight.get(), 2);
        tally.phase.set(Phase::Draining);
        drop(a);
        tally.phase.set(Phase::Cut);
        drop(b);
        assert_eq!((tally.finished.get(), tally.in_flight.get()), (1, 0));
    }
}
