//! The master's side of replication: a TLS listener whose peers must hold a certificate
//! signed by the deployment CA, and a tonic service that admits a link only when its
//! Hello names a configured minion whose configured certificate is the one presented.
//! Admitted links feed the hub; what one minion sends for everybody is re-broadcast to
//! the others, and what the master's own executors send goes to the minion it names
//! (notices about one agent, see `notify::fleet`) or to every minion. Monitoring
//! events go from the link straight to the live watchers (never through the hub's queue,
//! which presence needs), and each minion gets the watched set as soon as it links.
//!
//! A minion is trusted to report its own agents, nothing more (docs/security/fleet-trust.md).
//! Its name is the one its certificate was admitted under, never one a message carries.
//! Kinds only the master sends (cancels, label and table changes, the watched set, hunt
//! events, displaced-stream notices) are refused from a minion; a work notification is
//! relayed only for a flow queued for its client on the datastore, with its task frame
//! rebuilt from that flow's request.json (the frame the minion sent is dropped unread).
//! Flow states and facts are checked by presence on the hub (only for clients connected
//! to that minion). Every refusal is counted per minion
//! (`packhunt_fleet_minion_messages_refused_total`) and logged with the minion's name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::envelope::Kind;
use super::pb::replication_server::{Replication, ReplicationServer};
use super::pb::{self, Envelope};
use super::queue::{Destination, HubMessage, Inbox, OutboxReceiver, Routed};
use super::{envelope, ReplicationError};
use crate::config::url::HostPort;
use crate::config::{Minion, ServerConfig};
use crate::datastore::Datastore;
use crate::events::WatchHub;
use crate::ids::{ClientId, FlowId};
use crate::limits::{
    REPLICATION_HELLO_TIMEOUT, REPLICATION_KEEPALIVE_INTERVAL, REPLICATION_KEEPALIVE_TIMEOUT,
    REPLICATION_LINK_QUEUE_COUNT,
};
use crate::metrics::{metrics, BroadcastReason, Fanout, MinionRefusal, ReplicationQueue, SentKind};

/// Who is at the other end of a link, as TLS established it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// DER of the peer's leaf certificate (verified against the CA in the handshake).
    pub leaf: Option<Arc<[u8]>>,
    pub remote: Option<SocketAddr>,
}

/// A handshaken link connection, as tonic sees it.
pub type LinkIo = crate::tls::connected::TlsConnected<PeerInfo>;

/// One linked minion: where its outgoing messages go.
struct Peer {
    id: u64,
    tx: tokio::sync::mpsc::Sender<Result<Envelope, Status>>,
}

struct MasterState {
    name: String,
    config_path: PathBuf,
    /// Minions as the config listed them when last read; re-read when an unknown name
    /// links, so a minion added while the master runs can join.
    known: Mutex<Vec<Minion>>,
    peers: Mutex<HashMap<Arc<str>, Peer>>,
    inbox: Inbox,
    next_id: AtomicU64,
    /// The watched set last announced: what a minion that links now must hear first.
    watched: Mutex<Vec<String>>,
    watch: WatchHub,
    /// Where relayed task frames are rebuilt from (the shared datastore).
    datastore: Datastore,
}

/// The master's ends of what its link thread connects.
pub struct Link {
    /// What the master's executors send to minions.
    pub outbox: OutboxReceiver,
    /// What minions send for the hub.
    pub inbox: Inbox,
    /// Where monitoring events from minions go.
    pub watch: WatchHub,
}

#[derive(Clone)]
struct Service {
    state: Arc<MasterState>,
}

