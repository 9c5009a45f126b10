//! How a query thread is told to end: a flag with a condition variable, so a query
//! sleeping until its next poll wakes at once instead of finishing the interval.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct StopSignal(Arc<(Mutex<bool>, Condvar)>);

/// Invariant: the critical sections only read or set a bool, so the lock is never
/// poisoned.
const NOT_POISONED: &str = "a stop flag's critical sections cannot panic";

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stop(&self) {
        *self.0 .0.lock().expect(NOT_POISONED) = true;
        self.0 .1.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.0 .0.lock().expect(NOT_POISONED)
    }

    /// Sleeps for `period` or until stopped; true when stopped.
    pub fn wait(&self, period: Duration) -> bool {
        let deadline = Instant::now() + period;
        let mut stopped = self.0 .0.lock().expect(NOT_POISONED);
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            stopped = self.0 .1.wait_timeout(stopped, left).expect(NOT_POISONED).0;
        }
        true
    }
}
