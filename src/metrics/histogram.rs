//! A fixed-bucket latency histogram in Prometheus form (`_bucket{le}`, `_sum`, `_count`),
//! lock-free: one relaxed atomic per bucket, shared by every thread that observes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, seconds: from a fast in-memory answer (0.25 ms) to a
/// request stuck behind a busy box (2.5 s); slower ones land in +Inf.
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Appends the series of `name`, each with `labels` (e.g. `kind="read"`) besides `le`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        let bounds = LATENCY_BUCKETS_SECONDS
            .iter()
            .map(|le| le.to_string())
            .chain(std::iter::once("+Inf".to_string()));
        for (count, le) in self.counts.iter().zip(bounds) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(250));
        h.observe(Duration::from_micros(251));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(9));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "kind=\"read\"");
        assert!(
            out.contains("x_seconds_bucket{kind=\"read\",le=\"0.00025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"read\",le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"read\",le=\"0.02\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"read\",le=\"0.05\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"read\",le=\"2.5\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{kind=\"read\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{kind=\"read\"} 4\n"), "{out}");
        assert!(
            out.contains("x_seconds_sum{kind=\"read\"} 9.030501\n"),
            "{out}"
        );
    }
}
