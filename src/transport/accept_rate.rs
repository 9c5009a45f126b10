//! Load shedding: `max_connections_per_second`. Each agent shard refills its share of
//! the frontend's rate into a token bucket (one second of burst) and accepts a
//! connection only with a token; the rest are closed right after accept(), before any
//! TLS work, which costs the frontend a few microseconds instead of a full handshake.
//! The agent sees its connection fail, moves to the next frontend URL and, after a full
//! round of failures, sleeps with jittered exponential backoff, so a fleet reconnecting
//! at once (a frontend restart) spreads itself out instead of arriving as one wave.

use std::cell::Cell;
use std::time::Instant;

pub struct AcceptRate {
    per_second: f64,
    tokens: Cell<f64>,
    refilled: Cell<Instant>,
}

impl AcceptRate {
    /// A bucket of `per_second` tokens per second, starting full.
    pub fn new(per_second: u64) -> Self {
        let per_second = per_second.max(1) as f64;
        Self { per_second, tokens: Cell::new(per_second), refilled: Cell::new(Instant::now()) }
    }

    /// Takes a token if there is one at `now`.
    pub fn try_take_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled.get()).as_secs_f64();
        let tokens = (self.tokens.get() + elapsed * self.per_second).min(self.per_second);
        self.refilled.set(now);
        if tokens >= 1.0 {
            self.tokens.set(tokens - 1.0);
            true
        } else {
            self.tokens.set(tokens);
            false
        }
    }

    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let start = Instant::now();
        let bucket = AcceptRate::new(10);
        let first: usize = (0..25).filter(|_| bucket.try_take_at(start)).count();
        assert_eq!(first, 10, "one second's worth at once");
        let later = start + Duration::from_millis(500);
        let refilled: usize = (0..25).filter(|_| bucket.try_take_at(later)).count();
        assert_eq!(refilled, 5, "half a second refills half the rate");
        let idle = later + Duration::from_secs(60);
        assert_eq!((0..25).filter(|_| bucket.try_take_at(idle)).count(), 10, "never more than one second banked");
    }
}