/// Binds the replication port: done before the frontend reports ready, so a port in use
/// is a start-up error.
pub fn bind(config: &ServerConfig) -> Result<std::net::TcpListener, ReplicationError> {
    let address = config.frontend.replication_address();
    let listener =
        std::net::TcpListener::bind(address).map_err(|source| ReplicationError::Bind {
            address: address.to_string(),
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ReplicationError::Bind {
            address: address.to_string(),
            source,
        })?;
    Ok(listener)
}

/// Serves minion links until `shutdown` resolves.
pub async fn run(
    config: Arc<ServerConfig>,
    config_path: PathBuf,
    listener: std::net::TcpListener,
    link: Link,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicationError> {
    let Link {
        outbox,
        inbox,
        watch,
    } = link;
    let tls = crate::tls::replication::link_server_config(
        &config.tls.ca_certificate,
        config
            .frontend
            .master_tls()
            .map_err(|e| ReplicationError::Config(e.to_string()))?,
    )?;
    let listener = TcpListener::from_std(listener).map_err(|source| ReplicationError::Bind {
        address: "replication port".into(),
        source,
    })?;
    let datastore = Datastore::open(
        config.datastore.location.clone(),
        config.datastore.fsync_documents,
    )
    .map_err(|e| ReplicationError::Config(format!("datastore: {e}")))?;
    let state = Arc::new(MasterState {
        name: config.frontend.master.to_string(),
        config_path,
        known: Mutex::new(config.minions.clone()),
        peers: Mutex::new(HashMap::new()),
        inbox,
        next_id: AtomicU64::new(1),
        watched: Mutex::new(Vec::new()),
        watch,
        datastore,
    });
    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel::<Result<LinkIo, std::io::Error>>(64);
    let acceptor = tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        conn_tx,
    ));
    let pump = tokio::spawn(broadcast_local(state.clone(), outbox));
    // A graceful stop waits for every open call to end, and a minion's link lives until
    // its sender is dropped here: end the links first, or the stop never returns.
    let shutdown = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.peers.lock().expect("peers lock").clear();
        }
    };
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(REPLICATION_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(REPLICATION_KEEPALIVE_TIMEOUT))
        .serve_with_incoming_shutdown(
            ReplicationServer::new(Service {
                state: state.clone(),
            }),
            ReceiverStream::new(conn_rx),
            shutdown,
        )
        .await;
    acceptor.abort();
    pump.abort();
    // Ends every minion's stream: they relink to the next master.
    state.peers.lock().expect("peers lock").clear();
    result.map_err(|e| ReplicationError::Config(format!("replication service: {e}")))
}

/// Accepts TCP connections and runs their TLS handshakes; refusals are counted, since
/// a minion with a wrong certificate shows up nowhere else.
async fn accept_loop(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    conns: tokio::sync::mpsc::Sender<Result<LinkIo, std::io::Error>>,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("replication accept failed: {e}");
                tokio::time::sleep(crate::limits::ACCEPT_BACKOFF_ON_EMFILE).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (tls, conns) = (tls.clone(), conns.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(REPLICATION_HELLO_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::from(c.as_ref()));
                    let _ = conns
                        .send(Ok(LinkIo::new(
                            stream,
                            PeerInfo {
                                leaf,
                                remote: Some(remote),
                            },
                            (),
                        )))
                        .await;
                }
                Ok(Err(e)) => {
                    metrics()
                        .replication_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, "replication link refused in the TLS handshake: {e}");
                }
                Err(_) => {
                    metrics()
                        .replication_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, "replication link refused: no TLS handshake within {REPLICATION_HELLO_TIMEOUT:?}");
                }
            }
        });
    }
}

/// Sends what the master's executors queued (notifications, cancels, table changes) to
/// the minion each names, or to every minion. A displaced-stream notice goes to the
/// minion it names (only that one acts on it).
async fn broadcast_local(state: Arc<MasterState>, outbox: OutboxReceiver) {
    loop {
        outbox.ready().await;
        // The master sends no presence to minions: nothing to resnapshot.
        outbox.take_presence_lost();
        if let Some(artifacts) = outbox.take_announced() {
            // Kept first, so a minion linking from now on hears this set (this runtime has
            // one thread: no link is admitted between the two steps).
            *state.watched.lock().expect("watched lock") = artifacts.clone();
            state.send_to_all(None, Kind::Watched(pb::WatchedArtifacts { artifacts }));
        }
        while let Some(Routed { kind, to }) = outbox.try_recv_routed() {
            let to = match (to, &kind) {
                (Destination::AllMinions, Kind::Displaced(notice)) => {
                    Destination::Minion(Arc::from(notice.frontend.as_str()))
                }
                (to, _) => to,
            };
            match to {
                Destination::Minion(name) => state.send_to_one(&name, kind),
                Destination::AllMinions => state.send_to_all(None, kind),
            }
        }
    }
}

