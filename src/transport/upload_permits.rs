//! Upload admission: the `concurrency` limit. A permit is taken once an upload's first
//! DATA frame is in (headers alone hold nothing shared), before the rest of its body is
//! read, and held until it is answered, so the bodies a frontend holds at once are at
//! most `concurrency × max_upload_bytes`. Each agent shard holds its share of
//! `concurrency` in a local semaphore: no lock or atomic crosses shards on this path.
//!
//! An upload that finds no permit waits, in a bounded queue (`UPLOAD_WAITERS_PER_PERMIT_COUNT` per
//! permit) for at most `limits.concurrency_wait_ms`; past either bound it gets 503 with
//! a Retry-After and the agent keeps the batch. While it waits, its connection's window
//! is the idle one (64 KiB, transport/receive_window.rs), so a request not yet admitted
//! holds at most that much per connection on top of the bound above.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use glommio::sync::{Semaphore, StaticPermit};

use crate::limits::{
    RETRY_AFTER_CONCURRENCY_MAX, RETRY_AFTER_CONCURRENCY_MIN, UPLOAD_WAITERS_PER_PERMIT_COUNT,
};
use crate::metrics::metrics;
use crate::runtime::deadline::with_deadline;
use crate::runtime::queued_permits::QueuedPermits;

pub struct UploadPermits {
    permits: QueuedPermits,
}

/// Held while an upload is read and handled; updates the in-flight gauges.
pub struct UploadSlot {
    _permit: StaticPermit,
    bytes: Cell<u64>,
}

impl UploadSlot {
    /// The body read so far is held in memory until the answer.
    pub fn hold_bytes(&self, bytes: u64) {
        metrics()
            .upload_bytes_in_flight
            .fetch_add(bytes as i64 - self.bytes.get() as i64, Ordering::Relaxed);
        self.bytes.set(bytes);
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let m = metrics();
        m.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
        m.upload_bytes_in_flight
            .fetch_sub(self.bytes.get() as i64, Ordering::Relaxed);
    }
}

impl UploadPermits {
    pub fn new(permits: u64, wait: Duration) -> Self {
        Self {
            permits: QueuedPermits::new(
                permits,
                permits as usize * UPLOAD_WAITERS_PER_PERMIT_COUNT,
                wait,
            ),
        }
    }

    /// A slot for one upload, or None when the queue is full or the wait ran out.
    pub async fn admit(&self) -> Option<UploadSlot> {
        let permit = self.permits.acquire(&metrics().uploads_waiting).await?;
        metrics().uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        Some(UploadSlot {
            _permit: permit,
            bytes: Cell::new(0),
        })
    }
}

/// One connection's admitted uploads, capped at `MAX_UPLOADS_ADMITTED_PER_CONNECTION_COUNT`
/// so that a few connections whose bodies stall hold only a few of the shard's permits.
/// Taken before the shard's permit; an upload that finds none waits (at most the
/// concurrency wait) without holding anything shared.
pub struct ConnectionUploads {
    slots: Rc<Semaphore>,
    wait: Duration,
}

impl ConnectionUploads {
    pub fn new(wait: Duration) -> Self {
        Self {
            slots: Rc::new(Semaphore::new(
                crate::limits::MAX_UPLOADS_ADMITTED_PER_CONNECTION_COUNT as u64,
            )),
            wait,
        }
    }

    /// A slot of this connection, or None when none came back within the wait.
    pub async fn admit(&self) -> Option<StaticPermit> {
        if let Ok(slot) = self.slots.try_acquire_static_permit(1) {
            return Some(slot);
        }
        with_deadline(self.wait, self.slots.acquire_static_permit(1))
            .await?
            .ok()
    }
}

/// A Retry-After for a refused upload, jittered between the bounds above.
pub fn retry_after() -> Duration {
    use rand::Rng;
    let ms = rand::thread_rng().gen_range(
        RETRY_AFTER_CONCURRENCY_MIN.as_millis() as u64
            ..=RETRY_AFTER_CONCURRENCY_MAX.as_millis() as u64,
    );
    // Retry-After carries whole seconds.
    Duration::from_secs(ms.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_then_refuses_and_bounds_the_queue() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let permits = Rc::new(UploadPermits::new(1, Duration::from_millis(50)));
                let held = permits.admit().await.expect("the one permit");
                // One permit allows UPLOAD_WAITERS_PER_PERMIT_COUNT waiters; they all time out.
                let waiters: Vec<_> = (0..UPLOAD_WAITERS_PER_PERMIT_COUNT)
                    .map(|_| {
                        let p = permits.clone();
                        glommio::spawn_local(async move { p.admit().await.is_some() })
                    })
                    .collect();
                glommio::timer::sleep(Duration::from_millis(5)).await;
                assert!(
                    permits.admit().await.is_none(),
                    "the queue is full: refused at once"
                );
                for w in waiters {
                    assert!(!w.await, "no permit came back within the wait");
                }
                // A waiter gets the permit as soon as it is released.
                let p = permits.clone();
                let waiter = glommio::spawn_local(async move { p.admit().await.is_some() });
                glommio::timer::sleep(Duration::from_millis(5)).await;
                drop(held);
                assert!(waiter.await);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
