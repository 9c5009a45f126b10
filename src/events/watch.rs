//! Live watchers of client monitoring events, on the master (`GET /api/v1/events/watch`,
//! served by `api/watch.rs`). Event batches reach them from this frontend's agent shards
//! (the hub is one of the shards' `EventTaps`) and from minions (the replication thread
//! hands over what arrived on a link). Each watcher has a bounded queue of its own; the
//! one that falls behind is cut off with a reason, so a slow reader never grows memory
//! or makes a shard wait. The set of watched artifacts is announced whenever it changes,
//! so minions forward only those.
//!
//! Owns: watchers, their queues and filters, the watched set. Must not: block or wait on
//! the thread that delivers (an agent shard or the replication thread), know HTTP, or
//! reach the replication link itself (the announcement is a callback the frontend wires).

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use super::ingested::{EventConsumer, IngestedBatch};
use crate::datastore::ArtifactName;
use crate::ids::ClientId;
use crate::limits::{
    MAX_WATCHERS_COUNT, MAX_WATCHER_QUEUED_BATCHES_COUNT, MAX_WATCHER_QUEUED_BYTES,
};
use crate::metrics::metrics;
use crate::runtime::published::Published;

/// Told the new watched set (sorted) each time it changes; must not block.
pub type Announce = Box<dyn Fn(&[ArtifactName]) + Send + Sync>;

/// The bounds of one hub (`limits.rs` has the defaults and why).
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    pub max_watchers: usize,
    pub max_queued_batches: usize,
    pub max_queued_bytes: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            max_watchers: MAX_WATCHERS_COUNT,
            max_queued_batches: MAX_WATCHER_QUEUED_BATCHES_COUNT,
            max_queued_bytes: MAX_WATCHER_QUEUED_BYTES,
        }
    }
}

/// Why a watcher's stream ends while its request still lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its queue was full: the connection reads slower than events arrive.
    FellBehind,
    /// The frontend is stopping.
    Shutdown,
}

impl EndReason {
    /// What the watcher is told, in its last line.
    pub fn message(self, limits: &WatchLimits) -> String {
        match self {
            Self::FellBehind => format!(
                "cut off: this watcher fell behind (more than {} event batches or {} bytes \
                 waiting to be sent); events after the last line were not sent, and are on \
                 the datastore; reconnect to watch again",
                limits.max_queued_batches, limits.max_queued_bytes
            ),
            Self::Shutdown => "the frontend is shutting down; reconnect to watch again".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{max} watchers are connected, the most this master serves; try again later")]
    TooManyWatchers { max: usize },
}

/// One batch for a watcher, with the frontend that ingested it (`host:port`).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub batch: Arc<IngestedBatch>,
    pub frontend: Arc<str>,
}

/// What a watcher's stream yields: batches, then at most one end.
#[derive(Debug)]
pub enum WatchNext {
    Batch(Delivery),
    End(EndReason),
}

/// The master's watchers. Cheap to clone (clones share them); usable from any thread.
#[derive(Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
}

struct Shared {
    /// This frontend's name, for batches its own shards ingested.
    frontend: Arc<str>,
    limits: WatchLimits,
    /// Read on every delivered batch; replaced when a watcher comes or goes.
    routes: Published<Routes>,
    announce: Option<Announce>,
    next_id: AtomicU64,
}

/// Invariant: `count` is the number of slots in `by_artifact`, and no list is empty.
#[derive(Default, Clone)]
struct Routes {
    by_artifact: HashMap<ArtifactName, Vec<Arc<Slot>>>,
    count: usize,
}

impl Routes {
    fn watched(&self) -> Vec<ArtifactName> {
        let set: BTreeSet<&ArtifactName> = self.by_artifact.keys().collect();
        set.into_iter().cloned().collect()
    }
}

/// One watcher's queue, shared by whoever delivers and the watcher's stream.
struct Slot {
    id: u64,
    client_id: Option<ClientId>,
    tx: crossbeam_channel::Sender<Delivery>,
    rx: crossbeam_channel::Receiver<Delivery>,
    /// Row bytes of the batches in the queue.
    queued_bytes: AtomicUsize,
    ended: OnceLock<EndReason>,
    waker: AtomicWaker,
}

