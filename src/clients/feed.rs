//! What feeds the client index, all on the master's priority executor:
//! - at start, every client folder of the datastore, read in batches on the blocking
//!   pool (never on the executor thread), with progress in the log; the API answers
//!   from what is loaded meanwhile and says `complete: false`;
//! - agents' facts as their frontend records them: this frontend's shards send each
//!   ClientInfo they recorded over the presence queues, minions send theirs over the
//!   replication stream (`ClientFacts`); both reach the index through presence's
//!   [`Observer`], so the agent path only queues a message, as it does for presence;
//! - a minion's presence snapshot (sent on every new link and after any lost presence or
//!   facts message): the clients it lists are read again from the datastore, which heals
//!   facts lost on the link;
//! - departures (last seen = now) from presence, and label changes from the API
//!   (`ClientIndex::set_labels`, called by the labels route itself).

use std::rc::Rc;
use std::time::Instant;

use futures::StreamExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use super::index::{ClientIndex, DiskRead};
use crate::datastore::{self, ClientInfoDoc, Datastore};
use crate::ids::ClientId;
use crate::limits::{
    CLIENT_INDEX_LIST_ATTEMPTS_COUNT, CLIENT_INDEX_LIST_RETRY, CLIENT_INDEX_PROGRESS_INTERVAL,
    CLIENT_INDEX_READS_IN_FLIGHT_COUNT, CLIENT_INDEX_READ_BATCH_COUNT,
    CLIENT_INDEX_RESYNC_QUEUE_COUNT,
};
use crate::metrics::{metrics, ClientIndexRefresh};
use crate::notify::presence::{FactsFrom, Observer, Presence};
use crate::runtime::offload::offload;

/// Builds the master's index over `presence`, subscribes it to presence, and starts
/// loading it from `datastore` and re-reading what snapshots list, on this executor.
pub fn start(presence: Rc<Presence>, datastore: Datastore) -> Rc<ClientIndex> {
    let index = Rc::new(ClientIndex::new(presence.clone()));
    let (resync, resyncs) = local_channel::new_bounded(CLIENT_INDEX_RESYNC_QUEUE_COUNT);
    presence.observe(Rc::new(Feed {
        index: index.clone(),
        resync,
    }));
    glommio::spawn_local(load(index.clone(), datastore.clone())).detach();
    glommio::spawn_local(follow_resyncs(index.clone(), datastore, resyncs)).detach();
    index
}

/// Presence's observer on the index's behalf.
struct Feed {
    index: Rc<ClientIndex>,
    resync: LocalSender<Vec<ClientId>>,
}

impl Observer for Feed {
    fn facts(&self, doc: ClientInfoDoc, from: FactsFrom) {
        let source = match from {
            FactsFrom::ThisFrontend => ClientIndexRefresh::AgentFacts,
            FactsFrom::OtherFrontend => ClientIndexRefresh::MinionFacts,
        };
        self.index.agent_facts(&doc, source);
    }

    fn left(&self, clients: &[ClientId]) {
        self.index.left(clients, crate::clock::now_ms());
    }

    fn resync(&self, clients: Vec<ClientId>) {
        // When full, the chunk is dropped: another snapshot comes with the next loss.
        if self.resync.try_send(clients).is_err() {
            metrics()
                .client_index_resyncs_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Reads every client folder into the index, a batch per blocking-pool trip.
async fn load(index: Rc<ClientIndex>, datastore: Datastore) {
    let started = Instant::now();
    let Some(ids) = list_clients(&datastore).await else {
        return;
    };
    let total = ids.len();
    tracing::info!("client index: reading {total} clients from the datastore");
    let mut logged = Instant::now();
    // A few batches in flight: a cold disk (or NFS) serves parallel reads much faster.
    let mut batches = futures::stream::iter(ids.chunks(CLIENT_INDEX_READ_BATCH_COUNT))
        .map(|batch| read(datastore.clone(), batch.to_vec()))
        .buffered(CLIENT_INDEX_READS_IN_FLIGHT_COUNT);
    let mut done = 0;
    while let Some(reads) = batches.next().await {
        done += reads.len();
        index.disk_reads(reads, ClientIndexRefresh::Load);
        if logged.elapsed() >= CLIENT_INDEX_PROGRESS_INTERVAL {
            tracing::info!("client index: {done} of {total} clients read");
            logged = Instant::now();
        }
    }
    index.set_complete(started.elapsed());
    tracing::info!(
        "client index: {} clients listed ({total} folders) in {} ms",
        index.len(),
        started.elapsed().as_millis()
    );
}

/// `clients/`, listed on the blocking pool; retried while the datastore cannot be listed
/// (a mount late at boot). `None` after the last attempt: the index then holds only what
/// agents and the API tell it, and keeps saying `complete: false`.
async fn list_clients(datastore: &Datastore) -> Option<Vec<ClientId>> {
    for attempt in 1..=CLIENT_INDEX_LIST_ATTEMPTS_COUNT {
        let ds = datastore.clone();
        match offload(move || datastore::list_clients(&ds)).await {
            Ok(ids) => return Some(ids),
            Err(e) if attempt < CLIENT_INDEX_LIST_ATTEMPTS_COUNT => {
                tracing::warn!(
                    "client index: cannot list clients (attempt {attempt}), retrying: {e}"
                );
                glommio::timer::sleep(CLIENT_INDEX_LIST_RETRY).await;
            }
            Err(e) => {
                tracing::error!(
                    "client index: cannot list clients, giving up; the client list shows \
                     only agents seen since start: {e}"
                );
            }
        }
    }
    None
}

/// Re-reads the clients each snapshot chunk lists, in read batches.
async fn follow_resyncs(
    index: Rc<ClientIndex>,
    datastore: Datastore,
    resyncs: LocalReceiver<Vec<ClientId>>,
) {
    while let Some(clients) = resyncs.recv().await {
        for batch in clients.chunks(CLIENT_INDEX_READ_BATCH_COUNT) {
            let reads = read(datastore.clone(), batch.to_vec()).await;
            index.disk_reads(reads, ClientIndexRefresh::Resync);
        }
    }
}

/// Reads the `info.json` (with `labels.json`) of `ids` on the blocking pool.
pub async fn read(datastore: Datastore, ids: Vec<ClientId>) -> Vec<DiskRead> {
    offload(move || {
        ids.into_iter()
            .map(
                |id| match datastore::read_client_info(&datastore.client(&id)) {
                    Ok(doc) => DiskRead::Found(doc),
                    Err(e) if e.is_not_found() => DiskRead::Missing(id),
                    Err(e) => {
                        tracing::warn!("client index: {id}: {e}");
                        DiskRead::Unreadable(id)
                    }
                },
            )
            .collect()
    })
    .await
}
