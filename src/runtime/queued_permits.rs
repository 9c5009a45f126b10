//! A semaphore whose waiters are bounded twice: in count (past it a caller is refused at
//! once) and in time (a waiter gives up after its wait). The upload permits and the facts
//! budget both admit work this way: a burst queues, a flood is refused, and nothing waits
//! longer than its caller can usefully wait.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use glommio::sync::{Semaphore, StaticPermit};

use crate::runtime::deadline::with_deadline;

pub struct QueuedPermits {
    permits: Rc<Semaphore>,
    /// Invariant: at most `max_waiting`.
    waiting: Cell<usize>,
    max_waiting: usize,
    wait: Duration,
}

impl QueuedPermits {
    pub fn new(permits: u64, max_waiting: usize, wait: Duration) -> Self {
        Self {
            permits: Rc::new(Semaphore::new(permits)),
            waiting: Cell::new(0),
            max_waiting,
            wait,
        }
    }

    /// A permit now, or after waiting at most `wait` in the queue; None when the queue is
    /// full or the wait ran out. `waiting_gauge` counts this caller while it waits.
    pub async fn acquire(&self, waiting_gauge: &AtomicI64) -> Option<StaticPermit> {
        match self.permits.try_acquire_static_permit(1) {
            Ok(permit) => Some(permit),
            Err(_) if self.waiting.get() >= self.max_waiting => None,
            Err(_) => {
                self.waiting.set(self.waiting.get() + 1);
                waiting_gauge.fetch_add(1, Ordering::Relaxed);
                let acquired =
                    with_deadline(self.wait, self.permits.acquire_static_permit(1)).await;
                self.waiting.set(self.waiting.get() - 1);
                waiting_gauge.fetch_sub(1, Ordering::Relaxed);
                acquired?.ok()
            }
        }
    }
}
