//! The wait between two attempts at a batch: exponential from `MIN_SINK_RETRY_BACKOFF`
//! to `MAX_SINK_RETRY_BACKOFF`, jittered to 50-100 % ("equal jitter") so that frontends
//! do not hit a recovering sink in step, and never shorter than the sink's Retry-After.

use std::time::Duration;

use rand::Rng;

use crate::limits::{MAX_SINK_RETRY_BACKOFF, MIN_SINK_RETRY_BACKOFF};

#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait after one more failure; `floor` is the sink's Retry-After (capped at
    /// `MAX_SINK_RETRY_BACKOFF`, so a sink cannot park the sender for a day).
    pub fn next(&mut self, floor: Option<Duration>) -> Duration {
        let base = MIN_SINK_RETRY_BACKOFF
            .saturating_mul(1u32 << self.failures.min(16))
            .min(MAX_SINK_RETRY_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        let jittered = base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        jittered.max(floor.unwrap_or_default().min(MAX_SINK_RETRY_BACKOFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_its_cap_and_honours_retry_after() {
        let mut b = Backoff::default();
        let first = b.next(None);
        assert!(first >= MIN_SINK_RETRY_BACKOFF / 2 && first <= MIN_SINK_RETRY_BACKOFF);
        for _ in 0..40 {
            assert!(b.next(None) <= MAX_SINK_RETRY_BACKOFF);
        }
        let mut b = Backoff::default();
        assert!(b.next(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert!(b.next(Some(Duration::from_secs(86_400))) <= MAX_SINK_RETRY_BACKOFF);
    }
}
