//! The queues between the glommio executors and the replication thread (tokio).
//!
//! Outbound (executors -> link): one bounded crossbeam queue per process. Its producer is
//! the hub (presence and flow states, which the shards report to it over the mesh; on the
//! master, notifications, each with its destination: every minion, or the one that holds
//! the agent, see `notify::fleet`):
//! `try_send` never blocks or takes a lock. crossbeam has no waker, so every send also notifies a tokio
//! `Notify` that the link thread waits on (a permit is stored when it is not waiting, so
//! no wake is lost). When full: the message is dropped and counted
//! (`packhunt_replication_dropped_total{queue="outbound"}`); a dropped presence event
//! also flags the hub to resend a full presence snapshot, so the master's picture heals.
//!
//! Two lanes beside the outbound queue, for live watch (events/watch.rs), so events never
//! crowd out presence: the master's watched set is a latest-value slot (a change is never
//! dropped: a newer one replaces it), and a minion's monitoring events go in a queue of
//! their own, bounded in batches and in bytes until the link's gRPC stream takes them;
//! when full the batch is dropped and counted
//! (`packhunt_events_watch_forward_dropped_total`). The minion's lane also holds the
//! artifacts the master last said it watches: the shards forward only those.
//!
//! Inbound (link -> hub): a bounded futures channel, whose receiver wakes the glommio
//! hub task from the tokio thread. When full: dropped and counted
//! (`{queue="inbound"}`). Work notifications lost this way cost latency, not work: the
//! task is on the shared datastore and is delivered when the agent next connects.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;

use super::pb::{self, envelope::Kind};
use crate::limits::{
    MAX_FORWARD_QUEUED_BATCHES_COUNT, MAX_FORWARD_QUEUED_BYTES, REPLICATION_INBOUND_QUEUE_COUNT,
    REPLICATION_OUTBOUND_QUEUE_COUNT,
};
use crate::metrics::{metrics, ReplicationQueue};
use crate::runtime::published::Published;

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

/// Where the master sends a message. A minion's link has one peer (the master) and
/// ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Every linked minion.
    AllMinions,
    /// The minion of this name (as its link was admitted); every linked minion if it is
    /// not linked when the message goes out.
    Minion(Arc<str>),
}

/// A message on the outbound queue and where it goes.
#[derive(Debug)]
pub struct Routed {
    pub kind: Kind,
    pub to: Destination,
}

/// The producer end of the outbound queue; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Outbox {
    tx: crossbeam_channel::Sender<Routed>,
    wake: Arc<tokio::sync::Notify>,
    presence_lost: Arc<AtomicBool>,
    lanes: Arc<WatchLanes>,
}

/// The link thread's end of the outbound queue.
pub struct OutboxReceiver {
    rx: crossbeam_channel::Receiver<Routed>,
    wake: Arc<tokio::sync::Notify>,
    presence_lost: Arc<AtomicBool>,
    lanes: Arc<WatchLanes>,
}

/// Live watch's lanes beside the outbound queue (see the module doc).
struct WatchLanes {
    /// Master: the watched set announced last and not yet taken by the link thread.
    announced: Mutex<Option<Vec<String>>>,
    /// Minion: monitoring events for the master.
    forward_tx: crossbeam_channel::Sender<Forwarded>,
    forward_rx: crossbeam_channel::Receiver<Forwarded>,
    /// Minion: bytes of rows in `forward_*` and in the link's queue.
    forward_bytes: Arc<AtomicUsize>,
    max_forward_bytes: usize,
    /// Minion: the artifacts the master watches, as it last said; read by the shards.
    forwarded: Published<BTreeSet<String>>,
}

/// A monitoring event on its way to the master, holding its share of the byte bound
/// until the link's stream takes it (dropping it gives the share back).
pub struct Forwarded {
    pub event: pb::MonitoringEvent,
    pub held: ForwardBytes,
}