impl MasterState {
    /// Queues `kind` on every linked minion except `except`. A minion whose queue is
    /// full loses the message (counted): it is a notification, whose task waits on disk.
    fn send_to_all(&self, except: Option<&str>, kind: Kind) {
        let peers = self.peers.lock().expect("peers lock");
        let mut copies = 0;
        for (name, peer) in peers.iter() {
            if Some(&**name) == except {
                continue;
            }
            copies += u64::from(queue_on(peer, &kind));
        }
        metrics().replication_message_sent(sent_kind(&kind), Fanout::All, copies);
    }

    /// Queues `kind` on the link of minion `name`; on every linked minion if that one is
    /// not linked (presence may name a minion whose link just went: the others are
    /// told rather than nobody, and it rescans its agents' queues when it relinks).
    fn send_to_one(&self, name: &Arc<str>, kind: Kind) {
        let peers = self.peers.lock().expect("peers lock");
        let Some(peer) = peers.get(name) else {
            drop(peers);
            metrics().fleet_notice_broadcast(BroadcastReason::MinionUnlinked);
            return self.send_to_all(None, kind);
        };
        let sent = queue_on(peer, &kind);
        metrics().replication_message_sent(sent_kind(&kind), Fanout::One, u64::from(sent));
    }

    /// The configured minion `name`, re-reading the config once if it is not known yet.
    fn minion(&self, name: &str) -> Option<Minion> {
        // A name that is not HOST:PORT cannot be configured; no need to re-read for it.
        let name = HostPort::parse(name).ok()?;
        let find = |known: &[Minion]| known.iter().find(|m| m.name == name).cloned();
        if let Some(found) = find(&self.known.lock().expect("known lock")) {
            return Some(found);
        }
        match ServerConfig::load(&self.config_path) {
            Ok(config) => {
                let found = find(&config.minions);
                *self.known.lock().expect("known lock") = config.minions;
                found
            }
            Err(e) => {
                tracing::warn!(
                    "cannot re-read {} for a new minion: {e}",
                    self.config_path.display()
                );
                None
            }
        }
    }

    /// Checks a link's Hello against the config and the certificate TLS verified.
    fn admit(&self, hello: &pb::Hello, peer: Option<&PeerInfo>) -> Result<(), Status> {
        let refuse = |status: Status| {
            metrics()
                .replication_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(frontend = %hello.frontend, remote = ?peer.and_then(|p| p.remote), "replication link refused: {}", status.message());
            Err(status)
        };
        let Some(leaf) = peer.and_then(|p| p.leaf.clone()) else {
            return refuse(Status::unauthenticated("no client certificate"));
        };
        let Some(minion) = self.minion(&hello.frontend) else {
            return refuse(Status::permission_denied(format!(
                "`{}` is not a minion in the master's config",
                hello.frontend
            )));
        };
        if minion.tls.chain.first().map(|c| c.as_ref()) != Some(&*leaf) {
            return refuse(Status::permission_denied(format!(
                "the certificate presented is not the one configured for `{}`",
                hello.frontend
            )));
        }
        Ok(())
    }

