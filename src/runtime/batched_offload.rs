//! Many small blocking jobs of one kind, run a batch per blocking-pool trip.
//!
//! A trip to the blocking pool costs two thread wake-ups (the pool thread's, then the
//! executor's) and the context switches with them, which for a small read is more than
//! the read. A reconnect storm made one such trip per connection (tuning.md, P6). Here
//! the first job waits `window` for others to join it, and up to `max_per_trip` go
//! together; at most `max_in_flight` trips run at once, so a slow filesystem (NFS) still
//! serves several batches in parallel, and jobs that arrive meanwhile form the next ones.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;

use crate::runtime::offload::offload;

/// How a batcher gathers its jobs.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    /// How long the first job of a batch waits for more.
    pub window: Duration,
    pub max_per_trip: usize,
    pub max_in_flight: usize,
}

/// Cheap to clone: clones share the queue.
pub struct BatchedOffload<I, O> {
    inner: Rc<Inner<I, O>>,
}

impl<I, O> Clone for BatchedOffload<I, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

type Job<I, O> = (I, oneshot::Sender<O>);

struct Inner<I, O> {
    work: Arc<dyn Fn(&I) -> O + Send + Sync>,
    shape: BatchShape,
    waiting: RefCell<Vec<Job<I, O>>>,
    /// A task is waiting out the window before it starts trips.
    gathering: Cell<bool>,
    in_flight: Cell<usize>,
    /// Trips made so far (what the batching saves shows here).
    trips: Cell<u64>,
}

impl<I: Send + 'static, O: Send + 'static> BatchedOffload<I, O> {
    /// `work` runs on the blocking pool, once per job, a batch of jobs per trip.
    pub fn new(shape: BatchShape, work: impl Fn(&I) -> O + Send + Sync + 'static) -> Self {
        Self {
            inner: Rc::new(Inner {
                work: Arc::new(work),
                shape,
                waiting: RefCell::new(Vec::new()),
                gathering: Cell::new(false),
                in_flight: Cell::new(0),
                trips: Cell::new(0),
            }),
        }
    }

    /// Runs `work(&input)` in the next batch and resolves with its result.
    pub async fn run(&self, input: I) -> Result<O, TripDropped> {
        let (reply, answer) = oneshot::channel();
        self.inner.waiting.borrow_mut().push((input, reply));
        gather(&self.inner);
        answer.await.map_err(|_| TripDropped)
    }
}

/// The trip carrying a job was dropped before it answered: only when its executor stops.
#[derive(Debug, thiserror::Error)]
#[error("the blocking-pool trip for this job was dropped (the executor is stopping)")]
pub struct TripDropped;

/// Starts a gathering task unless one waits already or the trips are all busy (a trip
/// that ends looks for waiting jobs itself).
fn gather<I: Send + 'static, O: Send + 'static>(inner: &Rc<Inner<I, O>>) {
    if inner.gathering.get() || inner.in_flight.get() >= inner.shape.max_in_flight {
        return;
    }
    inner.gathering.set(true);
    let inner = inner.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(inner.shape.window).await;
        inner.gathering.set(false);
        start_trips(&inner);
    })
    .detach();
}

fn start_trips<I: Send + 'static, O: Send + 'static>(inner: &Rc<Inner<I, O>>) {
    while inner.in_flight.get() < inner.shape.max_in_flight {
        let batch: Vec<Job<I, O>> = {
            let mut waiting = inner.waiting.borrow_mut();
            let take = waiting.len().min(inner.shape.max_per_trip);
            waiting.drain(..take).collect()
        };
        if batch.is_empty() {
            return;
        }
        inner.in_flight.set(inner.in_flight.get() + 1);
        inner.trips.set(inner.trips.get() + 1);
        let inner = inner.clone();
        glommio::spawn_local(async move {
            let (inputs, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
            let work = inner.work.clone();
            let outputs = offload(move || inputs.iter().map(|i| work(i)).collect::<Vec<O>>()).await;
            for (reply, out) in replies.into_iter().zip(outputs) {
                let _ = reply.send(out); // the caller may have gone (its connection closed)
            }
            inner.in_flight.set(inner.in_flight.get() - 1);
            // Jobs that came while every trip was busy go now: they have waited a window.
            start_trips(&inner);
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Goal: jobs that arrive together share trips, each gets its own result, and no trip
    /// carries more than `max_per_trip`. Method: 50 jobs at once through a batcher that
    /// counts its trips.
    #[test]
    fn jobs_arriving_together_share_trips() {
        glommio::LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .make()
            .unwrap()
            .run(async {
                let calls = Arc::new(AtomicUsize::new(0));
                let counted = calls.clone();
                let shape = BatchShape {
                    window: Duration::from_millis(5),
                    max_per_trip: 16,
                    max_in_flight: 2,
                };
                let batcher = BatchedOffload::new(shape, move |i: &u32| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    *i * 2
                });
                let jobs: Vec<_> = (0..50u32)
                    .map(|i| {
                        let b = batcher.clone();
                        glommio::spawn_local(async move { (i, b.run(i).await) })
                    })
                    .collect();
                for job in jobs {
                    let (i, doubled) = job.await;
                    assert_eq!(doubled.unwrap(), i * 2);
                }
                assert_eq!(calls.load(Ordering::Relaxed), 50);
                // 50 jobs at most 16 a trip: 4 trips when they all arrived in one window.
                assert_eq!(batcher.inner.trips.get(), 4);
                assert!(batcher.inner.waiting.borrow().is_empty());
                assert_eq!(batcher.inner.in_flight.get(), 0);
            });
    }
}