/// A share of the minion's forward byte bound; given back on drop.
pub struct ForwardBytes {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for ForwardBytes {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Why a monitoring event was not queued for the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardRefused {
    /// The master watches no such artifact now.
    Unwatched,
    /// The forward queue is at its bound (in batches or bytes).
    Full,
}

pub fn outbox() -> (Outbox, OutboxReceiver) {
    outbox_with_capacity(REPLICATION_OUTBOUND_QUEUE_COUNT)
}

pub fn outbox_with_capacity(capacity: usize) -> (Outbox, OutboxReceiver) {
    outbox_with_bounds(
        capacity,
        MAX_FORWARD_QUEUED_BATCHES_COUNT,
        MAX_FORWARD_QUEUED_BYTES,
    )
}

/// An outbound queue of `capacity` messages whose forward lane holds at most
/// `forward_batches` batches and `forward_bytes` bytes.
pub fn outbox_with_bounds(
    capacity: usize,
    forward_batches: usize,
    forward_bytes: usize,
) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let wake = Arc::new(tokio::sync::Notify::new());
    let presence_lost = Arc::new(AtomicBool::new(false));
    let (forward_tx, forward_rx) = crossbeam_channel::bounded(forward_batches);
    let lanes = Arc::new(WatchLanes {
        announced: Mutex::new(None),
        forward_tx,
        forward_rx,
        forward_bytes: Arc::new(AtomicUsize::new(0)),
        max_forward_bytes: forward_bytes,
        forwarded: Published::new(BTreeSet::new()),
    });
    (
        Outbox {
            tx,
            wake: wake.clone(),
            presence_lost: presence_lost.clone(),
            lanes: lanes.clone(),
        },
        OutboxReceiver {
            rx,
            wake,
            presence_lost,
            lanes,
        },
    )
}

impl Outbox {
    /// Queues `kind` for the link (on the master: for every minion); false (and counted)
    /// if the queue is full.
    pub fn offer(&self, kind: Kind) -> bool {
        self.offer_to(kind, Destination::AllMinions)
    }

