//! The spool joins the batcher and the buffer for the two sides that meet there:
//! producers (query threads, loadgen's timer tasks) push rows, and the session takes
//! sealed batches, in order, and reports the server's answers. A flusher (a thread on the
//! real agent, a task in loadgen) seals batches that reached their age, so an event gets
//! out within `EVENT_BATCH_MAX_AGE` even when no further row follows it.
//!
//! Owns: the lock around batcher and buffer, the wake-ups, and reporting drops (outside
//! the lock). Must not: block on anything but its own lock and, on disk, the buffer's
//! small file operations (so the session calls it on a blocking thread when on disk).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::agent::events::batch::Batcher;
use crate::agent::events::buffer::{Dropped, EventBuffer};
use crate::agent::events::{DropReason, OnDrop};
use crate::protocol::pb;

pub struct EventSpool {
    state: Mutex<SpoolState>,
    /// Wakes the flusher thread: a batch opened, or the spool closed.
    opened_cv: Condvar,
    /// Wakes the flusher task (loadgen), for the same reasons.
    opened: tokio::sync::Notify,
    /// Wakes the session: a sealed batch is waiting.
    ready: tokio::sync::Notify,
    on_drop: OnDrop,
    on_disk: bool,
}

struct SpoolState {
    batcher: Batcher,
    buffer: EventBuffer,
    closed: bool,
}

/// Invariant: no critical section on the spool panics (they are batcher and buffer
/// calls that report errors as values), so the lock is never poisoned.
const NOT_POISONED: &str = "no spool critical section panics";

impl EventSpool {
    pub fn new(buffer: EventBuffer, max_upload_bytes: u64, on_drop: OnDrop) -> Arc<Self> {
        let on_disk = buffer.on_disk();
        Arc::new(Self {
            state: Mutex::new(SpoolState {
                batcher: Batcher::new(max_upload_bytes),
                buffer,
                closed: false,
            }),
            opened_cv: Condvar::new(),
            opened: tokio::sync::Notify::new(),
            ready: tokio::sync::Notify::new(),
            on_drop,
            on_disk,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state.lock().expect(NOT_POISONED)
    }

    /// True when the buffer is on disk: the session then calls the spool off its task.
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// The session reached a frontend (true) or lost it (false): batches are sealed
    /// sooner while connected (see `Batcher::set_connected`).
    pub fn set_connected(&self, connected: bool) {
        self.lock().batcher.set_connected(connected);
        // The flusher may be asleep until a later deadline.
        self.opened_cv.notify_all();
        self.opened.notify_one();
    }

    /// Adds one row of `artifact`, at `time_ms`.
    pub fn push_value(&self, artifact: &str, time_ms: u64, row: &serde_json::Value) {
        let bytes = serde_json::to_vec(row).expect("a JSON value always serialises");
        self.push(artifact, time_ms, &bytes);
    }

    /// Adds one row (one JSON object, no newline) of `artifact`, at `time_ms`.
    pub fn push(&self, artifact: &str, time_ms: u64, row: &[u8]) {
        debug_assert!(!row.contains(&b'\n'));
        let mut sealed = Vec::new();
        let mut dropped = Vec::new();
        let (opened, queued) = {
            let mut st = self.lock();
            let was_idle = st.batcher.is_empty();
            match st
                .batcher
                .push(artifact, time_ms, row, Instant::now(), &mut sealed)
            {
                Ok(()) => {}
                Err(_) => dropped.push(Dropped {
                    artifact: artifact.to_string(),
                    rows: 1,
                    reason: DropReason::RowTooLarge,
                }),
            }
            let queued = !sealed.is_empty();
            for batch in sealed.drain(..) {
                dropped.extend(st.buffer.add(batch));
            }
            (was_idle && !st.batcher.is_empty(), queued)
        };
        if opened {
            self.opened_cv.notify_one();
            self.opened.notify_one();
        }
        self.after(dropped, queued);
    }

    /// Seals the batches that are due; returns when the next one will be.
    pub fn flush_due(&self) -> Option<Instant> {
        let (next, dropped, any) = {
            let mut st = self.lock();
            let mut sealed = Vec::new();
            st.batcher.seal_due(Instant::now(), &mut sealed);
            let any = !sealed.is_empty();
            let dropped: Vec<Dropped> = sealed.into_iter().flat_map(|b| st.buffer.add(b)).collect();
            (st.batcher.next_due(), dropped, any)
        };
        self.after(dropped, any);
        next
    }

    /// Seals every open batch and stops the flusher: the agent is stopping, and what was
    /// produced so far should wait in the buffer for the next run.
    pub fn close(&self) {
        let dropped = {
            let mut st = self.lock();
            st.closed = true;
            let mut sealed = Vec::new();
            st.batcher.seal_all(&mut sealed);
            sealed.into_iter().flat_map(|b| st.buffer.add(b)).collect()
        };
        self.opened_cv.notify_all();
        self.opened.notify_one();
        self.after(dropped, true);
    }

    /// Reports drops and wakes the session, outside the lock.
    fn after(&self, dropped: Vec<Dropped>, queued: bool) {
        for d in dropped {
            (self.on_drop)(&d.artifact, d.rows, d.reason);
        }
        if queued {
            self.ready.notify_one();
        }
    }

    /// The flusher of the real agent: a thread that seals batches as they come due, until
    /// `close`.
    pub fn start_flusher_thread(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let spool = self.clone();
        std::thread::Builder::new()
            .name("event-flusher".into())
            .spawn(move || spool.flusher_thread())
    }

    fn flusher_thread(&self) {
        loop {
            self.flush_due();
            let st = self.lock();
            // Re-read under the lock held into the wait, so a batch opened since the
            // flush above cannot slip past unnoticed.
            if st.closed {
                return;
            }
            match st.batcher.next_due() {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        drop(self.opened_cv.wait_timeout(st, wait).expect(NOT_POISONED));
                    }
                }
                None => drop(self.opened_cv.wait(st).expect(NOT_POISONED)),
            }
        }
    }

