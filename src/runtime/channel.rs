//! Helpers for glommio's bounded shared channels, the queues between executors.

use crate::limits::QUEUE_CONNECT_POLL_INTERVAL;

/// Awaits a glommio shared-channel `connect()`. glommio wakes a pending connect only
/// when its executor's reactor runs; an executor parked with no timer never sees the
/// other end arrive, and start-up hung that way on a loaded box (about 1 start in 5
/// with both cores busy). A ticking timer keeps the reactor turning until connected.
pub async fn connect_polled<F: std::future::Future>(connect: F) -> F::Output {
    let ticks = async {
        loop {
            glommio::timer::sleep(QUEUE_CONNECT_POLL_INTERVAL).await;
        }
    };
    futures::pin_mut!(connect, ticks);
    match futures::future::select(connect, ticks).await {
        futures::future::Either::Left((connected, _)) => connected,
        futures::future::Either::Right((never, _)) => never,
    }
}
