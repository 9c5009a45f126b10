//! Deadlines for futures on a glommio executor.

use std::future::Future;
use std::time::Duration;

use futures::future::{self, Either};
use futures::pin_mut;

/// Runs `fut` until `limit`; None when the deadline passed first.
pub async fn with_deadline<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let sleep = glommio::timer::sleep(limit);
    pin_mut!(fut, sleep);
    match future::select(fut, sleep).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Polls `busy` every `interval` until it says no, for at most `limit`; false when the
/// limit passed first. For a stop waiting on work tracked by counters and flags.
pub async fn idle_within(limit: Duration, interval: Duration, busy: impl Fn() -> bool) -> bool {
    let idle = async {
        while busy() {
            glommio::timer::sleep(interval).await;
        }
    };
    with_deadline(limit, idle).await.is_some()
}
