//! A minion's side of replication: keeps one link to the master up for as long as the
//! process runs. Agents never wait for it: a minion without a master keeps serving its
//! agents and writing their results; it relinks with backoff (with jitter, so minions
//! that lost a restarting master do not return in one wave) and, on every new link, asks
//! its hub for a full presence snapshot so the master's client list heals. The master's
//! watched set arrives right after its Hello and whenever it changes; it is applied here,
//! on the link thread, to the lane the shards forward monitoring events through, and
//! cleared when the link ends (a new master says again what it watches).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use hyper_util::rt::TokioIo;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use super::pb::envelope::Kind;
use super::pb::replication_client::ReplicationClient;
use super::pb::{self, Envelope};
use super::queue::{ForwardBytes, HubMessage, Inbox, OutboxReceiver};
use super::{envelope, ReplicationError};
use crate::config::{FrontendIdentity, ServerConfig};
use crate::limits::{
    jittered_backoff, FORWARD_LINK_QUEUE_RESERVED_COUNT, REPLICATION_BACKOFF_MAX,
    REPLICATION_BACKOFF_MIN, REPLICATION_HEALTHY_LINK_UPTIME, REPLICATION_HELLO_TIMEOUT,
    REPLICATION_KEEPALIVE_INTERVAL, REPLICATION_KEEPALIVE_TIMEOUT, REPLICATION_LINK_QUEUE_COUNT,
};
use crate::metrics::{metrics, ReplicationQueue};

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot reach the master at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("the master refused the link: {0}")]
    Refused(String),
    #[error("the link broke: {0}")]
    Broken(String),
    #[error("the master closed the link")]
    Closed,
}

/// One message on its way down the link; a monitoring event holds its share of the
/// forward byte bound until tonic takes it from the queue.
struct Linked {
    envelope: Envelope,
    _held: Option<ForwardBytes>,
}

impl Linked {
    fn plain(kind: Kind) -> Self {
        Self {
            envelope: envelope(kind),
            _held: None,
        }
    }
}