    /// Hands a minion's message to the hub; a notification is checked against the
    /// datastore first (on the blocking pool) and then also re-broadcast.
    fn route(self: &Arc<Self>, from: &Arc<str>, kind: Kind) {
        metrics()
            .replication_received
            .fetch_add(1, Ordering::Relaxed);
        let kind = match kind {
            Kind::Monitoring(event) => return self.deliver_monitoring(from, event),
            Kind::Notification(n) => {
                let (state, from) = (self.clone(), from.clone());
                tokio::spawn(async move { state.relay_notification(&from, n).await });
                return;
            }
            Kind::Watched(_)
            | Kind::CancelFlows(_)
            | Kind::LabelsChanged(_)
            | Kind::EventTableChanged(_)
            | Kind::Hunt(_)
            | Kind::Displaced(_) => {
                let what = kind_name(&kind);
                return refuse(from, MinionRefusal::MasterOnly, format_args!("{what}"));
            }
            kind => kind,
        };
        self.inbox.deliver(HubMessage::Remote {
            from: from.clone(),
            kind,
        });
    }

    /// A minion's work notification: relayed (to this frontend's shards and the other
    /// minions) only if its flow is queued for its client, with the task frame built here
    /// from request.json. Minions never need to send one (the API and hunts run on the
    /// master), so one that names no queued flow is refused.
    async fn relay_notification(&self, from: &Arc<str>, n: pb::Notification) {
        let (Ok(client_id), Ok(flow_id)) =
            (ClientId::parse(&n.client_id), FlowId::parse(&n.flow_id))
        else {
            return super::drop_malformed(from, format_args!("notification with malformed ids"));
        };
        let datastore = self.datastore.clone();
        let (client, flow) = (client_id.clone(), flow_id.clone());
        let rebuilt =
            tokio::task::spawn_blocking(move || queued_task_frame(&datastore, &client, &flow))
                .await;
        let frame = match rebuilt {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => {
                return refuse(
                    from,
                    MinionRefusal::Notification,
                    format_args!("notification for {client_id}/{flow_id}, which is not queued"),
                )
            }
            Ok(Err(e)) => {
                return refuse(
                    from,
                    MinionRefusal::Notification,
                    format_args!("notification for {client_id}/{flow_id}: {e}"),
                )
            }
            Err(e) => return tracing::warn!("rebuilding a relayed task frame: {e}"),
        };
        let kind = Kind::Notification(pb::Notification {
            client_id: n.client_id,
            flow_id: n.flow_id,
            frame,
        });
        self.send_to_all(Some(from), kind.clone());
        self.inbox.deliver(HubMessage::Remote {
            from: from.clone(),
            kind,
        });
    }
}

/// The task frame of `flow_id` built from its request.json, if the flow is queued for
/// `client_id` (blocking: run it on the blocking pool).
fn queued_task_frame(
    datastore: &Datastore,
    client_id: &ClientId,
    flow_id: &FlowId,
) -> Result<Option<bytes::Bytes>, crate::datastore::DatastoreError> {
    let client = datastore.client(client_id);
    if !crate::datastore::flow::pending_tasks(&client)?.contains(flow_id) {
        return Ok(None);
    }
    let request = crate::datastore::flow::queued_request(&client, flow_id)?;
    Ok(Some(crate::protocol::tasks::task_frame(
        request.into_task(),
    )))
}