    /// Queues `kind` for the link, bound for `to`; false (and counted) if the queue is full.
    pub fn offer_to(&self, kind: Kind, to: Destination) -> bool {
        // Lost facts heal the way lost presence does: the snapshot makes the master re-read them.
        let is_presence = matches!(
            kind,
            Kind::Presence(_) | Kind::Snapshot(_) | Kind::ClientFacts(_)
        );
        match self.tx.try_send(Routed { kind, to }) {
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

impl Outbox {
    /// Master: the watched set changed to `artifacts`; the link thread sends it to every
    /// minion (and to each minion that links later). Never dropped: an announcement not
    /// yet sent is replaced by the newer one.
    pub fn announce_watched(&self, artifacts: Vec<String>) {
        *self.lanes.announced.lock().expect("announced lock") = Some(artifacts);
        self.wake.notify_one();
    }

    /// Minion: queues `event` for the master if the master watches its artifact and the
    /// forward lane has room. Never waits.
    pub fn forward_monitoring(&self, event: pb::MonitoringEvent) -> Result<(), ForwardRefused> {
        if !self.lanes.forwarded.load().contains(&event.artifact) {
            return Err(ForwardRefused::Unwatched);
        }
        let lanes = &self.lanes;
        let bytes = event.rows.len();
        let before = lanes.forward_bytes.fetch_add(bytes, Ordering::Relaxed);
        let held = ForwardBytes {
            counter: lanes.forward_bytes.clone(),
            bytes,
        };
        // An empty lane takes any batch, so one larger than the bound still flows.
        if before > 0 && before + bytes > lanes.max_forward_bytes {
            return Err(ForwardRefused::Full);
        }
        match lanes.forward_tx.try_send(Forwarded { event, held }) {
            Ok(()) => {
                self.wake.notify_one();
                Ok(())
            }
            Err(_) => Err(ForwardRefused::Full),
        }
    }
}

impl OutboxReceiver {
    /// Master: the watched set announced since the last call, if any.
    pub fn take_announced(&self) -> Option<Vec<String>> {
        self.lanes.announced.lock().expect("announced lock").take()
    }

    /// Minion: the master watches `artifacts` now (an empty list when the link is down:
    /// nothing is forwarded then).
    pub fn set_forwarded(&self, artifacts: Vec<String>) {
        let set: BTreeSet<String> = artifacts.into_iter().collect();
        metrics()
            .events_watched_artifacts
            .store(set.len() as i64, Ordering::Relaxed);
        self.lanes.forwarded.update(|current| {
            let changed = *current != set;
            (changed.then_some(set), ())
        });
    }

    /// Minion: a monitoring event queued for the master, if any.
    pub fn try_recv_forwarded(&self) -> Option<Forwarded> {
        self.lanes.forward_rx.try_recv().ok()
    }

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
        if !self.rx.is_empty()
            || self.presence_lost.load(Ordering::Relaxed)
            || !self.lanes.forward_rx.is_empty()
            || self
                .lanes
                .announced
                .lock()
                .expect("announced lock")
                .is_some()
        {
            return;
        }
        self.wake.notified().await
    }

    /// Takes a queued message, if any (a minion: everything goes to the master).
    pub fn try_recv(&self) -> Option<Kind> {
        self.rx.try_recv().ok().map(|routed| routed.kind)
    }

    /// Takes a queued message with its destination, if any (the master).
    pub fn try_recv_routed(&self) -> Option<Routed> {
        self.rx.try_recv().ok()
    }

    /// Discards everything queued (the link is down: a snapshot replaces presence on the
    /// next link, and the rest has no receiver). Returns how many were dropped.
    pub fn discard_queued(&self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        while self.lanes.forward_rx.try_recv().is_ok() {
            metrics()
                .events_watch_forward_dropped
                .fetch_add(1, Ordering::Relaxed);
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

    fn monitoring(artifact: &str, rows: &str) -> pb::MonitoringEvent {
        pb::MonitoringEvent {
            client_id: "C.0000000000000001".into(),
            artifact: artifact.into(),
            rows: bytes::Bytes::copy_from_slice(rows.as_bytes()),
            seq: 1,
            time_ms: vec![1],
        }
    }

    // Goal: a minion forwards only what the master watches, within its bounds in batches
    // and bytes, and a batch the link took gives its bytes back. Method: a lane of 2
    // batches and 8 bytes.
    #[test]
    fn the_forward_lane_takes_only_watched_artifacts_within_its_bounds() {
        let (outbox, rx) = outbox_with_bounds(4, 2, 8);
        let stats = "Generic.Client.Stats";
        assert_eq!(
            outbox.forward_monitoring(monitoring(stats, "{}\n")),
            Err(ForwardRefused::Unwatched)
        );
        rx.set_forwarded(vec![stats.into()]);
        assert_eq!(
            outbox.forward_monitoring(monitoring(stats, "{\"a\":1}\n")),
            Ok(())
        );
        assert_eq!(
            outbox.forward_monitoring(monitoring(stats, "{}\n")),
            Err(ForwardRefused::Full),
            "8 + 3 bytes is above the bound"
        );
        let taken = rx.try_recv_forwarded().expect("queued");
        assert_eq!(taken.event.artifact, stats);
        drop(taken);
        assert_eq!(outbox.forward_monitoring(monitoring(stats, "{}\n")), Ok(()));
        assert_eq!(outbox.forward_monitoring(monitoring(stats, "{}\n")), Ok(()));
        assert_eq!(
            outbox.forward_monitoring(monitoring(stats, "{}\n")),
            Err(ForwardRefused::Full),
            "two batches is the bound"
        );
        rx.set_forwarded(Vec::new());
        assert_eq!(rx.discard_queued(), 2);
        assert_eq!(
            outbox.forward_monitoring(monitoring(stats, "{}\n")),
            Err(ForwardRefused::Unwatched)
        );
    }

    // Goal: a message keeps the destination it was queued for (the master's link thread
    // sends it there), and a plain offer is for every minion.
    #[test]
    fn a_routed_message_keeps_its_destination() {
        let (outbox, rx) = outbox_with_capacity(4);
        let one = Destination::Minion(Arc::from("minion:2"));
        assert!(outbox.offer_to(presence("C.1"), one.clone()));
        assert!(outbox.offer(presence("C.2")));
        let first = rx.try_recv_routed().expect("queued");
        assert_eq!(first.to, one);
        let second = rx.try_recv_routed().expect("queued");
        assert_eq!(second.to, Destination::AllMinions);
        assert!(outbox.offer_to(presence("C.3"), one));
        assert!(
            matches!(rx.try_recv(), Some(Kind::Presence(p)) if p.client_id == "C.3"),
            "a minion takes the message alone"
        );
    }

    // Goal: the latest announcement wins and none is lost to a full queue.
    #[test]
    fn the_watched_announcement_keeps_the_latest() {
        let (outbox, rx) = outbox_with_capacity(1);
        assert!(outbox.offer(presence("C.1")));
        outbox.announce_watched(vec!["A".into()]);
        outbox.announce_watched(vec!["A".into(), "B".into()]);
        assert_eq!(rx.take_announced(), Some(vec!["A".into(), "B".into()]));
        assert_eq!(rx.take_announced(), None);
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
