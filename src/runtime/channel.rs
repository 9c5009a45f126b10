//! Helpers for glommio's bounded shared channels, the queues between executors.

use std::time::Duration;

/// How often an executor waiting for the other end of a queue to connect wakes up.
const CONNECT_POLL: Duration = Duration::from_millis(5);

/// Awaits a glommio shared-channel `connect()`. glommio wakes a pending connect only
/// when its executor's reactor runs; an executor parked with no timer never sees the
/// other end arrive, and start-up hung that way on a loaded box (about 1 start in 5
/// with both cores busy). A ticking timer keeps the reactor turning until connected.
pub async fn connect_polled<F: std::future::Future>(connect: F) -> F::Output {
    let ticks = async {
        loop {
            glommio::timer::sleep(CONNECT_POLL).await;
        }
    };
    futures::pin_mut!(connect, ticks);
    match futures::future::select(connect, ticks).await {
        futures::future::Either::Left((connected, _)) => connected,
        futures::future::Either::Right((never, _)) => never,
    }
}
