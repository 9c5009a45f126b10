//! Starts a frontend: one pinned glommio executor per agent shard, the priority
//! executor for the GUI/API, the queues between them; then waits for SIGINT/SIGTERM
//! and shuts everything down in order: the shards drain first (stop accepting, tell the
//! agents to move, finish uploads up to `frontend.drain_timeout_ms`, close files) while
//! the hub and the replication link still carry presence and flow states; then the hub
//! (and the GUI/API) stops, then the rest.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

use crate::api::{self, ApiCtx};
use crate::audit::AuditLog;
use crate::config::{FrontendIdentity, FrontendRole, GuiPriority, ServerConfig};
use crate::datastore::Datastore;
use crate::events::watch::EndReason;
use crate::events::{EventConsumer, EventTaps, WatchHub};
use crate::limits::{MIN_IO_MEMORY_BYTES, STARTUP_DEADLINE, WATCHERS_END_ON_SHUTDOWN};
use crate::notify::mesh::{self, Notifier, PriorityEnds, ShardEnds};
use crate::notify::presence::Presence;
use crate::notify::FleetNotifier;
use crate::replication::forward::MonitoringForwarder;
use crate::replication::queue::{self as link_queue, Inbox, InboxReceiver, Outbox, OutboxReceiver};
use crate::replication::thread::LinkThread;
use crate::runtime::channel::connect_polled;
use crate::runtime::shutdown::{self, ShutdownSignal};
use crate::runtime::thread_nice::{nice_this_thread, nice_thread};
use crate::sessions::facts::FactsMemory;
use crate::sessions::shard::ShardCtx;
use crate::tls::server::{agent_server_config, gui_server_config};
use crate::transport::admission::Admission;
use crate::transport::agent_tls::AgentTlsConfig;
use crate::transport::drain::DrainReport;
use crate::transport::upload_permits::UploadPermits;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("datastore: {0}")]
    Datastore(#[from] crate::datastore::DatastoreError),
    #[error(transparent)]
    MountCheck(#[from] crate::datastore::mount_check::MountCheckError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::server::TlsConfigError),
    #[error("cannot start executor `{name}`: {message}")]
    Executor { name: String, message: String },
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("replication: {0}")]
    Replication(#[from] crate::replication::ReplicationError),
    #[error("{0}")]
    Sinks(#[from] crate::sinks::SinkError),
    #[error("{0}")]
    GrpcApi(#[from] crate::grpc::GrpcApiError),
}

/// What each executor reports once its listeners are bound (or failed to).
type Ready = Result<(), FrontendError>;

/// Whatever the frontend creates from here on (datastore, spools, sink files) is closed
/// to other users, whichever library creates it (docs/security/secrets.md).
fn restrict_umask() {
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail and touches
    // no memory. Set before any executor thread starts creating files.
    unsafe {
        libc::umask(crate::limits::PROCESS_UMASK as libc::mode_t);
    }
}

/// Runs a frontend (the master, or the minion `identity` names) until SIGINT/SIGTERM.
pub fn run_frontend(
    config: Arc<ServerConfig>,
    identity: FrontendIdentity,
    config_path: PathBuf,
) -> Result<(), FrontendError> {
    restrict_umask();
    if !config.frontend.transparent_huge_pages {
        disable_transparent_huge_pages();
    }
    // Refuses a mount lacking rename, fsync, append or free space, before writing there.
    crate::datastore::mount_check::check_at_start(
        &config.datastore.location,
        config.datastore.min_free_bytes,
    )?;
    let datastore = Datastore::open(
        config.datastore.location.clone(),
        config.datastore.fsync_documents,
    )?
    .with_fsync_events(config.datastore.fsync_events);
    // One writer thread per process; every executor records through clones.
    let audit = AuditLog::open(&datastore);
    let agent_tls = AgentTlsConfig::new(agent_server_config(&identity.tls)?);
    let gui_tls = TlsAcceptor::from(gui_server_config(&identity.tls)?);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let shards = config.frontend.shards.map_or(cores, |n| n.get());
    let (priority_ends, shard_ends) = mesh::build(shards);
    // Two stages: the shards drain first, the hub stops once they have.
    let (drain_tx, drain) = shutdown::channel();
    let (stop_tx, shutdown) = shutdown::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let (drained_tx, drained_rx) = mpsc::channel::<DrainReport>();
    let name = identity.name.to_string();
    let queues = link_queues(&config, &identity);
    // Live watchers are the master's; it tells its minions (if any) what they watch.
    let watch = identity.is_master().then(|| {
        let outbox = queues.as_ref().map(|q| q.outbox.clone());
        WatchHub::new(&name, outbox.map(announce_to_minions))
    });
    let (link, link_thread) = start_replication(&config, &identity, config_path, queues, &watch)?;
    let (grpc_calls, grpc_thread) = start_grpc_api(&config, &identity)?;
    let m = crate::metrics::metrics();
    let l = &config.limits;
    let as_gauge = |v: u64| v.min(i64::MAX as u64) as i64;
    // The metrics edge: units back in the names, as the config keys spell them.
    let as_ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as i64;
    m.set_limits(vec![
        ("concurrency", i64::from(l.concurrency.get())),
        ("concurrency_wait_ms", as_ms(l.concurrency_wait)),
        (
            "max_connections_per_second",
            i64::from(l.max_connections_per_second.get()),
        ),
        (
            "hunt_recruitment_per_second",
            i64::from(l.hunt_recruitment_per_second.get()),
        ),
        ("max_upload_bytes", as_gauge(l.max_upload_bytes.get())),
        ("handshake_timeout_ms", as_ms(l.handshake_timeout)),
        (
            "handshakes_in_flight_per_shard",
            i64::from(l.handshakes_in_flight_per_shard.get()),
        ),
        ("idle_timeout_ms", as_ms(l.idle_timeout)),
        ("request_timeout_ms", as_ms(l.request_timeout)),
        ("max_open_files", as_gauge(config.frontend.max_open_files)),
        (
            "io_ring_depth",
            as_gauge(config.frontend.io_ring_depth as u64),
        ),
        ("file_work_nice", i64::from(config.frontend.file_work_nice)),
        (
            "disk_full_retry_after_s",
            as_gauge(l.disk_full_retry_after.as_secs()),
        ),
    ]);
    m.upload_concurrency_limit.store(
        i64::from(config.limits.concurrency.get()),
        std::sync::atomic::Ordering::Relaxed,
    );
    let bound = u64::from(config.limits.concurrency.get())
        .saturating_mul(config.limits.max_upload_bytes.get());
    m.upload_memory_bound_bytes.store(
        bound.min(i64::MAX as u64) as i64,
        std::sync::atomic::Ordering::Relaxed,
    );

    let link_outbox = link.as_ref().map(|(outbox, _)| outbox.clone());
    let hub = HubSetup {
        config: config.clone(),
        identity: identity.clone(),
        datastore: datastore.clone(),
        ends: priority_ends,
        tls: gui_tls,
        link,
        watch: watch.clone(),
        audit: audit.clone(),
        grpc_calls,
        drain: drain.clone(),
    };
    // What acts on ingested events, shared by every shard: the master's watchers, or a
    // minion's forwarder to the master's, and the sinks. Sinks start first: their spools
    // may hold events an earlier run did not deliver.
    let sinks = crate::sinks::Sinks::start(&config.sinks, &config.datastore.location, &name)?;
    let mut consumers: Vec<Arc<dyn EventConsumer>> = sinks.consumers();
    match (&watch, link_outbox) {
        (Some(watch), _) => consumers.push(Arc::new(watch.clone())),
        (None, Some(outbox)) => consumers.push(Arc::new(MonitoringForwarder::new(outbox))),
        (None, None) => {}
    }
    let event_taps = EventTaps::new(consumers);
    let facts_memory = FactsMemory::new(crate::limits::FACTS_SEEN_PER_PROCESS_COUNT);
    let mut hub = Some(hub);
    let mut handles = Vec::new();
    for (shard, ends) in shard_ends.into_iter().enumerate() {
        let on_shard = if config.gui.priority == GuiPriority::Shared && shard == 0 {
            hub.take()
        } else {
            None
        };
        let setup = ShardSetup {
            shard,
            shards,
            config: config.clone(),
            agent_port: identity.agent_port,
            datastore: datastore.clone(),
            ends,
            tls: agent_tls.clone(),
            name: name.clone(),
            hub: on_shard,
            event_taps: event_taps.clone(),
            audit: audit.clone(),
            facts_memory: facts_memory.clone(),
        };
        let builder = LocalExecutorBuilder::new(Placement::Fixed(shard % cores))
            .name(&format!("agent-shard-{shard}"))
            .io_memory(config.frontend.io_memory_bytes)
            .ring_depth(config.frontend.io_ring_depth)
            .blocking_thread_pool_placement(io_threads(&config));
        let stages = ShardStages {
            drain: drain.clone(),
            hub_stop: shutdown.clone(),
            ready: ready_tx.clone(),
            drained: drained_tx.clone(),
        };
        let handle = builder
            .spawn(move || run_shard(setup, stages))
            .map_err(|e| FrontendError::Executor {
                name: format!("agent-shard-{shard}"),
                message: e.to_string(),
            })?;
        handles.push(handle);
    }
    if let Some(hub) = hub {
        // The kernel, not glommio's fair share, decides between this thread and the
        // agent shards: it is unpinned, usually idle, and niced above them.
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name("priority")
            .io_memory(MIN_IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(io_threads(&config));
        let (ready, stop) = (ready_tx.clone(), shutdown.clone());
        let priority = config.gui.priority;
        let handle = builder
            .spawn(move || {
                favour_this_thread(priority);
                run_hub(hub, stop, ready)
            })
            .map_err(|e| FrontendError::Executor {
                name: "priority".into(),
                message: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    drop(drained_tx);
    // Every shard reports, and so does the hub wherever it runs.
    for _ in 0..shards + 1 {
        match ready_rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let message = format!("not every executor was ready within {STARTUP_DEADLINE:?}");
                return Err(FrontendError::Executor {
                    name: "startup".into(),
                    message,
                });
            }
        }
    }
    // Every shard listens: a balancer's health check may now send agents here.
    crate::runtime::readiness::mark_accepting();
    let agents = format!(
        "agents on {} ({shards} shards)",
        std::net::SocketAddr::new(config.frontend.bind_address, identity.agent_port)
    );
    let grpc_api = match (&grpc_thread, &config.api) {
        (Some(_), Some(api)) => format!(", gRPC API on {}", api.address),
        _ => String::new(),
    };
    match identity.role {
        FrontendRole::Master => crate::say!(
            "packhunt frontend {name} ready: {agents}, GUI/API on https://{}/ (priority: {}){grpc_api}{}",
            config.gui.address,
            config.gui.priority.as_str(),
            if config.minions.is_empty() {
                String::new()
            } else {
                format!(
                    ", minions link on port {}",
                    config.frontend.replication_port
                )
            }
        ),
        FrontendRole::Minion => crate::say!(
            "packhunt minion {name} ready: {agents}, linking to the master at {}:{}",
            config.frontend.master.host,
            config.frontend.replication_port
        ),
    }
    wait_for_signal()?;
    // `/readyz` says no from here: a balancer stops sending agents while they are moved.
    crate::runtime::readiness::mark_draining();
    drain_shards(&config, drain_tx, &drained_rx, shards);
    // The shards have drained and queued their last presence and flow events: the hub
    // applies them, hands them to the link, and stops with the GUI/API.
    let _ = stop_tx.send(());
    for handle in handles {
        let _ = handle.join();
    }
    // After the executors: every call they were answering has ended or been dropped.
    if let Some(thread) = grpc_thread {
        thread.stop();
    }
    // After the shards: nothing offers events any more, and what was queued gets spooled.
    sinks.stop();
    if let Some(thread) = link_thread {
        thread.stop();
    }
    // After everything that records has stopped: what is queued reaches the day file.
    if !audit.flush(crate::limits::AUDIT_FLUSH_ON_SHUTDOWN) {
        tracing::error!(
            "audit entries still queued after {:?}: they are lost",
            crate::limits::AUDIT_FLUSH_ON_SHUTDOWN
        );
    }
    crate::say!("packhunt frontend stopped");
    Ok(())
}

/// Starts every shard's drain and waits for their reports (up to the drain timeout and a
/// little slack: a shard that does not report is stopped with the rest); logs what the
/// drain did.
fn drain_shards(
    config: &ServerConfig,
    drain: futures::channel::oneshot::Sender<()>,
    drained: &mpsc::Receiver<DrainReport>,
    shards: usize,
) {
    let timeout = config.frontend.drain_timeout;
    let m = crate::metrics::metrics();
    m.draining.store(1, std::sync::atomic::Ordering::Relaxed);
    crate::say!(
        "packhunt frontend stopping: agents told to move, uploads in flight finish within {} ms",
        timeout.as_millis()
    );
    let _ = drain.send(());
    let deadline = std::time::Instant::now() + timeout + crate::limits::DRAIN_REPORT_SLACK;
    let mut total = DrainReport::default();
    let mut reported = 0;
    while reported < shards {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match drained.recv_timeout(left) {
            Ok(report) => {
                total.add(&report);
                reported += 1;
            }
            Err(_) => break,
        }
    }
    if reported < shards {
        tracing::error!(
            reported,
            shards,
            "not every shard reported its drain in time; stopping anyway"
        );
    }
    crate::say!(
        "packhunt frontend drained: {} agents moved, {} uploads finished ({} in flight at the \
         start), {} uploads cut at the deadline, {} connections still open then",
        total.agents_moved,
        total.uploads_finished,
        total.uploads_in_flight_at_start,
        total.uploads_cut,
        total.connections_cut
    );
}

/// The hub's ends of the replication queues.
type LinkEnds = (Outbox, InboxReceiver);

/// Both ends of the queues between the executors and the replication thread.
struct LinkQueues {
    outbox: Outbox,
    outbox_rx: OutboxReceiver,
    inbox: Inbox,
    inbox_rx: InboxReceiver,
}

/// The replication queues, if this frontend links: a minion always, the master once
/// minions are configured (a single-frontend deployment opens no replication port).
fn link_queues(config: &ServerConfig, identity: &FrontendIdentity) -> Option<LinkQueues> {
    if identity.is_master() && config.minions.is_empty() {
        return None;
    }
    let (outbox, outbox_rx) = link_queue::outbox();
    let (inbox, inbox_rx) = link_queue::inbox();
    Some(LinkQueues {
        outbox,
        outbox_rx,
        inbox,
        inbox_rx,
    })
}

/// The master's watchers tell the minions what to forward through the link thread.
fn announce_to_minions(outbox: Outbox) -> crate::events::watch::Announce {
    Box::new(move |watched| {
        outbox.announce_watched(watched.iter().map(|a| a.as_str().to_string()).collect())
    })
}

/// Starts the replication thread on `queues` (see `link_queues`); on the master,
/// monitoring events from minions go to `watch`.
fn start_replication(
    config: &Arc<ServerConfig>,
    identity: &FrontendIdentity,
    config_path: PathBuf,
    queues: Option<LinkQueues>,
    watch: &Option<WatchHub>,
) -> Result<(Option<LinkEnds>, Option<LinkThread>), FrontendError> {
    let Some(LinkQueues {
        outbox,
        outbox_rx,
        inbox,
        inbox_rx,
    }) = queues
    else {
        return Ok((None, None));
    };
    let thread = match identity.role {
        FrontendRole::Master => {
            let listener = crate::replication::master::bind(config)?;
            let watch = watch.clone().expect("the master always has a watch hub");
            crate::replication::thread::spawn_master(
                config.clone(),
                config_path,
                listener,
                outbox_rx,
                inbox,
                watch,
            )?
        }
        FrontendRole::Minion => crate::replication::thread::spawn_minion(
            config.clone(),
            identity.clone(),
            outbox_rx,
            inbox,
        )?,
    };
    Ok((Some((outbox, inbox_rx)), Some(thread)))
}

/// The master's gRPC API, when `[api]` enables it: its port bound and its thread started
/// here (a port in use is a start-up error); the calls it queues are the hub's to answer.
fn start_grpc_api(
    config: &ServerConfig,
    identity: &FrontendIdentity,
) -> Result<
    (
        Option<crate::grpc::bridge::CallReceiver>,
        Option<crate::grpc::server::ApiThread>,
    ),
    FrontendError,
> {
    let Some(api) = config.api.filter(|_| identity.is_master()) else {
        return Ok((None, None));
    };
    let listener = crate::grpc::server::bind(api.address)?;
    let (queue, calls) = crate::grpc::bridge::call_queue();
    let thread = crate::grpc::server::spawn(config, listener, queue)?;
    Ok((Some(calls), Some(thread)))
}

/// The datastore I/O threads of one executor (see `runtime::offload`): unpinned, since
/// they mostly wait on the disk.
fn io_threads(config: &ServerConfig) -> PoolPlacement {
    PoolPlacement::Unbound(config.datastore.io_threads_per_executor.get())
}

fn wait_for_signal() -> Result<(), FrontendError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(FrontendError::Signals)?;
    let _ = signals.forever().next();
    Ok(())
}

struct HubSetup {
    config: Arc<ServerConfig>,
    identity: FrontendIdentity,
    datastore: Datastore,
    ends: PriorityEnds,
    tls: TlsAcceptor,
    link: Option<LinkEnds>,
    /// The master's live watchers.
    watch: Option<WatchHub>,
    audit: AuditLog,
    /// Calls of the gRPC API (the master's, when `[api]` enables it).
    grpc_calls: Option<crate::grpc::bridge::CallReceiver>,
    /// The first stop signal (the shards' drain): what must not start anew while the
    /// frontend stops, such as hunt recruitment, watches it.
    drain: ShutdownSignal,
}

struct ShardSetup {
    shard: usize,
    shards: usize,
    config: Arc<ServerConfig>,
    agent_port: u16,
    datastore: Datastore,
    ends: ShardEnds,
    tls: AgentTlsConfig,
    name: String,
    hub: Option<HubSetup>,
    event_taps: EventTaps,
    audit: AuditLog,
    facts_memory: FactsMemory,
}

/// A shard's stages: when to drain, where it says it is ready and what its drain did;
/// `hub_stop` is for the hub when it runs on this shard (`gui.priority = shared`).
struct ShardStages {
    drain: ShutdownSignal,
    hub_stop: ShutdownSignal,
    ready: mpsc::Sender<Ready>,
    drained: mpsc::Sender<DrainReport>,
}

async fn run_shard(setup: ShardSetup, stages: ShardStages) {
    let ShardStages {
        drain: shutdown,
        hub_stop,
        ready,
        drained,
    } = stages;
    let ShardSetup {
        shard,
        shards,
        config,
        agent_port,
        datastore,
        ends,
        tls,
        name,
        hub,
        event_taps,
        audit,
        facts_memory,
    } = setup;
    // The `shared` baseline schedules everything alike (and shard 0's pool is the GUI's).
    if config.gui.priority != GuiPriority::Shared {
        yield_file_work(config.frontend.file_work_nice);
    }
    // In the `shared` baseline the hub runs here: start it before waiting on the queue
    // ends below, since their other ends are the hub's and would never connect.
    let hub = hub.map(|hub| glommio::spawn_local(run_hub(hub, hub_stop, ready.clone())));
    // Connect both queue ends first: the API side waits for every shard.
    let events = crate::notify::shard_events::ShardEventSender::new(
        connect_polled(ends.events.connect()).await,
    );
    let notifications = connect_polled(ends.notifications.connect()).await;
    let upload_permits = crate::limits::shard_share(config.limits.concurrency.get(), shards, shard);
    let accept_rate = crate::limits::shard_share(
        config.limits.max_connections_per_second.get(),
        shards,
        shard,
    );
    let uploads = UploadPermits::new(upload_permits, config.limits.concurrency_wait);
    let admission = Rc::new(Admission::new(uploads, accept_rate));
    let ctx = ShardCtx::new(
        shard,
        config,
        datastore,
        name,
        agent_port,
        events,
        event_taps,
        shutdown.clone(),
        audit,
        facts_memory,
    );
    let listener = match crate::transport::accept::bind(&ctx) {
        Ok(l) => l,
        Err(source) => {
            let what = format!(
                "agent port {}",
                std::net::SocketAddr::new(ctx.config.frontend.bind_address, ctx.agent_port)
            );
            let _ = ready.send(Err(FrontendError::Bind { what, source }));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let notify_ctx = ctx.clone();
    glommio::spawn_local(async move {
        while let Some(msg) = notifications.recv().await {
            match msg {
                mesh::ShardMessage::Notify {
                    client_id,
                    flow_id,
                    frame,
                } => {
                    crate::sessions::tasks::deliver(&notify_ctx, &client_id, &flow_id, frame).await
                }
                mesh::ShardMessage::Labels { client_id, labels } => {
                    crate::sessions::tasks::labels_changed(&notify_ctx, &client_id, labels)
                }
                mesh::ShardMessage::EventTable(table) => {
                    crate::sessions::tasks::event_table_changed(&notify_ctx, table)
                }
                mesh::ShardMessage::Cancel(cancelled) => {
                    crate::sessions::tasks::cancel(&notify_ctx, &cancelled)
                }
                mesh::ShardMessage::Displaced { client_id, session } => {
                    let ctx = notify_ctx.clone();
                    glommio::spawn_local(async move {
                        crate::sessions::clones::displaced(&ctx, client_id, session).await
                    })
                    .detach();
                }
                mesh::ShardMessage::Rescan => {
                    let ctx = notify_ctx.clone();
                    glommio::spawn_local(async move { crate::sessions::tasks::rescan(&ctx).await })
                        .detach();
                }
            }
        }
    })
    .detach();
    let report = crate::transport::accept::run(ctx.clone(), admission, listener, tls).await;
    // The hub's follower of this shard's events ends once it has applied what is queued.
    ctx.events.close().await;
    let _ = drained.send(report);
    if let Some(hub) = hub {
        hub.await;
    }
}

async fn run_hub(setup: HubSetup, shutdown: ShutdownSignal, ready: mpsc::Sender<Ready>) {
    let HubSetup {
        config,
        identity,
        datastore,
        ends,
        tls,
        link,
        watch,
        audit,
        grpc_calls,
        drain,
    } = setup;
    let role = identity.role;
    let is_master = identity.is_master();
    let minions: Vec<(String, FrontendRole)> = if is_master {
        config
            .minions
            .iter()
            .map(|m| (m.name.to_string(), FrontendRole::Minion))
            .collect()
    } else {
        Vec::new()
    };
    let name = identity.name.to_string();
    let presence = Rc::new(Presence::new(&name, role, &minions));
    // Subscribed before any shard or minion event is followed, so none is missed.
    let clients =
        is_master.then(|| crate::clients::feed::start(presence.clone(), datastore.clone()));
    // A minion reports its agents to the master; the master has no one to report to.
    let forward = if is_master {
        None
    } else {
        link.as_ref().map(|(outbox, _)| outbox.clone())
    };
    let mut followers = Vec::new();
    for receiver in ends.events {
        let events = connect_polled(receiver.connect()).await;
        let follow = crate::notify::presence::follow(presence.clone(), events, forward.clone());
        followers.push(glommio::spawn_local(follow));
    }
    let notifier = Rc::new(Notifier::connect(ends.notifications).await);
    let replication = link.as_ref().map(|(outbox, _)| outbox.clone());
    // Clones and stale streams: presence reports a client's older stream, the dispatcher
    // hands it to its holder (a shard here, or, from the master, a minion).
    let (displaced_tx, displaced_rx) = crate::notify::clones::channel();
    presence.report_displaced(displaced_tx);
    glommio::spawn_local(crate::notify::clones::dispatch(
        displaced_rx,
        notifier.clone(),
        if is_master { replication.clone() } else { None },
    ))
    .detach();
    if !is_master {
        // A minion serves the table the master keeps on the shared datastore; the link
        // tells it of changes (and a relink reloads it: a change may have been missed).
        glommio::spawn_local(crate::frontend::hub::reload_event_table(
            datastore.clone(),
            notifier.clone(),
        ))
        .detach();
    }
    if let Some((outbox, inbox)) = link {
        glommio::spawn_local(crate::frontend::hub::follow_replication(
            presence.clone(),
            notifier.clone(),
            outbox,
            inbox,
            role,
            datastore.clone(),
        ))
        .detach();
    }
    let Some(address) = identity.api_address else {
        let _ = ready.send(Ok(()));
        let _ = shutdown.await;
        return flush_presence(followers).await;
    };
    let listener = match api::bind(address) {
        Ok(l) => l,
        Err(source) => {
            let what = format!(
                "{} port {address}",
                if is_master { "GUI" } else { "metrics" },
            );
            let _ = ready.send(Err(FrontendError::Bind { what, source }));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let auth = api::auth::Authenticator::new(config.users.clone(), config.gui.sessions)
        .reloading_from(config.path.clone());
    let fleet = Rc::new(FleetNotifier::new(
        notifier,
        if is_master { replication } else { None },
        presence.clone(),
        datastore.clone(),
    ));
    let mut recruiter = None;
    let hunts = if is_master {
        // The recruiter checks conditions on the facts the client index holds.
        let known_facts = clients.clone().map(|index| -> crate::hunts::KnownFacts {
            Rc::new(move |client| index.os_and_labels(client))
        });
        match crate::hunts::Hunts::load(
            datastore.clone(),
            fleet.clone(),
            presence.clone(),
            known_facts,
            config.limits.hunt_recruitment_per_second.get(),
        )
        .await
        {
            Ok(hunts) => {
                recruiter = Some(glommio::spawn_local(crate::hunts::run_recruiter(
                    hunts.clone(),
                    drain,
                )));
                Some(hunts)
            }
            Err(e) => {
                // The API still serves collections; hunts answer 503 until a restart.
                tracing::error!("cannot load hunts: {e}");
                None
            }
        }
    } else {
        None
    };
    let event_table = if is_master {
        match crate::events::TableStore::load(datastore.clone()).await {
            Ok(store) => {
                // Agents connected before this point get the table with the hand-off.
                fleet.event_table_changed(Arc::new(store.current().to_wire()));
                api::events::EventTableSource::Ready(store)
            }
            Err(e) => {
                // As with hunts: agents and the rest of the API keep working; the table's
                // routes answer 503 with this reason until the file is fixed.
                tracing::error!("cannot load the client event table: {e}");
                api::events::EventTableSource::Unusable(e)
            }
        }
    } else {
        api::events::EventTableSource::NotServed
    };
    let ctx = Rc::new(ApiCtx {
        config,
        datastore,
        fleet,
        event_table,
        hunts,
        presence,
        clients,
        auth,
        frontend_name: name,
        role,
        watch: watch.clone(),
        live: api::live::LiveStreams::new(shutdown.clone()),
        audit,
        calls_in_flight: std::cell::Cell::new(0),
    });
    if let Some(calls) = grpc_calls {
        glommio::spawn_local(crate::grpc::bridge::serve_calls(ctx.clone(), calls)).detach();
    }
    api::serve(ctx, listener, tls, shutdown).await;
    // Stopped recruiting at the drain; its last batch is written before the hub ends.
    if let Some(recruiter) = recruiter {
        recruiter.await;
    }
    if let Some(watch) = watch {
        end_watchers(&watch).await;
    }
    flush_presence(followers).await;
}

/// Waits (bounded) for the followers of the shards' events to apply what the drained
/// shards queued last (agents that left, flows that ended) and hand it to the link; each
/// ends when its shard has closed its queue.
async fn flush_presence(followers: Vec<glommio::Task<()>>) {
    let all = futures::future::join_all(followers);
    if crate::runtime::deadline::with_deadline(crate::limits::PRESENCE_FLUSH_ON_SHUTDOWN, all)
        .await
        .is_none()
    {
        tracing::warn!(
            "presence events still queued at shutdown: the master learns from the link's end"
        );
    }
}

/// Tells every watcher the frontend is stopping and gives their connections (tasks on
/// this executor) a moment to send that line.
async fn end_watchers(watch: &WatchHub) {
    watch.end_all(EndReason::Shutdown);
    // How often the stop looks whether every watcher's connection has let go.
    const WATCHERS_GONE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
    let busy = || watch.watchers() > 0;
    crate::runtime::deadline::idle_within(
        WATCHERS_END_ON_SHUTDOWN,
        WATCHERS_GONE_POLL_INTERVAL,
        busy,
    )
    .await;
}

/// Stops the kernel from backing this process's memory with huge pages (mappings made from
/// now on, and khugepaged's collapsing). Best effort: a kernel without THP has nothing to
/// turn off.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            "PR_SET_THP_DISABLE failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// How much the kernel favours the priority (GUI/API) thread over the agent shards and
/// everything else on the box. At −10 it weighs ~9× a default thread (the CFS weight
/// table), so a request that wakes it preempts a busy shard; tuning.md P4 measures what
/// that buys and where the remaining tail is (CPU wait on a shared two-core box).
const PRIORITY_THREAD_NICE: libc::c_int = -10;

/// The lowest real-time priority: above every normal thread, below any real-time thread
/// the operator runs.
const PRIORITY_THREAD_RT_PRIORITY: libc::c_int = 1;

/// Best effort: without CAP_SYS_NICE the thread keeps the default priority.
fn favour_this_thread(priority: GuiPriority) {
    if priority == GuiPriority::Realtime {
        let param = libc::sched_param {
            sched_priority: PRIORITY_THREAD_RT_PRIORITY,
        };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } == 0 {
            // Its blocking pool is niced, not real-time: file work may take long.
            favour_blocking_pool();
            return;
        }
        tracing::warn!(
            "GUI/API thread cannot run real-time ({}); niced instead",
            std::io::Error::last_os_error()
        );
    }
    if let Err(e) = nice_this_thread(PRIORITY_THREAD_NICE) {
        tracing::info!("GUI/API thread keeps the default priority: {e}");
        return;
    }
    favour_blocking_pool();
}

/// Nices this executor's blocking-pool threads like the executor itself. glommio starts
/// them before the executor runs any code of ours, so they do not inherit its priority;
/// they carry its thread name. Their work is the hub's file work: hunt recruits' writes
/// (what a fan-out waits for) and the API's reads; left at the default priority they
/// competed on equal terms with the shards' ingest of the first answers (tuning.md,
/// "P2 fan-out": the recruiter's writes were 45 % of the frontend's CPU samples).
fn favour_blocking_pool() {
    let niced = renice_blocking_pool(PRIORITY_THREAD_NICE);
    tracing::debug!(threads = niced, "GUI/API blocking pool niced");
}

/// Nices this agent shard's blocking pool (its file work) to `nice`
/// (`frontend.file_work_nice`). Best effort, like the GUI's favour: a thread that keeps
/// the default priority still works, and the log says so once per shard.
fn yield_file_work(nice: libc::c_int) {
    if nice == 0 {
        return;
    }
    let niced = renice_blocking_pool(nice);
    if niced == 0 {
        tracing::info!(
            nice,
            "agent shard file-work threads keep the default priority"
        );
    } else {
        tracing::debug!(threads = niced, nice, "agent shard file-work threads niced");
    }
}

/// Sets `nice` on every thread of this process that carries the calling thread's name
/// but is not it: the calling executor's blocking pool. Returns how many took it.
fn renice_blocking_pool(nice: libc::c_int) -> usize {
    let own = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
    // SAFETY: gettid takes nothing and returns an integer.
    let me = unsafe { libc::gettid() };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut niced = 0;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if tid == me || comm != own {
            continue;
        }
        if nice_thread(tid, nice).is_ok() {
            niced += 1;
        }
    }
    niced
}
