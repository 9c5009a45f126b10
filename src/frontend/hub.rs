//! The hub: the executor that sees the whole frontend. It follows every agent shard's
//! presence, owns the notifier to the shards, and is the glommio end of the replication
//! stream: it applies what other frontends send (presence on the master, work
//! notifications on minions) and answers the link's requests for presence snapshots. On a
//! minion it also reloads the client event table from the datastore when the master says
//! it changed, and on every new link.
//! On the master it also serves the GUI/API; it runs on the priority executor.

use std::rc::Rc;
use std::sync::Arc;

use futures::StreamExt;

use crate::config::FrontendRole;
use crate::datastore::Datastore;
use crate::events::TableStore;
use crate::ids::{ClientId, FlowId};
use crate::limits::PRESENCE_SNAPSHOT_CLIENTS_COUNT;
use crate::notify::mesh::Notifier;
use crate::notify::presence::Presence;
use crate::replication::drop_malformed;
use crate::replication::pb::{self, envelope::Kind};
use crate::replication::queue::{HubMessage, InboxReceiver, Outbox};

/// Applies what the replication thread delivers until it stops.
pub async fn follow_replication(
    presence: Rc<Presence>,
    notifier: Rc<Notifier>,
    outbox: Outbox,
    mut inbox: InboxReceiver,
    role: FrontendRole,
    datastore: Datastore,
) {
    while let Some(message) = inbox.next().await {
        match message {
            HubMessage::Remote {
                kind: Kind::EventTableChanged(_),
                ..
            } if role == FrontendRole::Minion => {
                // Its own task: the reload waits on the blocking pool.
                let reload = reload_event_table(datastore.clone(), notifier.clone());
                glommio::spawn_local(reload).detach();
            }
            HubMessage::Remote { from, kind } => {
                apply_remote(&presence, &notifier, &from, kind).await
            }
            HubMessage::LinkUp { frontend } => {
                presence.set_link(&frontend, true);
                // On a minion, a new link to the master means notifications (and event
                // table changes) sent while it was down, or into a link not yet seen dead,
                // never arrived.
                if role == FrontendRole::Minion {
                    notifier.rescan().await;
                    let reload = reload_event_table(datastore.clone(), notifier.clone());
                    glommio::spawn_local(reload).detach();
                }
            }
            HubMessage::LinkDown { frontend } => presence.set_link(&frontend, false),
            HubMessage::SnapshotWanted => send_snapshot(&presence, &outbox),
        }
    }
}

async fn apply_remote(presence: &Presence, notifier: &Notifier, from: &str, kind: Kind) {
    match kind {
        Kind::Presence(event) => presence.apply_remote(from, &event),
        Kind::Snapshot(snapshot) => presence.apply_snapshot(from, &snapshot),
        Kind::Notification(n) => match (ClientId::parse(&n.client_id), FlowId::parse(&n.flow_id)) {
            (Ok(client_id), Ok(flow_id)) => {
                // An empty frame: the shard builds it from request.json on the datastore.
                let frame = (!n.frame.is_empty()).then_some(n.frame);
                notifier.notify(&client_id, &flow_id, frame).await;
            }
            _ => drop_malformed(from, format_args!("notification with malformed ids")),
        },
        Kind::FlowState(event) => presence.apply_remote_flow(from, &event),
        // The master names the frontend that holds the older stream; only that one acts.
        Kind::Displaced(notice) if *notice.frontend == *presence.this_name() => {
            match ClientId::parse(&notice.client_id) {
                Ok(client_id) => {
                    let shard = notice.shard as usize;
                    if !notifier.displaced(&client_id, shard, notice.session).await {
                        crate::metrics::metrics()
                            .fleet_displaced_dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(_) => drop_malformed(from, format_args!("displaced with a malformed id")),
            }
        }
        Kind::Displaced(_) => {}
        Kind::ClientFacts(facts) => presence.apply_remote_facts(from, facts),
        // Only the master sends these (its link refuses one from a minion).
        Kind::CancelFlows(envelope) => {
            let cancelled = crate::notify::fleet::cancelled_from_wire(from, envelope);
            notifier.cancel(Arc::new(cancelled)).await
        }
        Kind::LabelsChanged(changed) => match ClientId::parse(&changed.client_id) {
            Ok(client_id) => {
                notifier
                    .labels_changed(&client_id, changed.labels.into())
                    .await
            }
            Err(_) => drop_malformed(from, format_args!("labels change with a malformed id")),
        },
        // Room for hunts: carried, not yet produced. An event table change only means
        // something to a minion (handled above). Live watch never comes this way: the
        // link thread applies the watched set (minion) and hands monitoring events to the
        // watchers (master) itself, so events never queue ahead of presence here.
        Kind::Hunt(_) | Kind::Monitoring(_) | Kind::EventTableChanged(_) | Kind::Watched(_) => {}
        Kind::Hello(_) => {}
    }
}

/// A minion's copy of the client event table: read from the shared datastore (where the
/// master wrote it before telling anyone) and handed to this frontend's shards. A table
/// that cannot be read leaves the shards with the one they hold (logged): the master's
/// own load of the same file fails the same way and says so in its API.
pub async fn reload_event_table(datastore: Datastore, notifier: Rc<Notifier>) {
    match TableStore::load(datastore).await {
        Ok(store) => {
            notifier
                .event_table(Arc::new(store.current().to_wire()))
                .await
        }
        Err(e) => tracing::error!("cannot load the client event table: {e}"),
    }
}

/// Queues this frontend's agents as snapshot chunks (one empty chunk when there are none,
/// so the master still forgets what it knew). If the queue is full the snapshot is cut
/// short; the dropped chunk flags presence as lost and a new snapshot follows.
fn send_snapshot(presence: &Presence, outbox: &Outbox) {
    let entries = presence.local_entries();
    let chunks: Vec<&[pb::Presence]> = if entries.is_empty() {
        vec![&[]]
    } else {
        entries.chunks(PRESENCE_SNAPSHOT_CLIENTS_COUNT).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let snapshot = pb::PresenceSnapshot {
            entries: chunk.to_vec(),
            first: i == 0,
            last: i == last,
        };
        if !outbox.offer(Kind::Snapshot(snapshot)) {
            return;
        }
    }
}
