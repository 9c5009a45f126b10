//! This frontend's agent-port rates, from the metrics counters: one sampler shared by
//! every live stream, which takes a new sample when the newest is at least
//! `LIVE_RATE_WINDOW` old, and reports the rate between its last two samples. So the
//! counters are read once a window however many streams are open, and every stream shows
//! the same figures.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::limits::LIVE_RATE_WINDOW;
use crate::metrics::{metrics, ConnectionRefusal, RejectReason};

/// The counters the rates come from, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CounterSample {
    pub at: Instant,
    /// TCP connections the agent port accepted (shed ones included).
    pub accepted: u64,
    /// Connections closed right after accept, before TLS: over the accept rate, or out of
    /// open files.
    pub shed: u64,
    /// Uploads answered 503: no concurrency permit in time, another upload of the flow
    /// in progress, or the disk full.
    pub upload_503s: u64,
    /// Bytes of upload requests accepted (result batches, file chunks, events, facts).
    pub ingest_bytes: u64,
}

impl CounterSample {
    pub fn now() -> Self {
        let m = metrics();
        Self {
            at: Instant::now(),
            accepted: m.connections_accepted.load(Ordering::Relaxed),
            shed: m.connection_refusal_count(ConnectionRefusal::RateLimited)
                + m.connection_refusal_count(ConnectionRefusal::OutOfFiles),
            upload_503s: m.upload_rejections(RejectReason::Concurrency)
                + m.upload_rejections(RejectReason::Busy)
                + m.upload_rejections(RejectReason::Overloaded),
            ingest_bytes: m.upload_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Per-second rates between two samples; None before there are two.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub accepts_per_second: Option<f64>,
    pub sheds_per_second: Option<f64>,
    pub upload_503s_per_second: Option<f64>,
    /// Megabytes (10^6 bytes) per second.
    pub ingest_mb_per_second: Option<f64>,
}

impl Rates {
    /// The rates from `older` to `newer`; None when no time passed between them.
    pub fn between(older: &CounterSample, newer: &CounterSample) -> Self {
        let seconds = newer.at.saturating_duration_since(older.at).as_secs_f64();
        if seconds <= 0.0 {
            return Self::default();
        }
        let per_second = |a: u64, b: u64| Some(round2(b.saturating_sub(a) as f64 / seconds));
        Self {
            accepts_per_second: per_second(older.accepted, newer.accepted),
            sheds_per_second: per_second(older.shed, newer.shed),
            upload_503s_per_second: per_second(older.upload_503s, newer.upload_503s),
            ingest_mb_per_second: per_second(older.ingest_bytes, newer.ingest_bytes)
                .map(|b| round2(b / 1_000_000.0)),
        }
    }
}

/// Two decimals: what a dashboard shows, and what keeps unchanged figures unchanged.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Invariant: `older.at <= newer.at`.
pub struct RateSampler {
    samples: RefCell<(CounterSample, CounterSample)>,
}

impl RateSampler {
    /// Starts with one sample: the first rates are over the time since then.
    pub fn new() -> Self {
        let first = CounterSample::now();
        Self {
            samples: RefCell::new((first, first)),
        }
    }

    /// The rates over the last window, sampling anew if the newest sample is a window old.
    pub fn rates(&self) -> Rates {
        let mut samples = self.samples.borrow_mut();
        if samples.1.at.elapsed() >= LIVE_RATE_WINDOW {
            let newest = CounterSample::now();
            *samples = (samples.1, newest);
        }
        if samples.0.at == samples.1.at {
            // Less than a window since the first sample: the rates since then.
            return Rates::between(&samples.0, &CounterSample::now());
        }
        Rates::between(&samples.0, &samples.1)
    }
}

impl Default for RateSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // Goal: rates are the counters' differences over the seconds between the samples,
    // in MB (10^6) for bytes; no time between them gives no rates.
    #[test]
    fn rates_between_samples() {
        let at = Instant::now();
        let a = CounterSample {
            at,
            accepted: 10,
            shed: 0,
            upload_503s: 5,
            ingest_bytes: 0,
        };
        let b = CounterSample {
            at: at + Duration::from_secs(2),
            accepted: 30,
            shed: 4,
            upload_503s: 5,
            ingest_bytes: 3_000_000,
        };
        let r = Rates::between(&a, &b);
        assert_eq!(r.accepts_per_second, Some(10.0));
        assert_eq!(r.sheds_per_second, Some(2.0));
        assert_eq!(r.upload_503s_per_second, Some(0.0));
        assert_eq!(r.ingest_mb_per_second, Some(1.5));
        assert_eq!(Rates::between(&a, &a), Rates::default());
    }
}