/// Queues a copy of `kind` on `peer`'s link; false (counted when full) if it did not fit.
fn queue_on(peer: &Peer, kind: &Kind) -> bool {
    match peer.tx.try_send(Ok(envelope(kind.clone()))) {
        Ok(()) => {
            metrics().replication_sent.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            metrics().replication_dropped(ReplicationQueue::Link);
            false
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A message's kind, as `packhunt_replication_messages_sent_total` labels it.
fn sent_kind(kind: &Kind) -> SentKind {
    match kind {
        Kind::Hello(_) => SentKind::Hello,
        Kind::Watched(_) => SentKind::Watched,
        Kind::Notification(_) => SentKind::Notification,
        Kind::CancelFlows(_) => SentKind::CancelFlows,
        Kind::LabelsChanged(_) => SentKind::LabelsChanged,
        Kind::EventTableChanged(_) => SentKind::EventTableChanged,
        Kind::Displaced(_) => SentKind::Displaced,
        Kind::Presence(_)
        | Kind::Snapshot(_)
        | Kind::FlowState(_)
        | Kind::Hunt(_)
        | Kind::Monitoring(_)
        | Kind::ClientFacts(_) => SentKind::Other,
    }
}

/// Counts and logs a minion's message the master refuses.
fn refuse(from: &str, why: MinionRefusal, what: std::fmt::Arguments<'_>) {
    metrics().minion_refused(from, why);
    tracing::warn!(
        minion = from,
        kind = why.as_str(),
        "refused from a minion: {what}"
    );
}

/// A kind's name, for logs.
fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Watched(_) => "a watched set (only the master watches)",
        Kind::CancelFlows(_) => "a cancel (only the master cancels flows)",
        Kind::LabelsChanged(_) => "a labels change (only the master's API sets labels)",
        Kind::EventTableChanged(_) => "an event table change (only the master's API sets it)",
        Kind::Hunt(_) => "a hunt event (only the master runs hunts)",
        Kind::Displaced(_) => "a displaced-stream notice (only the master sees the fleet)",
        _ => "a message",
    }
}

impl MasterState {
    /// A minion's monitoring event, checked, to the watchers (none may be left by now:
    /// then it is dropped there).
    fn deliver_monitoring(&self, from: &Arc<str>, event: pb::MonitoringEvent) {
        match super::forward::received_batch(event) {
            Ok(batch) => {
                metrics()
                    .events_watch_received
                    .fetch_add(1, Ordering::Relaxed);
                self.watch.deliver(&Arc::new(batch), from);
            }
            Err(e) => super::drop_malformed(from, format_args!("monitoring event: {e}")),
        }
    }

    /// The watched set, as the first thing a newly linked minion hears after Hello.
    fn watched_now(&self) -> Kind {
        let artifacts = self.watched.lock().expect("watched lock").clone();
        Kind::Watched(pb::WatchedArtifacts { artifacts })
    }
}

#[tonic::async_trait]
impl Replication for Service {
    type LinkStream = ReceiverStream<Result<Envelope, Status>>;

    async fn link(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let mut incoming = request.into_inner();
        let first = tokio::time::timeout(REPLICATION_HELLO_TIMEOUT, incoming.message()).await;
        let hello = match first {
            Ok(Ok(Some(Envelope {
                kind: Some(Kind::Hello(hello)),
            }))) => hello,
            _ => {
                metrics()
                    .replication_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Status::invalid_argument("a link must start with Hello"));
            }
        };
        let state = &self.state;
        state.admit(&hello, peer.as_ref())?;
        let name: Arc<str> = Arc::from(hello.frontend.as_str());
        let (tx, rx) = tokio::sync::mpsc::channel(REPLICATION_LINK_QUEUE_COUNT);
        let reply = pb::Hello {
            frontend: state.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let _ = tx.try_send(Ok(envelope(Kind::Hello(reply))));
        // A new link: whatever the minion knew of the watched set is stale.
        let _ = tx.try_send(Ok(envelope(state.watched_now())));
        metrics().replication_message_sent(SentKind::Hello, Fanout::One, 1);
        metrics().replication_message_sent(SentKind::Watched, Fanout::One, 1);
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        // A minion that relinks before its old link is seen dead replaces it.
        let replaced = state
            .peers
            .lock()
            .expect("peers lock")
            .insert(name.clone(), Peer { id, tx })
            .is_some();
        if !replaced {
            metrics()
                .replication_links_up
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(frontend = %name, "minion linked");
        state.inbox.deliver(HubMessage::LinkUp {
            frontend: name.clone(),
        });
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(Envelope { kind: Some(kind) })) => state.route(&name, kind),
                    Ok(Some(Envelope { kind: None })) => {}
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(frontend = %name, "minion link broke: {}", status.message());
                        break;
                    }
                }
            }
            let mut peers = state.peers.lock().expect("peers lock");
            if peers.get(&name).map(|p| p.id) == Some(id) {
                peers.remove(&name);
                drop(peers);
                metrics()
                    .replication_links_up
                    .fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(frontend = %name, "minion unlinked");
                state.inbox.deliver(HubMessage::LinkDown { frontend: name });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
