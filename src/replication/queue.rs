//! The queues between the glommio executors and the replication thread (tokio).
//!
//! Outbound (executors -> link): one bounded crossbeam queue per process. Its producer is
//! the hub (presence and flow states, which the shards report to it over the mesh):
//! `try_send` never blocks or takes a lock. crossbeam has no waker, so every send also notifies a tokio
//! `Notify` that the link thread waits on (a permit is stored when it is not waiting, so
//! no wake is lost). When full: the message is dropped and counted
//! (`packhunt_replication_dropped_total{queue="outbound"}`); a dropped presence event
//! also flags the hub to resend a full presence snapshot, so the master's picture heals.
//!
//! Inbound (link -> hub): a bounded futures channel, whose receiver wakes the glommio
//! hub task from the tokio thread. When full: dropped and counted
//! (`{queue="inbound"}`). Work notifications lost this way cost latency, not work: the
//! task is on the shared datastore and is delivered when the agent next connects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::channel::mpsc;

use super::pb::envelope::Kind;
use crate::limits::{REPLICATION_INBOUND_QUEUE_COUNT, REPLICATION_OUTBOUND_QUEUE_COUNT};
use crate::metrics::{metrics, ReplicationQueue};

/// What the link thread tells the hub.
#[derive(Debug)]
pub enum HubMessage {
    /// A message another frontend sent (`from` is its name).
    Remote { from: Arc<str>, kind: Kind },
    /// A link to frontend `frontend` is up.
    LinkUp { frontend: Arc<str> },
    /// The link to `frontend` is gone; whatever it reported is stale.
    LinkDown { frontend: Arc<str> },
    /// Send a full presence snapshot (a new link, or presence was dropped).
    SnapshotWanted,
}

/// The producer end of the outbound queue; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Outbox {
    tx: crossbeam_channel::Sender<Kind>,
    wake: Arc<tokio::sync::Notify>,
    presence_lost: Arc<AtomicBool>,
}

/// The link thread's end of the outbound queue.
pub struct OutboxReceiver {
    rx: crossbeam_channel::Receiver<Kind>,
    wake: Arc<tokio::sync::Notify>,
    presence_lost: Arc<AtomicBool>,
}

pub fn outbox() -> (Outbox, OutboxReceiver) {
    outbox_with_capacity(REPLICATION_OUTBOUND_QUEUE_COUNT)
}

pub fn outbox_with_capacity(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let wake = Arc::new(tokio::sync::Notify::new());
    let presence_lost = Arc::new(AtomicBool::new(false));
    (
        Outbox {
            tx,
            wake: wake.clone(),
            presence_lost: presence_lost.clone(),
        },
        OutboxReceiver {
            rx,
            wake,
            presence_lost,
        },
    )
}

impl Outbox {
    /// Queues `kind` for the link; false (and counted) if the queue is full.
    pub fn offer(&self, kind: Kind) -> bool {
        let is_presence = matches!(kind, Kind::Presence(_) | Kind::Snapshot(_));
        match self.tx.try_send(kind) {
            Ok(()) => {
                self.wake.notify_one();
                true
            }
            Err(_) => {
                metrics().replication_dropped(ReplicationQueue::Outbound);
                if is_presence {
                    self.presence_lost.store(true, Ordering::Relaxed);
                    self.wake.notify_one();
                }
                false
            }
        }
    }
}

impl OutboxReceiver {
    /// True once after presence was dropped: the hub must resend a snapshot.
    pub fn take_presence_lost(&self) -> bool {
        self.presence_lost.swap(false, Ordering::Relaxed)
    }

    /// Presence was lost further down the line (the link's own queue): ask for a snapshot
    /// the next time the receiver looks.
    pub fn mark_presence_lost(&self) {
        self.presence_lost.store(true, Ordering::Relaxed);
    }

    /// Waits until something is queued or presence was lost, without taking a message.
    pub async fn ready(&self) {
        if !self.rx.is_empty() || self.presence_lost.load(Ordering::Relaxed) {
            return;
        }
        self.wake.notified().await
    }

    /// Takes a queued message, if any.
    pub fn try_recv(&self) -> Option<Kind> {
        self.rx.try_recv().ok()
    }

    /// Discards everything queued (the link is down: a snapshot replaces presence on the
    /// next link, and the rest has no receiver). Returns how many were dropped.
    pub fn discard_queued(&self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

/// The link thread's end of the inbound queue.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::Sender<HubMessage>,
}

pub type InboxReceiver = mpsc::Receiver<HubMessage>;

pub fn inbox() -> (Inbox, InboxReceiver) {
    let (tx, rx) = mpsc::channel(REPLICATION_INBOUND_QUEUE_COUNT);
    (Inbox { tx }, rx)
}

impl Inbox {
    /// Hands `message` to the hub; false (and counted) if its queue is full.
    pub fn deliver(&self, message: HubMessage) -> bool {
        let sent = self.tx.clone().try_send(message).is_ok();
        if !sent {
            metrics().replication_dropped(ReplicationQueue::Inbound);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::pb;

    fn presence(id: &str) -> Kind {
        Kind::Presence(pb::Presence {
            client_id: id.into(),
            connected: true,
            shard: 0,
            session: 1,
        })
    }

    #[test]
    fn full_outbox_drops_counts_and_flags_presence_for_a_snapshot() {
        let (outbox, rx) = outbox_with_capacity(2);
        let before = metrics().replication_dropped_count(ReplicationQueue::Outbound);
        assert!(outbox.offer(presence("C.1")));
        assert!(outbox.offer(presence("C.2")));
        assert!(!outbox.offer(presence("C.3")), "the third does not fit");
        assert!(metrics().replication_dropped_count(ReplicationQueue::Outbound) > before);
        assert!(
            rx.take_presence_lost(),
            "a lost presence event asks for a snapshot"
        );
        assert!(!rx.take_presence_lost(), "once");
        assert_eq!(rx.discard_queued(), 2);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send_from_another_thread() {
        let (outbox, rx) = outbox();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            outbox.offer(presence("C.1"));
        });
        let got = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), async {
                rx.ready().await;
                rx.try_recv()
            })
            .await
        });
        sender.join().unwrap();
        assert!(matches!(got, Ok(Some(Kind::Presence(_)))));
    }
}
