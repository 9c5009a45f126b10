//! Starts a frontend: one pinned glommio executor per agent shard, the priority
//! executor for the GUI/API, the queues between them; then waits for SIGINT/SIGTERM
//! and shuts everything down in order (stop accepting, finish uploads, close files).

use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;

use futures::FutureExt;
use futures_rustls::TlsAcceptor;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

use crate::api::{self, presence::Presence, ApiCtx};
use crate::config::{GuiPriority, ServerConfig};
use crate::datastore::Datastore;
use crate::limits::MIN_IO_MEMORY_BYTES;
use crate::shard::ctx::{ShardCtx, ShutdownSignal};
use crate::shard::mesh::{self, Notifier, PriorityEnds, ShardEnds};
use crate::tls::server::{agent_server_config, gui_server_config};

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("datastore: {0}")]
    Datastore(#[from] crate::datastore::DatastoreError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::server::TlsConfigError),
    #[error("cannot start executor `{name}`: {message}")]
    Executor { name: String, message: String },
    #[error("cannot listen on {what}: {source}")]
    Bind { what: String, source: std::io::Error },
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
}

/// How long start-up may take before the frontend gives up (an executor that died
/// before reporting would otherwise leave it waiting forever).
const STARTUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// What each executor reports once its listeners are bound (or failed to).
type Ready = Result<(), FrontendError>;

/// Runs a master frontend until SIGINT/SIGTERM.
pub fn run_frontend(config: Arc<ServerConfig>) -> Result<(), FrontendError> {
    if !config.frontend.transparent_huge_pages {
        disable_transparent_huge_pages();
    }
    let datastore = Datastore::open(config.datastore.location.clone(), config.datastore.fsync_documents)?;
    let agent_tls = TlsAcceptor::from(agent_server_config(&config.frontend.certificate, &config.frontend.private_key)?);
    let gui_tls = TlsAcceptor::from(gui_server_config(&config.frontend.certificate, &config.frontend.private_key)?);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let shards = if config.frontend.shards == 0 { cores } else { config.frontend.shards };
    let (priority_ends, shard_ends) = mesh::build(shards);
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let shutdown: ShutdownSignal = stop_rx.shared();
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let name = config.master_name();

    let api = ApiSetup { config: config.clone(), datastore: datastore.clone(), ends: priority_ends, tls: gui_tls, name: name.clone() };
    let mut api = Some(api);
    let mut handles = Vec::new();
    for (shard, ends) in shard_ends.into_iter().enumerate() {
        let on_shard = if config.gui.priority == GuiPriority::Shared && shard == 0 { api.take() } else { None };
        let setup = ShardSetup { shard, config: config.clone(), datastore: datastore.clone(), ends, tls: agent_tls.clone(), name: name.clone(), api: on_shard };
        let builder = LocalExecutorBuilder::new(Placement::Fixed(shard % cores))
            .name(&format!("agent-shard-{shard}"))
            .io_memory(config.frontend.io_memory_bytes)
            .blocking_thread_pool_placement(io_threads(&config));
        let (ready, stop) = (ready_tx.clone(), shutdown.clone());
        let handle = builder
            .spawn(move || run_shard(setup, stop, ready))
            .map_err(|e| FrontendError::Executor { name: format!("agent-shard-{shard}"), message: e.to_string() })?;
        handles.push(handle);
    }
    if let Some(api) = api {
        // The kernel, not glommio's fair share, decides between this thread and the
        // agent shards: it is unpinned, usually idle, and niced above them.
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name("priority")
            .io_memory(MIN_IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(io_threads(&config));
        let (ready, stop) = (ready_tx.clone(), shutdown.clone());
        let handle = builder
            .spawn(move || {
                favour_this_thread();
                run_api(api, stop, ready)
            })
            .map_err(|e| FrontendError::Executor { name: "priority".into(), message: e.to_string() })?;
        handles.push(handle);
    }
    drop(ready_tx);
    // Every shard reports, and so does the API wherever it runs.
    for _ in 0..shards + 1 {
        match ready_rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let message = format!("not every executor was ready within {STARTUP_DEADLINE:?}");
                return Err(FrontendError::Executor { name: "startup".into(), message });
            }
        }
    }
    crate::say!(
        "packhunt frontend {name} ready: agents on {}:{} ({shards} shards), GUI/API on https://{}:{}/ (priority: {:?})",
        config.frontend.bind_address, config.frontend.agent_port, config.gui.bind_address, config.gui.port, config.gui.priority
    );
    wait_for_signal()?;
    crate::say!("packhunt frontend stopping: finishing uploads in flight");
    let _ = stop_tx.send(());
    for handle in handles {
        let _ = handle.join();
    }
    crate::say!("packhunt frontend stopped");
    Ok(())
}

