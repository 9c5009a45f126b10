//! Whether this frontend takes new agents, for a load balancer's health checks
//! (`GET /readyz`): ready once its agent listeners accept, and no longer from the moment
//! it is asked to stop (SIGTERM starts the drain, docs/operating.md). Process-wide, like
//! the metrics: one frontend per process.

use std::sync::atomic::{AtomicBool, Ordering};

static ACCEPTING: AtomicBool = AtomicBool::new(false);
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Every agent listener is up and accepting.
pub fn mark_accepting() {
    ACCEPTING.store(true, Ordering::Release);
}

/// The frontend was asked to stop: it takes no new agents and moves the connected ones.
pub fn mark_draining() {
    DRAINING.store(true, Ordering::Release);
}

/// Accepting agents and not draining: what `/readyz` answers.
pub fn is_ready() -> bool {
    ACCEPTING.load(Ordering::Acquire) && !is_draining()
}

/// Asked to stop and draining.
pub fn is_draining() -> bool {
    DRAINING.load(Ordering::Acquire)
}
