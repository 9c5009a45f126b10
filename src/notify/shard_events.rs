//! An agent shard's side of its event queue to the hub, in batches.
//!
//! Every event the hub receives wakes its executor, and a wake costs far more than the
//! event: the hub thread (niced, and real-time in the `realtime` priority mode) preempts
//! the shard, parks again, re-arms its timers. A reconnect makes three events
//! (disconnected, connected, facts), so a storm paid more in those wakes than in the
//! hub's work (tuning.md, P6). Here a shard's events wait up to
//! `SHARD_EVENT_BATCH_WINDOW` and cross as one message: one wake per window, whatever
//! the connection rate.
//!
//! Order is kept: one queue, one flusher at a time. Nothing is dropped: an event waits
//! for room among `SHARD_EVENTS_UNSENT_COUNT` unsent ones, and a batch waits for room in
//! the channel, as a single event did before (presence must not be lost or the client
//! list lies). `close` sends what is pending before closing the channel.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use glommio::channels::shared_channel::ConnectedSender;
use glommio::sync::Semaphore;

use crate::limits::{SHARD_EVENTS_UNSENT_COUNT, SHARD_EVENT_BATCH_WINDOW};
use crate::notify::mesh::ShardEvent;

/// Events of one shard as they cross to the hub, oldest first.
pub type ShardEventBatch = Vec<ShardEvent>;

/// The hub's end of the queue is gone (the frontend is stopping): the event was dropped.
#[derive(Debug, thiserror::Error)]
#[error("the hub no longer takes shard events")]
pub struct HubGone;

/// Cheap to clone: every clone feeds the same batch.
#[derive(Clone)]
pub struct ShardEventSender {
    inner: Rc<Inner>,
}

struct Inner {
    channel: ConnectedSender<ShardEventBatch>,
    pending: RefCell<ShardEventBatch>,
    /// Units are events a sender may still add before the flusher sends some.
    room: Semaphore,
    /// A flusher task is scheduled or sending.
    flushing: Cell<bool>,
}

impl ShardEventSender {
    pub fn new(channel: ConnectedSender<ShardEventBatch>) -> Self {
        Self {
            inner: Rc::new(Inner {
                channel,
                pending: RefCell::new(Vec::new()),
                room: Semaphore::new(SHARD_EVENTS_UNSENT_COUNT as u64),
                flushing: Cell::new(false),
            }),
        }
    }

    /// Queues `event` for the next batch; waits while `SHARD_EVENTS_UNSENT_COUNT` are
    /// unsent.
    pub async fn send(&self, event: ShardEvent) -> Result<(), HubGone> {
        let inner = &self.inner;
        inner.room.acquire(1).await.map_err(|_| HubGone)?;
        inner.pending.borrow_mut().push(event);
        if !inner.flushing.replace(true) {
            glommio::spawn_local(flush(inner.clone())).detach();
        }
        Ok(())
    }

    /// Sends what is pending, then closes the channel: the hub applies every event sent
    /// before and then sees the end. Later sends fail with `HubGone`.
    pub async fn close(&self) {
        let inner = &self.inner;
        inner.room.close();
        while inner.flushing.get() {
            glommio::timer::sleep(SHARD_EVENT_BATCH_WINDOW).await;
        }
        let rest = std::mem::take(&mut *inner.pending.borrow_mut());
        if !rest.is_empty() {
            let _ = inner.channel.send(rest).await;
        }
        inner.channel.close();
    }
}

/// Waits one window for more events to join, then sends batches until none is pending.
async fn flush(inner: Rc<Inner>) {
    glommio::timer::sleep(SHARD_EVENT_BATCH_WINDOW).await;
    loop {
        let batch = std::mem::take(&mut *inner.pending.borrow_mut());
        if batch.is_empty() {
            inner.flushing.set(false);
            return;
        }
        let sent = batch.len() as u64;
        let delivered = inner.channel.send(batch).await.is_ok();
        inner.room.signal(sent);
        if !delivered {
            // The hub is gone: what is pending can never be applied either.
            inner.pending.borrow_mut().clear();
            inner.flushing.set(false);
            return;
        }
    }
}