/// The datastore I/O threads of one executor (see `shard::offload`): unpinned, since
/// they mostly wait on the disk.
fn io_threads(config: &ServerConfig) -> PoolPlacement {
    PoolPlacement::Unbound(config.datastore.io_threads_per_executor)
}

fn wait_for_signal() -> Result<(), FrontendError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(FrontendError::Signals)?;
    let _ = signals.forever().next();
    Ok(())
}

struct ApiSetup {
    config: Arc<ServerConfig>,
    datastore: Datastore,
    ends: PriorityEnds,
    tls: TlsAcceptor,
    name: String,
}

struct ShardSetup {
    shard: usize,
    config: Arc<ServerConfig>,
    datastore: Datastore,
    ends: ShardEnds,
    tls: TlsAcceptor,
    name: String,
    api: Option<ApiSetup>,
}

async fn run_shard(setup: ShardSetup, shutdown: ShutdownSignal, ready: mpsc::Sender<Ready>) {
    let ShardSetup { shard, config, datastore, ends, tls, name, api } = setup;
    // In the `shared` baseline the API runs here: start it before waiting on the queue
    // ends below, since their other ends are the API's and would never connect.
    if let Some(api) = api {
        glommio::spawn_local(run_api(api, shutdown.clone(), ready.clone())).detach();
    }
    // Connect both queue ends first: the API side waits for every shard.
    let presence = mesh::connect_polled(ends.presence.connect()).await;
    let notifications = mesh::connect_polled(ends.notifications.connect()).await;
    let ctx = ShardCtx::new(shard, config, datastore, name, presence, shutdown.clone());
    let listener = match crate::transport::accept::bind(&ctx) {
        Ok(l) => l,
        Err(source) => {
            let what = format!("agent port {}:{}", ctx.config.frontend.bind_address, ctx.config.frontend.agent_port);
            let _ = ready.send(Err(FrontendError::Bind { what, source }));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let notify_ctx = ctx.clone();
    glommio::spawn_local(async move {
        while let Some(msg) = notifications.recv().await {
            match msg {
                mesh::ShardMessage::Notify { client_id, flow_id, frame } => {
                    crate::sessions::tasks::deliver(&notify_ctx, &client_id, &flow_id, frame).await
                }
            }
        }
    })
    .detach();
    crate::transport::accept::run(ctx, listener, tls).await;
}

async fn run_api(setup: ApiSetup, shutdown: ShutdownSignal, ready: mpsc::Sender<Ready>) {
    let ApiSetup { config, datastore, ends, tls, name } = setup;
    let presence = Rc::new(Presence::default());
    for receiver in ends.presence {
        let events = mesh::connect_polled(receiver.connect()).await;
        glommio::spawn_local(api::presence::follow(presence.clone(), events)).detach();
    }
    let notifier = Notifier::connect(ends.notifications).await;
    let listener = match api::bind(&config) {
        Ok(l) => l,
        Err(source) => {
            let what = format!("GUI port {}:{}", config.gui.bind_address, config.gui.port);
            let _ = ready.send(Err(FrontendError::Bind { what, source }));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let auth = api::auth::Authenticator::new(config.users.clone());
    let ctx = Rc::new(ApiCtx { config, datastore, notifier, presence, auth, frontend_name: name });
    api::serve(ctx, listener, tls, shutdown).await;
}

/// Stops the kernel from backing this process's memory with huge pages (mappings made from
/// now on, and khugepaged's collapsing). Best effort: a kernel without THP has nothing to
/// turn off.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!("PR_SET_THP_DISABLE failed: {}", std::io::Error::last_os_error());
    }
}

/// How much the kernel favours the priority (GUI/API) thread over the agent shards and
/// everything else on the box. With both cores busy, the thread at the shards' nice level
/// waited for a CPU and the GUI/API p99 under load was ~30 ms (tuning.md, P4); at −10 it
/// weighs ~9× a default thread, so a request that wakes it preempts a busy shard.
const PRIORITY_THREAD_NICE: libc::c_int = -10;

/// Best effort: without CAP_SYS_NICE the thread keeps the default priority.
fn favour_this_thread() {
    // SAFETY: gettid and setpriority take and return integers only; on Linux
    // PRIO_PROCESS with a thread id changes that one thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, PRIORITY_THREAD_NICE) };
    if rc != 0 {
        tracing::info!("GUI/API thread keeps the default priority: {}", std::io::Error::last_os_error());
    }
}
