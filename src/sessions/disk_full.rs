//! A full datastore as this frontend's agent path sees it: the start of an outage (the
//! first upload refused for ENOSPC/EDQUOT), reminders while it lasts, and its end (the
//! next upload written), in the log and in `packhunt_datastore_full`.
//!
//! Nothing here decides what to answer (`upload.rs` answers 503 + the configured
//! Retry-After) or retries anything: agents keep their data and come back after the
//! Retry-After, and the first of them to find room ends the outage. The state is one
//! process-wide gauge, touched once per refused upload and, while it is set, once per
//! written one: a flag read, not a lock, on the agent path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_ms;
use crate::limits::DISK_FULL_LOG_INTERVAL;
use crate::metrics::{metrics, DiskFullUpload};

/// ms since the epoch of the last line logged about an outage (0: none yet).
static LAST_LOGGED_MS: AtomicU64 = AtomicU64::new(0);
/// Whether an outage line was logged whose end has not been: its end is then logged too.
static OUTAGE_LOGGED: AtomicBool = AtomicBool::new(false);
/// Refusals counted when the logged outage began, for the counts in its later lines.
static REFUSED_AT_START: AtomicU64 = AtomicU64::new(0);

/// An upload of `kind` was refused because the datastore had no space.
///
/// At the edge of full, a write that fails gives back its pages and the next may fit, so
/// the gauge can flap within milliseconds: the log gets at most one line per
/// `DISK_FULL_LOG_INTERVAL` (the start, then reminders), and an end line only for an
/// outage it reported.
pub fn refused(kind: DiskFullUpload, retry_after: Duration) {
    let m = metrics();
    let total = m.disk_full_refused(kind);
    let began = m.datastore_full.swap(1, Ordering::Relaxed) == 0;
    let (now, last) = (now_ms(), LAST_LOGGED_MS.load(Ordering::Relaxed));
    let due = last == 0 || now.saturating_sub(last) >= DISK_FULL_LOG_INTERVAL.as_millis() as u64;
    if !due
        || LAST_LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if began && !OUTAGE_LOGGED.swap(true, Ordering::Relaxed) {
        REFUSED_AT_START.store(total - 1, Ordering::Relaxed);
        tracing::error!(
            kind = kind.label(),
            "the datastore is full (no space left on the mount): uploads are refused with \
             503 + Retry-After {} s and agents keep their data; free space on the shared \
             mount and ingest resumes by itself",
            retry_after.as_secs()
        );
        return;
    }
    OUTAGE_LOGGED.store(true, Ordering::Relaxed);
    let refused = total.saturating_sub(REFUSED_AT_START.load(Ordering::Relaxed));
    tracing::error!("the datastore is still full: {refused} uploads refused since it filled");
}

/// An upload was written: if the datastore was full, it has room again.
pub fn written() {
    let m = metrics();
    // A load first: outside an outage this is the only cost on the agent path.
    if m.datastore_full.load(Ordering::Relaxed) == 0
        || m.datastore_full.swap(0, Ordering::Relaxed) == 0
    {
        return;
    }
    m.disk_full_recoveries.fetch_add(1, Ordering::Relaxed);
    if !OUTAGE_LOGGED.swap(false, Ordering::Relaxed) {
        return;
    }
    let total: u64 = DiskFullUpload::ALL
        .iter()
        .map(|k| m.disk_full_refused_count(*k))
        .sum();
    let refused = total.saturating_sub(REFUSED_AT_START.load(Ordering::Relaxed));
    tracing::warn!("the datastore has room again: ingest resumed after {refused} refused uploads");
}