impl Slot {
    /// Queues `delivery` if it is for this watcher; a full queue ends the watcher.
    fn offer(&self, delivery: &Delivery, limits: &WatchLimits) {
        if self.ended.get().is_some() {
            return;
        }
        if let Some(wanted) = &self.client_id {
            if *wanted != delivery.batch.client_id {
                return;
            }
        }
        let bytes = delivery.batch.jsonl.len();
        let before = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        // An empty queue takes any batch, so one larger than the byte bound still flows.
        let over = before > 0 && before + bytes > limits.max_queued_bytes;
        if over || self.tx.try_send(delivery.clone()).is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.end(EndReason::FellBehind);
            return;
        }
        self.waker.wake();
    }

    fn end(&self, reason: EndReason) {
        if self.ended.set(reason).is_ok() {
            if reason == EndReason::FellBehind {
                metrics()
                    .events_watch_cut_off
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.waker.wake();
        }
    }

    fn take(&self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok()?;
        self.queued_bytes
            .fetch_sub(delivery.batch.jsonl.len(), Ordering::Relaxed);
        Some(delivery)
    }
}

impl WatchHub {
    /// A hub with the default limits. `frontend` names this frontend in what it ingests;
    /// `announce` hears every change of the watched set (the master tells its minions).
    pub fn new(frontend: &str, announce: Option<Announce>) -> Self {
        Self::with_limits(frontend, WatchLimits::default(), announce)
    }

