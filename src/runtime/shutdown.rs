//! The process-wide stop signal every executor watches: resolves once when the frontend
//! is asked to stop (SIGINT/SIGTERM), and is cheap to clone into each task that must
//! finish cleanly.

use futures::future::{FutureExt, Shared};

/// Resolves once when the process is asked to stop.
pub type ShutdownSignal = Shared<futures::channel::oneshot::Receiver<()>>;

/// A stop trigger and the signal it fires.
pub fn channel() -> (futures::channel::oneshot::Sender<()>, ShutdownSignal) {
    let (stop, signal) = futures::channel::oneshot::channel::<()>();
    (stop, signal.shared())
}

/// True once the signal has fired (without waiting).
pub fn has_fired(signal: &ShutdownSignal) -> bool {
    signal.clone().now_or_never().is_some()
}