    /// The flusher as a tokio task (loadgen: thousands of agents, no thread each); ends
    /// at `close`.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            let next = self.flush_due();
            if self.lock().closed {
                return;
            }
            match next {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.opened.notified() => {}
                    }
                }
                None => self.opened.notified().await,
            }
        }
    }

    /// True when a sealed batch waits to be sent.
    pub fn has_batches(&self) -> bool {
        !self.lock().buffer.is_empty()
    }

    /// Resolves when a batch may have been queued since the last call.
    pub async fn batch_queued(&self) {
        self.ready.notified().await
    }

    /// The oldest batch, to send now (with `dropped_before` filled in).
    pub fn front(&self) -> Option<pb::EventBatch> {
        let (batch, lost) = self.lock().buffer.front();
        self.after(lost, false);
        batch
    }

    /// The server has `batch` (OK or DUPLICATE): returns its rows, 0 if it was gone.
    pub fn acked(&self, batch: &pb::EventBatch) -> u64 {
        self.lock()
            .buffer
            .acked(batch.seq, &batch.artifact)
            .unwrap_or(0)
    }

    /// The server refused `batch` for good.
    pub fn refused(&self, batch: &pb::EventBatch) {
        let dropped = self.lock().buffer.refused(batch.seq, &batch.artifact);
        self.after(dropped.into_iter().collect(), false);
    }

    /// The server found `batch` too large (413).
    pub fn split(&self, batch: &pb::EventBatch) {
        let dropped = self.lock().buffer.split(batch);
        self.after(dropped, false);
    }

    /// (batches, bytes) waiting in the buffer.
    pub fn buffered(&self) -> (usize, u64) {
        let st = self.lock();
        (st.buffer.len(), st.buffer.total_bytes())
    }
}

#[cfg(test)]
mod tests {
    //! Goal: a lone row reaches the buffer by age alone, through the flusher thread, and
    //! a stopping agent keeps what was still open. Method: real spool, real thread.

    use super::*;
    use std::time::Duration;

    #[test]
    fn the_flusher_seals_a_lone_row_and_close_keeps_open_rows() {
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = dropped.clone();
        let on_drop: OnDrop = Box::new(move |_, rows, _| {
            counted.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        });
        let spool = EventSpool::new(EventBuffer::memory(1 << 20), 64 * 1024, on_drop);
        let flusher = spool.start_flusher_thread().unwrap();
        spool.set_connected(true);
        spool.push("A", crate::clock::now_ms(), b"{\"n\":1}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !spool.has_batches() {
            assert!(Instant::now() < deadline, "the flusher sealed the batch");
            std::thread::sleep(Duration::from_millis(10));
        }
        let batch = spool.front().unwrap();
        assert_eq!(&batch.jsonl[..], b"{\"n\":1}\n");
        assert_eq!(spool.acked(&batch), 1);
        spool.push("B", crate::clock::now_ms(), b"{\"n\":2}");
        spool.close();
        flusher.join().unwrap();
        assert_eq!(spool.front().unwrap().artifact, "B");
        spool.push("C", 1, &vec![b'x'; 70 * 1024]);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