    pub fn with_limits(frontend: &str, limits: WatchLimits, announce: Option<Announce>) -> Self {
        Self {
            shared: Arc::new(Shared {
                frontend: Arc::from(frontend),
                limits,
                routes: Published::new(Routes::default()),
                announce,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn limits(&self) -> &WatchLimits {
        &self.shared.limits
    }

    /// A new watcher of `artifact` (and only `client_id`'s events, if given); it watches
    /// until dropped. Refused when `max_watchers` are connected.
    pub fn watch(
        &self,
        artifact: ArtifactName,
        client_id: Option<ClientId>,
    ) -> Result<Watcher, WatchError> {
        let limits = self.shared.limits;
        let (tx, rx) = crossbeam_channel::bounded(limits.max_queued_batches);
        let slot = Arc::new(Slot {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            client_id,
            tx,
            rx,
            queued_bytes: AtomicUsize::new(0),
            ended: OnceLock::new(),
            waker: AtomicWaker::new(),
        });
        self.shared.routes.update(|routes| {
            if routes.count >= limits.max_watchers {
                metrics()
                    .events_watch_refused
                    .fetch_add(1, Ordering::Relaxed);
                let max = limits.max_watchers;
                return (None, Err(WatchError::TooManyWatchers { max }));
            }
            let mut next = routes.clone();
            let is_new = !next.by_artifact.contains_key(&artifact);
            next.by_artifact
                .entry(artifact.clone())
                .or_default()
                .push(slot.clone());
            next.count += 1;
            if is_new {
                self.announce(&next);
            }
            (Some(next), Ok(()))
        })?;
        metrics().events_watchers.fetch_add(1, Ordering::Relaxed);
        Ok(Watcher {
            hub: self.clone(),
            slot,
            artifact,
            end_sent: false,
        })
    }

    /// Hands `batch`, ingested by `frontend`, to every watcher that wants it. Never
    /// waits: a watcher whose queue is full is cut off instead.
    pub fn deliver(&self, batch: &Arc<IngestedBatch>, frontend: &Arc<str>) {
        let routes = self.shared.routes.load();
        let Some(slots) = routes.by_artifact.get(&batch.artifact) else {
            return;
        };
        let delivery = Delivery {
            batch: batch.clone(),
            frontend: frontend.clone(),
        };
        for slot in slots {
            slot.offer(&delivery, &self.shared.limits);
        }
    }

    /// The artifacts watched now, sorted.
    pub fn watched(&self) -> Vec<ArtifactName> {
        self.shared.routes.load().watched()
    }

    /// Watchers connected now (including ones cut off whose request has not ended yet).
    pub fn watchers(&self) -> usize {
        self.shared.routes.load().count
    }

    /// Ends every watcher's stream with `reason` (each gets what was queued, then its
    /// end line).
    pub fn end_all(&self, reason: EndReason) {
        let routes = self.shared.routes.load();
        for slot in routes.by_artifact.values().flatten() {
            slot.end(reason);
        }
    }

    fn leave(&self, artifact: &ArtifactName, id: u64) {
        let left_now = self.shared.routes.update(|routes| {
            let Some(slots) = routes.by_artifact.get(artifact) else {
                return (None, false);
            };
            let mut next = routes.clone();
            let left: Vec<Arc<Slot>> = slots.iter().filter(|s| s.id != id).cloned().collect();
            if left.len() == slots.len() {
                return (None, false);
            }
            next.count -= 1;
            if left.is_empty() {
                next.by_artifact.remove(artifact);
                self.announce(&next);
            } else {
                next.by_artifact.insert(artifact.clone(), left);
            }
            (Some(next), true)
        });
        debug_assert!(left_now, "a watcher leaves once, and only a hub it joined");
        if left_now {
            metrics().events_watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Called with the routes lock held, so announcements are made in change order.
    fn announce(&self, routes: &Routes) {
        let watched = routes.watched();
        metrics()
            .events_watched_artifacts
            .store(watched.len() as i64, Ordering::Relaxed);
        if let Some(announce) = &self.shared.announce {
            announce(&watched);
        }
    }
}

/// The master's own shards hand their batches straight to the watchers.
impl EventConsumer for WatchHub {
    fn offer(&self, batch: &Arc<IngestedBatch>) {
        let frontend = self.shared.frontend.clone();
        self.deliver(batch, &frontend);
    }
}

/// One watcher: a stream of batches for it, then (if it is cut off or the frontend
/// stops) one end. Dropping it leaves the hub and frees its place.
pub struct Watcher {
    hub: WatchHub,
    slot: Arc<Slot>,
    artifact: ArtifactName,
    end_sent: bool,
}

impl Watcher {
    pub fn artifact(&self) -> &ArtifactName {
        &self.artifact
    }
}

impl futures::Stream for Watcher {
    type Item = WatchNext;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchNext>> {
        let this = self.get_mut();
        if this.end_sent {
            return Poll::Ready(None);
        }
        if let Some(delivery) = this.slot.take() {
            return Poll::Ready(Some(WatchNext::Batch(delivery)));
        }
        this.slot.waker.register(cx.waker());
        // A batch queued between the first look and the registration woke no one.
        if let Some(delivery) = this.slot.take() {
            return Poll::Ready(Some(WatchNext::Batch(delivery)));
        }
        // Ended: what was queued before the end has been taken above.
        if let Some(reason) = this.slot.ended.get() {
            this.end_sent = true;
            return Poll::Ready(Some(WatchNext::End(*reason)));
        }
        Poll::Pending
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.leave(&self.artifact, self.slot.id);
        // A shard that has not looked at the routes since still holds this slot in its
        // snapshot: leave it empty, not holding batches until that shard's next batch.
        let _ = self.slot.ended.set(EndReason::Shutdown);
        while self.slot.take().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};
    use std::sync::Mutex;

    fn artifact(name: &str) -> ArtifactName {
        ArtifactName::parse(name).unwrap()
    }

    fn client(n: u8) -> ClientId {
        ClientId::parse(&format!("C.{:016x}", n)).unwrap()
    }

    fn batch(client_id: ClientId, name: &str, seq: u64, rows: usize) -> Arc<IngestedBatch> {
        let jsonl: String = (0..rows).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        Arc::new(IngestedBatch {
            client_id,
            artifact: artifact(name),
            seq,
            time_ms: (0..rows as u64).map(|i| 1_000 + i).collect(),
            jsonl: jsonl.into(),
            labels: Arc::from(Vec::<String>::new()),
        })
    }

    /// What the watcher has ready now, without waiting.
    fn ready(watcher: &mut Watcher) -> Vec<WatchNext> {
        let mut out = Vec::new();
        while let Some(Some(next)) = watcher.next().now_or_never() {
            out.push(next);
        }
        out
    }

    fn seqs(items: &[WatchNext]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|n| match n {
                WatchNext::Batch(d) => Some(d.batch.seq),
                WatchNext::End(_) => None,
            })
            .collect()
    }

    // Goal: a watcher gets its artifact's batches only, and with a client id only that
    // client's; batches from a minion carry the minion's name. Method: two watchers,
    // batches of two clients and two artifacts, read without waiting.
    #[test]
    fn watchers_get_their_artifact_and_client_only() {
        let hub = WatchHub::new("master:1", None);
        let stats = "Generic.Client.Stats";
        let mut all = hub.watch(artifact(stats), None).unwrap();
        let mut one = hub.watch(artifact(stats), Some(client(1))).unwrap();
        hub.offer(&batch(client(1), stats, 10, 2));
        hub.offer(&batch(client(2), stats, 11, 1));
        hub.offer(&batch(client(1), "Linux.Events.ProcessStart", 12, 1));
        hub.deliver(&batch(client(1), stats, 13, 1), &Arc::from("minion:2"));
        let got_all = ready(&mut all);
        assert_eq!(seqs(&got_all), vec![10, 11, 13]);
        assert_eq!(seqs(&ready(&mut one)), vec![10, 13]);
        match &got_all[0] {
            WatchNext::Batch(d) => assert_eq!(&*d.frontend, "master:1"),
            other => panic!("{other:?}"),
        }
        match &got_all[2] {
            WatchNext::Batch(d) => assert_eq!(&*d.frontend, "minion:2"),
            other => panic!("{other:?}"),
        }
    }

    // Goal: a watcher that does not read is cut off once its queue is full: it gets what
    // was queued, then one end saying it fell behind, then nothing; the one that reads
    // keeps going; the cut-off is counted. Method: a queue of 2 batches, 3 offered.
    #[test]
    fn a_slow_watcher_is_cut_off_with_an_end() {
        let limits = WatchLimits {
            max_watchers: 4,
            max_queued_batches: 2,
            max_queued_bytes: 1 << 20,
        };
        let hub = WatchHub::with_limits("master:1", limits, None);
        let name = "Generic.Client.Stats";
        let mut slow = hub.watch(artifact(name), None).unwrap();
        let mut fast = hub.watch(artifact(name), None).unwrap();
        let cut_before = metrics().events_watch_cut_off.load(Ordering::Relaxed);
        for seq in 1..=3 {
            hub.offer(&batch(client(1), name, seq, 1));
            assert_eq!(seqs(&ready(&mut fast)), vec![seq]);
        }
        hub.offer(&batch(client(1), name, 4, 1));
        assert_eq!(seqs(&ready(&mut fast)), vec![4]);
        let got = ready(&mut slow);
        assert_eq!(seqs(&got), vec![1, 2], "what was queued before the cut-off");
        assert!(matches!(
            got.last(),
            Some(WatchNext::End(EndReason::FellBehind))
        ));
        assert_eq!(got.len(), 3);
        assert!(
            matches!(slow.next().now_or_never(), Some(None)),
            "the stream ends"
        );
        assert!(metrics().events_watch_cut_off.load(Ordering::Relaxed) > cut_before);
        assert!(EndReason::FellBehind
            .message(&limits)
            .contains("fell behind"));
    }

    // Goal: the byte bound cuts off too, but an empty queue takes any one batch.
    #[test]
    fn the_byte_bound_cuts_off_but_one_large_batch_passes() {
        let limits = WatchLimits {
            max_watchers: 4,
            max_queued_batches: 100,
            max_queued_bytes: 16,
        };
        let hub = WatchHub::with_limits("master:1", limits, None);
        let name = "Generic.Client.Stats";
        let mut w = hub.watch(artifact(name), None).unwrap();
        hub.offer(&batch(client(1), name, 1, 5));
        assert_eq!(seqs(&ready(&mut w)), vec![1]);
        hub.offer(&batch(client(1), name, 2, 5));
        hub.offer(&batch(client(1), name, 3, 5));
        let got = ready(&mut w);
        assert_eq!(seqs(&got), vec![2]);
        assert!(matches!(
            got.last(),
            Some(WatchNext::End(EndReason::FellBehind))
        ));
    }

    // Goal: the watcher cap holds, a watcher that leaves frees its place, and the
    // watched set is announced exactly when it changes. Method: a cap of 2.
    #[test]
    fn a_watcher_leaving_frees_its_slot_and_changes_are_announced() {
        let limits = WatchLimits {
            max_watchers: 2,
            ..WatchLimits::default()
        };
        let heard: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let record = heard.clone();
        let announce: Announce = Box::new(move |set| {
            let names = set.iter().map(|a| a.as_str().to_string()).collect();
            record.lock().unwrap().push(names);
        });
        let hub = WatchHub::with_limits("master:1", limits, Some(announce));
        let (stats, procs) = ("Generic.Client.Stats", "Linux.Events.ProcessStart");
        let first = hub.watch(artifact(stats), None).unwrap();
        let second = hub.watch(artifact(procs), None).unwrap();
        assert!(matches!(
            hub.watch(artifact(stats), None),
            Err(WatchError::TooManyWatchers { max: 2 })
        ));
        assert_eq!(hub.watchers(), 2);
        drop(first);
        assert_eq!(hub.watchers(), 1);
        let third = hub.watch(artifact(procs), None).unwrap();
        assert_eq!(hub.watched(), vec![artifact(procs)]);
        drop(second);
        drop(third);
        assert_eq!(hub.watchers(), 0);
        let heard = heard.lock().unwrap().clone();
        assert_eq!(
            heard,
            vec![
                vec![stats.to_string()],
                vec![stats.to_string(), procs.to_string()],
                vec![procs.to_string()],
                vec![],
            ]
        );
    }

    // Goal: at shutdown every watcher gets its end, after what was queued.
    #[test]
    fn end_all_ends_every_watcher() {
        let hub = WatchHub::new("master:1", None);
        let name = "Generic.Client.Stats";
        let mut w = hub.watch(artifact(name), None).unwrap();
        hub.offer(&batch(client(1), name, 1, 1));
        hub.end_all(EndReason::Shutdown);
        hub.offer(&batch(client(1), name, 2, 1));
        let got = ready(&mut w);
        assert_eq!(seqs(&got), vec![1]);
        assert!(matches!(
            got.last(),
            Some(WatchNext::End(EndReason::Shutdown))
        ));
    }
}
