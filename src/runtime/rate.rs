//! A token bucket for the per-second limits: `max_connections_per_second` (each agent
//! shard's share, one second of burst) and `hunt_recruitment_per_second` (the master's,
//! a small burst so the rate holds over short windows too). Owned by one executor.

use std::cell::Cell;
use std::time::Instant;

pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: Cell<f64>,
    refilled: Cell<Instant>,
}

impl TokenBucket {
    /// `per_second` tokens per second, at most `burst` banked; starts full.
    pub fn new(per_second: u64, burst: u64) -> Self {
        let per_second = per_second.max(1) as f64;
        let burst = burst.max(1) as f64;
        Self {
            per_second,
            burst,
            tokens: Cell::new(burst),
            refilled: Cell::new(Instant::now()),
        }
    }

    /// Empties the bucket: what was banked while nothing needed tokens is not spent as a
    /// burst when something starts.
    pub fn drain(&self) {
        self.tokens.set(0.0);
        self.refilled.set(Instant::now());
    }

    /// Tokens available now, without taking any.
    pub fn available(&self) -> u64 {
        self.refill(Instant::now());
        self.tokens.get() as u64
    }

    fn refill(&self, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(self.refilled.get())
            .as_secs_f64();
        let tokens = (self.tokens.get() + elapsed * self.per_second).min(self.burst);
        self.refilled.set(now);
        self.tokens.set(tokens);
        tokens
    }

    /// Takes a token if there is one at `now`.
    pub fn try_take_at(&self, now: Instant) -> bool {
        let tokens = self.refill(now);
        if tokens >= 1.0 {
            self.tokens.set(tokens - 1.0);
            return true;
        }
        false
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
        let bucket = TokenBucket::new(10, 10);
        let first: usize = (0..25).filter(|_| bucket.try_take_at(start)).count();
        assert_eq!(first, 10, "one second's worth at once");
        let later = start + Duration::from_millis(500);
        let refilled: usize = (0..25).filter(|_| bucket.try_take_at(later)).count();
        assert_eq!(refilled, 5, "half a second refills half the rate");
        let idle = later + Duration::from_secs(60);
        assert_eq!(
            (0..25).filter(|_| bucket.try_take_at(idle)).count(),
            10,
            "never more than one second banked"
        );
    }
}
