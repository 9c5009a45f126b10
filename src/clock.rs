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

/// (year, month, day) of a count of days since 1970-01-01, proleptic Gregorian: Howard
/// Hinnant's `civil_from_days` (public domain). Day files and sinks' timestamps name UTC
/// days with it.
pub fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    let z = days_since_epoch + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