/// Links to the master until `shutdown` resolves.
pub async fn run(
    config: Arc<ServerConfig>,
    identity: FrontendIdentity,
    outbox: OutboxReceiver,
    inbox: Inbox,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ReplicationError> {
    let tls =
        crate::tls::replication::link_client_config(&config.tls.ca_certificate, &identity.tls)?;
    let address = format!(
        "{}:{}",
        config.frontend.master.host, config.frontend.replication_port
    );
    let server_name = config.frontend.master_tls_name.clone();
    let master_name: Arc<str> = Arc::from(config.frontend.master.to_string());
    let my_name = identity.name.to_string();
    let mut round = 0u32;
    while !*shutdown.borrow() {
        let started = Instant::now();
        let link = link_once(
            &address,
            &server_name,
            &tls,
            &my_name,
            &master_name,
            &outbox,
            &inbox,
        );
        let result = tokio::select! {
            result = link => result,
            _ = shutdown.changed() => return Ok(()),
        };
        if let Err(e) = result {
            metrics()
                .replication_link_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("replication: {e}");
        }
        if started.elapsed() > REPLICATION_HEALTHY_LINK_UPTIME {
            round = 0;
        }
        let pause = jittered_backoff(REPLICATION_BACKOFF_MIN, REPLICATION_BACKOFF_MAX, round);
        round = round.saturating_add(1);
        // While unlinked, queued messages have nowhere to go: presence is resent as a
        // snapshot on the next link, the rest is counted as dropped.
        let wait = async {
            let deadline = tokio::time::Instant::now() + pause;
            loop {
                for _ in 0..outbox.discard_queued() {
                    metrics().replication_dropped(ReplicationQueue::LinkDown);
                }
                outbox.take_presence_lost();
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = outbox.ready() => {}
                }
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
    Ok(())
}

/// One link: connect, Hello both ways, then relay until it ends.
async fn link_once(
    address: &str,
    server_name: &rustls::pki_types::ServerName<'static>,
    tls: &Arc<rustls::ClientConfig>,
    my_name: &str,
    master_name: &Arc<str>,
    outbox: &OutboxReceiver,
    inbox: &Inbox,
) -> Result<(), LinkError> {
    let connect_error = |message: String| LinkError::Connect {
        address: address.to_string(),
        message,
    };
    let (addr, name, tls) = (
        address.to_string(),
        server_name.clone(),
        tokio_rustls::TlsConnector::from(tls.clone()),
    );
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let (addr, name, tls) = (addr.clone(), name.clone(), tls.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The URI only names the authority for HTTP/2; the connector above makes the
    // connection.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(REPLICATION_HELLO_TIMEOUT)
        .http2_keep_alive_interval(REPLICATION_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(REPLICATION_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map_err(|e| connect_error(error_chain(&e)))?;
    let mut client = ReplicationClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<Linked>(REPLICATION_LINK_QUEUE_COUNT);
    let hello = pb::Hello {
        frontend: my_name.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let _ = tx.try_send(Linked::plain(Kind::Hello(hello)));
    // tonic takes each message as it has room to send it: a forwarded event's bytes
    // count against the bound until then.
    let outgoing = ReceiverStream::new(rx).map(|linked| linked.envelope);
    let response = tokio::time::timeout(REPLICATION_HELLO_TIMEOUT, client.link(outgoing))
        .await
        .map_err(|_| LinkError::Refused(format!("no answer within {REPLICATION_HELLO_TIMEOUT:?}")))?
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => connect_error(error_chain(&status)),
            _ => LinkError::Refused(status.message().to_string()),
        })?;
    let mut incoming = response.into_inner();
    match tokio::time::timeout(REPLICATION_HELLO_TIMEOUT, incoming.message()).await {
        Ok(Ok(Some(Envelope {
            kind: Some(Kind::Hello(_)),
        }))) => {}
        Ok(Err(status)) => return Err(LinkError::Refused(status.message().to_string())),
        _ => return Err(LinkError::Refused("the master did not answer Hello".into())),
    }
    tracing::info!(master = %master_name, "linked to the master");
    metrics()
        .replication_links_up
        .fetch_add(1, Ordering::Relaxed);
    inbox.deliver(HubMessage::LinkUp {
        frontend: master_name.clone(),
    });
    inbox.deliver(HubMessage::SnapshotWanted);
    let result = relay(&tx, &mut incoming, master_name, outbox, inbox).await;
    // Nobody watches through a link that is gone.
    outbox.set_forwarded(Vec::new());
    metrics()
        .replication_links_up
        .fetch_sub(1, Ordering::Relaxed);
    inbox.deliver(HubMessage::LinkDown {
        frontend: master_name.clone(),
    });
    result
}

/// Moves messages both ways until the link ends.
async fn relay(
    tx: &tokio::sync::mpsc::Sender<Linked>,
    incoming: &mut tonic::Streaming<Envelope>,
    master_name: &Arc<str>,
    outbox: &OutboxReceiver,
    inbox: &Inbox,
) -> Result<(), LinkError> {
    loop {
        tokio::select! {
            message = incoming.message() => match message {
                Ok(Some(Envelope { kind: Some(Kind::Watched(watched)) })) => {
                    metrics().replication_received.fetch_add(1, Ordering::Relaxed);
                    outbox.set_forwarded(watched.artifacts);
                }
                Ok(Some(Envelope { kind: Some(kind) })) => {
                    metrics().replication_received.fetch_add(1, Ordering::Relaxed);
                    inbox.deliver(HubMessage::Remote { from: master_name.clone(), kind });
                }
                Ok(Some(Envelope { kind: None })) => {}
                Ok(None) => return Err(LinkError::Closed),
                Err(status) => return Err(LinkError::Broken(error_chain(&status))),
            },
            _ = outbox.ready() => {
                if outbox.take_presence_lost() {
                    inbox.deliver(HubMessage::SnapshotWanted);
                }
                while let Some(kind) = outbox.try_recv() {
                    match tx.try_send(Linked::plain(kind)) {
                        Ok(()) => {
                            metrics().replication_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(tokio::sync::mpsc::error::TrySendError::Full(dropped)) => {
                            metrics().replication_dropped(ReplicationQueue::Link);
                            // The master's picture of our agents is now wrong: resend it whole
                            // (once per burst of drops, see take_presence_lost above).
                            if matches!(dropped.envelope.kind, Some(Kind::Presence(_) | Kind::Snapshot(_) | Kind::ClientFacts(_))) {
                                outbox.mark_presence_lost();
                            }
                        }
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Err(LinkError::Closed),
                    }
                }
                send_forwarded(tx, outbox)?;
            }
        }
    }
}

/// Moves the monitoring events the shards queued onto the link, after everything else;
/// they never take the link queue's last `FORWARD_LINK_QUEUE_RESERVED_COUNT` slots (kept
/// for presence and flow states): past that they are dropped and counted (live watch is
/// best effort, the rows are on the datastore).
fn send_forwarded(
    tx: &tokio::sync::mpsc::Sender<Linked>,
    outbox: &OutboxReceiver,
) -> Result<(), LinkError> {
    let m = metrics();
    while let Some(forwarded) = outbox.try_recv_forwarded() {
        if tx.capacity() <= FORWARD_LINK_QUEUE_RESERVED_COUNT {
            m.replication_dropped(ReplicationQueue::Link);
            m.events_watch_forward_dropped
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let linked = Linked {
            envelope: envelope(Kind::Monitoring(forwarded.event)),
            _held: Some(forwarded.held),
        };
        match tx.try_send(linked) {
            Ok(()) => {
                m.replication_sent.fetch_add(1, Ordering::Relaxed);
                m.events_watch_forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                m.replication_dropped(ReplicationQueue::Link);
                m.events_watch_forward_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                return Err(LinkError::Closed)
            }
        }
    }
    Ok(())
}

/// An error with its sources, which tonic's Display leaves out ("transport error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
