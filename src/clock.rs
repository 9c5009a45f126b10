//! Wall-clock time as the datastore and the API store it: milliseconds or microseconds
//! since the Unix epoch. A clock set before 1970 reads as 0 rather than failing. The one
//! place that reads `SystemTime::now()`, so every stored timestamp agrees on that rule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero if the clock is set before it.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

pub fn now_us() -> u64 {
    since_epoch().as_micros() as u64
}
