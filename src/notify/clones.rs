//! Streams displaced by a newer one of the same client id elsewhere, on their way to
//! whoever holds them. Presence reports them (it alone sees where each client is); the
//! hub's dispatcher hands each to the shard that holds the older stream (this frontend)
//! or, on the master, names the minion that holds it in a `Displaced` envelope that the
//! master's link sends to that minion (every minion if it is not linked; only the named
//! one acts on it). The holder checks the older stream's
//! connection and either tells that agent to re-key (both alive: a clone) or ends the
//! dead stream (`sessions::clones`).
//!
//! The queue between presence and the dispatcher is bounded (`DISPLACED_QUEUE_COUNT`);
//! when full a notice is dropped and counted (`packhunt_fleet_displaced_dropped_total`).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures::channel::mpsc;
use futures::StreamExt;

use crate::ids::ClientId;
use crate::limits::DISPLACED_QUEUE_COUNT;
use crate::metrics::metrics;
use crate::notify::mesh::Notifier;
use crate::replication::pb;
use crate::replication::queue::Outbox;

/// A client's older task stream, where it is.
#[derive(Debug, Clone)]
pub struct Displaced {
    pub client_id: ClientId,
    /// The frontend that holds it.
    pub frontend: Rc<str>,
    /// Whether that frontend is this one.
    pub local: bool,
    pub shard: u32,
    pub session: u64,
}

pub type DisplacedSender = mpsc::Sender<Displaced>;
pub type DisplacedReceiver = mpsc::Receiver<Displaced>;

/// The bounded queue between presence and the dispatcher.
pub fn channel() -> (DisplacedSender, DisplacedReceiver) {
    // futures' channel holds `buffer + senders` messages: one sender, so one less.
    mpsc::channel(DISPLACED_QUEUE_COUNT.saturating_sub(1))
}

/// Hands every displaced stream to its holder until presence goes away: this frontend's
/// shards through `notifier`, another frontend (master only) through `replication`.
pub async fn dispatch(
    mut displaced: DisplacedReceiver,
    notifier: Rc<Notifier>,
    replication: Option<Outbox>,
) {
    while let Some(notice) = displaced.next().await {
        let sent = if notice.local {
            notifier
                .displaced(&notice.client_id, notice.shard as usize, notice.session)
                .await
        } else {
            replication
                .as_ref()
                .is_some_and(|outbox| outbox.offer(pb::envelope::Kind::Displaced(to_wire(&notice))))
        };
        let counter = if sent {
            &metrics().fleet_displaced_sent
        } else {
            &metrics().fleet_displaced_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The envelope that names `notice`'s frontend as the one to act.
pub fn to_wire(notice: &Displaced) -> pb::Displaced {
    pb::Displaced {
        frontend: notice.frontend.to_string(),
        client_id: notice.client_id.to_string(),
        shard: notice.shard,
        session: notice.session,
    }
}
