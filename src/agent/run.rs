//! The agent's life: connect to a frontend (random first, rotating on failure, backing
//! off with jitter after each full round of URLs; told to move by the frontend (its task
//! stream ended, HTTP/2 GOAWAY: it drains), straight to the next URL without the backoff
//! sleep), hold the task stream, run what it
//! pushes within the task's limits (a deadline, abandoned past its grace; a cancel), and
//! deliver every result and file through the outbox until acknowledged, across
//! reconnects and (with a disk outbox) restarts. Told to re-key (the server saw its key
//! on two live connections: a clone), it makes a new identity through `AgentOptions::rekey`
//! and reconnects with it at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;

use crate::agent::collected::CollectContext;
use crate::agent::comms::{self, CommsError, Connection, TaskStream};
use crate::agent::events::{DropReason, EventQueries, EventSpool};
use crate::agent::outbox::{self, ArtifactOutput, Outbox, Outcome, Reply, Sending};
use crate::agent::runner::Runner;
use crate::config::url::ServerUrl;
use crate::limits::{
    jittered_backoff, AGENT_BACKOFF_MAX, AGENT_BACKOFF_MIN, AGENT_MIN_SESSION_FOR_MOVE,
    AGENT_OVERLOAD_PAUSE, COLLECTION_ABANDON_GRACE, MAX_AGENT_QUEUED_TASKS_COUNT,
    MAX_AGENT_RETRY_AFTER,
};
use crate::protocol::event_table::TableDigest;
use crate::protocol::pb::{self, upload_ack};

/// What loadgen (or a log) wants to know as the agent works. All default to nothing.
pub trait Observer: Send + Sync + 'static {
    /// `url` is the frontend this connection is to: tasks that arrive until the next
    /// `disconnected` came through it.
    fn connected(&self, _url: &ServerUrl, _connect_time: Duration, _first: bool) {}
    fn disconnected(&self, _why: &str) {}
    /// `received_us`: when the task's frame came off the stream (µs since the epoch),
    /// which may be before the agent could take it up (it sends its facts first).
    fn task_received(&self, _task: &pb::Task, _received_us: u64) {}
    fn uploaded(&self, _bytes: u64, _rows: u64) {}
    /// The server answered a file chunk DUPLICATE or OUT_OF_ORDER: the upload resumes
    /// from the offset it holds.
    fn file_chunk_resumed(&self) {}
    fn flow_done(&self, _flow_id: &str, _rows: u64) {}
    /// The server could not take the agent's facts now (503/408): it waits as told and
    /// sends them again before anything else.
    fn facts_refused(&self, _status: u16) {}
    fn error(&self, _what: &str) {}
    /// The server took an event batch (OK or DUPLICATE): its rows and bytes of rows.
    fn events_acked(&self, _artifact: &str, _rows: u64, _bytes: u64) {}
    /// Event rows the agent gave up. Not called by `run` itself: whoever builds the
    /// agent's `EventSpool` routes its drop reports here (see `AgentEvents`).
    fn events_dropped(&self, _artifact: &str, _rows: u64, _why: DropReason) {}
}

/// The agent's client monitoring events: the spool its queries' rows wait in, and what
/// runs the queries the client event table lists.
pub struct AgentEvents {
    pub spool: Arc<EventSpool>,
    pub queries: Box<dyn EventQueries>,
}

pub struct AgentOptions {
    pub urls: Vec<ServerUrl>,
    pub tls: Arc<rustls::ClientConfig>,
    pub local_ip: Option<IpAddr>,
    pub info: pb::ClientInfo,
    pub max_upload_bytes: u64,
    /// Fault injection for tests and loadgen: drop the connection after every N-th
    /// upload without taking its ack, so the item is resent after the reconnect. 0 = off.
    pub drop_connection_every_uploads: u64,
    /// Sent on every request when the deployment requires it (`client.enrolment_secret`).
    pub enrolment_secret: Option<crate::config::EnrolmentSecret>,
    /// Client monitoring events; None runs no event queries (the table is still kept).
    pub events: Option<AgentEvents>,
    /// The durable outbox's folder (the real agent); None keeps the outbox in memory
    /// (loadgen). A folder that cannot be used is reported and memory used instead.
    pub outbox_dir: Option<PathBuf>,
    /// The outbox's bound: past it the oldest flows are failed.
    pub max_outbox_bytes: u64,
    /// Makes a new identity when the server says to re-key (and keeps it, e.g. in the
    /// writeback) and returns the TLS config that presents it. None: the agent cannot
    /// re-key; it logs the request and reconnects as it is.
    pub rekey: Option<Rekeyer>,
    /// The runtime the connection's own work runs on: its socket, TLS and HTTP/2 driver,
    /// and the task stream's reader (which stamps each task's arrival). None: the runtime
    /// the agent runs on. loadgen runs thousands of agents in one process and gives their
    /// connections a runtime of their own, so that one agent's answering does not delay
    /// another's reading, as it cannot on a fleet where each agent has its own CPU.
    pub io: Option<tokio::runtime::Handle>,
}

/// Makes and keeps a new identity; returns its TLS config or why it could not. Blocking
/// (it writes a file): run on a blocking thread.
pub type Rekeyer =
    Arc<dyn Fn() -> Result<Arc<rustls::ClientConfig>, String> + Send + Sync + 'static>;

/// State that outlives a connection.
struct AgentState {
    /// The client event table the server last sent, with its digest (sent back on every
    /// connect so an unchanged table is not sent again). In memory only: a restarted
    /// agent gets its table again.
    event_table: Option<(pb::EventTable, TableDigest)>,
    /// Tasks not yet collected, outputs not yet acknowledged, the finished-flow journal.
    /// Behind a mutex only so that a disk outbox's work can run on a blocking thread;
    /// the session is its only user.
    outbox: Arc<Mutex<Outbox>>,
    outbox_on_disk: bool,
    /// The collection running now (at most one), kept across reconnects: it runs beside
    /// the session, so event batches and earlier results keep moving while it works.
    collecting: Option<Running>,
    events: Option<AgentEvents>,
    /// Event batches the server refused for good, for logging a refusal storm sparingly.
    events_refused: u64,
    /// The server asked for a new key (its reason): the session ends and the agent
    /// re-keys before it reconnects.
    rekey_wanted: Option<String>,
    /// The task stream ended (how): the session ends once the upload in flight is
    /// answered, and starts no other on that connection.
    stream_ended: Option<StreamEnded>,
}

/// How a task stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnded {
    /// The server ended it (END_STREAM, a reset, GOAWAY): it drains or let this stream
    /// go; the agent is to move.
    ByServer,
    /// The connection broke.
    Broken,
}

/// Why a session ended, and whether the server told the agent to move.
struct SessionEnd {
    why: String,
    told_to_move: bool,
}

impl SessionEnd {
    fn broken(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            told_to_move: false,
        }
    }

    /// An upload failed: the server's GOAWAY (it drains) tells the agent to move; anything
    /// else is a broken connection.
    fn upload_failed(context: &str, e: CommsError) -> Self {
        let told_to_move = matches!(&e, CommsError::H2(h) if h.is_go_away() && h.is_remote());
        Self {
            why: format!("{context}{e}"),
            told_to_move,
        }
    }
}

/// A collection running on a blocking thread.
struct Running {
    flow_id: String,
    handle: tokio::task::JoinHandle<Vec<ArtifactOutput>>,
    cancelled: Arc<AtomicBool>,
    /// Its deadline plus grace: past it the collection is abandoned.
    abandon_at: Option<Instant>,
    timeout_s: u64,
}

/// Runs the agent until `stop` resolves.
pub async fn run(
    mut opts: AgentOptions,
    runner: Arc<dyn Runner>,
    observer: Arc<dyn Observer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let outbox = open_outbox(&opts, observer.as_ref()).await;
    let mut state = AgentState {
        event_table: None,
        outbox_on_disk: outbox.on_disk(),
        outbox: Arc::new(Mutex::new(outbox)),
        collecting: None,
        events: opts.events.take(),
        events_refused: 0,
        rekey_wanted: None,
        stream_ended: None,
    };
    if let Some(table) = state.events.as_mut().and_then(|e| e.queries.saved_table()) {
        accept_event_table(&mut state, table);
    }
    let n = opts.urls.len();
    let mut next = rand::thread_rng().gen_range(0..n);
    let (mut failures_in_round, mut round, mut first) = (0usize, 0u32, true);
    while !*stop.borrow() {
        let url = &opts.urls[next % n];
        let held = state.event_table.as_ref().map(|(_, digest)| *digest);
        let failed = match connect(&opts, url, held).await {
            Ok((conn, tasks)) => {
                observer.connected(&conn.url, conn.connect_time, first);
                first = false;
                failures_in_round = 0;
                round = 0;
                let began = Instant::now();
                let spool = state.events.as_ref().map(|e| e.spool.clone());
                spool.iter().for_each(|s| s.set_connected(true));
                let end = tokio::select! {
                    end = session(&opts, conn, tasks, &mut state, &runner, observer.as_ref()) => end,
                    _ = stop.changed() => SessionEnd::broken("stopping"),
                };
                spool.iter().for_each(|s| s.set_connected(false));
                observer.disconnected(&end.why);
                if let Some(reason) = state.rekey_wanted.take() {
                    rekey(&mut opts, &reason, observer.as_ref()).await;
                }
                // Told to move: the next frontend now, not this one again. A session the
                // server ended at once counts as a failed connect, so frontends that take
                // agents and end their streams at once still lead to the backoff.
                if end.told_to_move {
                    next += 1;
                }
                end.told_to_move && began.elapsed() < AGENT_MIN_SESSION_FOR_MOVE
            }
            Err(e) => {
                observer.error(&e.to_string());
                next += 1;
                true
            }
        };
        if failed {
            failures_in_round += 1;
            if failures_in_round >= n {
                failures_in_round = 0;
                let pause = jittered_backoff(AGENT_BACKOFF_MIN, AGENT_BACKOFF_MAX, round);
                round = round.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Connects to `url` on the runtime `opts.io` names (this one when None): a socket
/// registers with the reactor of the runtime it is made on, and the HTTP/2 driver is
/// spawned beside it.
async fn connect(
    opts: &AgentOptions,
    url: &ServerUrl,
    held: Option<TableDigest>,
) -> Result<(Connection, TaskStream), CommsError> {
    let (tls, local_ip) = (opts.tls.clone(), opts.local_ip);
    let Some(io) = &opts.io else {
        let secret = opts.enrolment_secret.as_ref();
        return comms::connect_enrolled(url, tls, local_ip, held, secret).await;
    };
    let (url, secret) = (url.clone(), opts.enrolment_secret.clone());
    io.spawn(
        async move { comms::connect_enrolled(&url, tls, local_ip, held, secret.as_ref()).await },
    )
    .await
    .unwrap_or_else(|e| Err(CommsError::Runtime(e.to_string())))
}

/// Replaces the agent's identity as the server asked (`reason`), so the next connect
/// presents the new key. An agent that cannot re-key goes on as it is (reported).
async fn rekey(opts: &mut AgentOptions, reason: &str, observer: &dyn Observer) {
    tracing::warn!(%reason, "the server asked this agent to re-key");
    let Some(make) = opts.rekey.clone() else {
        return observer.error("asked to re-key, but this agent cannot; reconnecting as it is");
    };
    match tokio::task::spawn_blocking(move || make()).await {
        Ok(Ok(tls)) => {
            opts.tls = tls;
            tracing::warn!("re-keyed: reconnecting with a new identity");
        }
        Ok(Err(e)) => observer.error(&format!("re-keying failed: {e}")),
        Err(e) => observer.error(&format!("re-keying failed: {e}")),
    }
}

/// The outbox in `opts.outbox_dir` (on a blocking thread: it reads what a previous run
/// left), or in memory when there is none or it cannot be used (reported).
async fn open_outbox(opts: &AgentOptions, observer: &dyn Observer) -> Outbox {
    let (upload, bound) = (opts.max_upload_bytes, opts.max_outbox_bytes);
    let Some(dir) = opts.outbox_dir.clone() else {
        return Outbox::memory(upload, bound);
    };
    let opened = tokio::task::spawn_blocking(move || Outbox::open(&dir, upload, bound)).await;
    match opened {
        Ok(Ok((outbox, notes))) => {
            notes.iter().for_each(|note| observer.error(note));
            if !outbox.is_empty() {
                tracing::info!(
                    flows = outbox.len(),
                    bytes = outbox.total_bytes(),
                    "flows from the previous run to finish"
                );
            }
            outbox
        }
        Ok(Err(e)) => {
            observer.error(&format!("{e}; the outbox is kept in memory only"));
            Outbox::memory(upload, bound)
        }
        Err(e) => {
            observer.error(&format!("opening the outbox: {e}; kept in memory only"));
            Outbox::memory(upload, bound)
        }
    }
}

/// Runs `f` on the outbox: on a blocking thread when it is on disk (it writes and syncs
/// files), inline in memory. None if the blocking thread could not finish (shutdown).
async fn with_outbox<T: Send + 'static>(
    state: &AgentState,
    f: impl FnOnce(&mut Outbox) -> T + Send + 'static,
) -> Option<T> {
    let outbox = state.outbox.clone();
    let run = move || f(&mut outbox.lock().unwrap_or_else(|p| p.into_inner()));
    if !state.outbox_on_disk {
        return Some(run());
    }
    tokio::task::spawn_blocking(run).await.ok()
}

/// A quick look at the outbox (no I/O).
fn peek<T>(state: &AgentState, f: impl FnOnce(&Outbox) -> T) -> T {
    f(&state.outbox.lock().unwrap_or_else(|p| p.into_inner()))
}

/// One connection: returns why it ended.
async fn session(
    opts: &AgentOptions,
    mut conn: Connection,
    tasks: TaskStream,
    state: &mut AgentState,
    runner: &Arc<dyn Runner>,
    observer: &dyn Observer,
) -> SessionEnd {
    let (tx, mut rx) = mpsc::channel::<Pushed>(MAX_AGENT_QUEUED_TASKS_COUNT);
    let io = opts
        .io
        .clone()
        .unwrap_or_else(tokio::runtime::Handle::current);
    let reader = io.spawn(read_tasks(tasks, tx));
    let _abort = AbortOnDrop(reader);
    let info = pb::Upload {
        kind: Some(pb::upload::Kind::Info(opts.info.clone())),
    };
    // The facts must land (the client list and hunt conditions read them): a busy
    // frontend's 503 means wait and send them again, not go on without.
    loop {
        match conn.upload(&info).await {
            Err(e) => return SessionEnd::upload_failed("client info: ", e),
            Ok(reply) if matches!(reply.status, 503 | 408) => {
                observer.facts_refused(reply.status);
                tokio::time::sleep(overload_pause(&reply)).await
            }
            Ok(_) => break,
        }
    }
    let mut uploads = 0u64;
    // Whose turn it is when both results and events wait: they alternate, so neither a
    // long collection's batches hold events back nor a flood of events holds results.
    let mut events_turn = true;
    loop {
        while let Ok(pushed) = rx.try_recv() {
            accept(state, pushed, observer).await;
        }
        if state.rekey_wanted.is_some() {
            return SessionEnd::broken("the server asked for a new key");
        }
        if let Some(ended) = state.stream_ended.take() {
            return match ended {
                StreamEnded::ByServer => SessionEnd {
                    why: "told to move: the server ended the task stream".to_string(),
                    told_to_move: true,
                },
                StreamEnded::Broken => SessionEnd::broken("task stream broke"),
            };
        }
        let spool = state.events.as_ref().map(|e| e.spool.clone());
        let has_results = peek(state, Outbox::has_uploads);
        let events = spool.filter(|s| s.has_batches());
        if let Some(spool) = events.filter(|_| events_turn || !has_results) {
            events_turn = false;
            if let Err(e) = deliver_event(&mut conn, &spool, state, observer).await {
                return SessionEnd::upload_failed("", e);
            }
            continue;
        }
        if has_results {
            events_turn = true;
            uploads += 1;
            let every = opts.drop_connection_every_uploads;
            if every > 0 && uploads % every == 0 {
                if let Some(Some((upload, _))) = with_outbox(state, Outbox::next_upload).await {
                    let _ = conn.upload(&upload).await;
                }
                return SessionEnd::broken("injected disconnect before the ack");
            }
            if let Err(e) = deliver_front(&mut conn, state, observer).await {
                return SessionEnd::upload_failed("", e);
            }
            continue;
        }
        if state.collecting.is_none() {
            if let Some((task, files_dir)) = peek(state, |o| o.next_to_collect(None)) {
                start_collection(state, runner, task, files_dir, observer).await;
                continue;
            }
        }
        if let Some(why) = wait_for_work(&mut rx, state, observer).await {
            return SessionEnd::broken(why);
        }
    }
}

/// Waits until something needs the session: a pushed message, the running collection
/// finishing or running past its deadline, or an event batch sealed. Some(why) when the
/// task stream ended.
async fn wait_for_work(
    rx: &mut mpsc::Receiver<Pushed>,
    state: &mut AgentState,
    observer: &dyn Observer,
) -> Option<String> {
    let spool = state.events.as_ref().map(|e| e.spool.clone());
    let abandon_at = state.collecting.as_ref().and_then(|r| r.abandon_at);
    let collecting = state.collecting.as_mut().map(|r| &mut r.handle);
    tokio::select! {
        pushed = rx.recv() => match pushed {
            Some(pushed) => accept(state, pushed, observer).await,
            None => return Some("task stream ended".to_string()),
        },
        outputs = async move {
            match collecting {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        } => {
            let running = state.collecting.take().expect("a collection was running");
            let outputs = outputs.unwrap_or_else(|e| failed_outputs(&running, &e.to_string()));
            queue_outputs(state, running.flow_id, outputs, observer).await;
        },
        _ = async {
            match abandon_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        } => abandon_collection(state).await,
        _ = async {
            match &spool {
                Some(spool) => spool.batch_queued().await,
                None => std::future::pending().await,
            }
        } => {}
    }
    None
}

/// A collection that panicked, reported as failed artifact by artifact.
fn failed_outputs(running: &Running, why: &str) -> Vec<ArtifactOutput> {
    vec![ArtifactOutput {
        name: "collection".to_string(),
        error: Some(format!("flow {} failed: {why}", running.flow_id)),
        ..Default::default()
    }]
}

/// The running collection is past its deadline and grace: stop waiting for it (its
/// thread finishes in the background, its output is discarded) and report the timeout.
async fn abandon_collection(state: &mut AgentState) {
    let Some(running) = state.collecting.take() else {
        return;
    };
    running.cancelled.store(true, Ordering::Relaxed);
    tracing::warn!(flow = %running.flow_id, "collection abandoned past its timeout");
    let error = format!(
        "the collection was still running {COLLECTION_ABANDON_GRACE:?} after its timeout of \
         {} s; abandoned",
        running.timeout_s
    );
    let flow_id = running.flow_id;
    with_outbox(state, move |o| o.timed_out(&flow_id, error)).await;
}

/// Queues a collection's outputs in the outbox (persisted before anything is sent).
async fn queue_outputs(
    state: &AgentState,
    flow_id: String,
    outputs: Vec<ArtifactOutput>,
    observer: &dyn Observer,
) {
    let notes = with_outbox(state, move |o| o.collected(&flow_id, outputs)).await;
    notes
        .unwrap_or_default()
        .iter()
        .for_each(|n| observer.error(n));
}

/// Starts a task's collection beside the session (on a blocking thread when the runner
/// blocks; loadgen's synthetic runner answers at once and is queued straight away, or
/// after its `collect_time`).
/// The deadline counts from now, when the task is taken up.
async fn start_collection(
    state: &mut AgentState,
    runner: &Arc<dyn Runner>,
    task: pb::Task,
    files_dir: Option<PathBuf>,
    observer: &dyn Observer,
) {
    let limits = outbox::task_limits(&task);
    // A timeout too far out to represent is no timeout (it comes off the network).
    let deadline = (limits.timeout_s > 0)
        .then(|| Instant::now().checked_add(Duration::from_secs(limits.timeout_s)))
        .flatten();
    let ctx = CollectContext {
        limits,
        cancelled: Arc::new(AtomicBool::new(false)),
        deadline,
        files_dir,
    };
    let cancelled = ctx.cancelled.clone();
    let flow_id = task.flow_id.clone();
    let handle = if runner.is_blocking() {
        let runner = runner.clone();
        tokio::task::spawn_blocking(move || runner.collect(&task, &ctx))
    } else {
        let outputs = runner.collect(&task, &ctx);
        let held = runner.collect_time();
        if held.is_zero() {
            queue_outputs(state, task.flow_id, outputs, observer).await;
            return;
        }
        // Held like a running collection: a cancel or the deadline ends it the same way.
        tokio::spawn(async move {
            tokio::time::sleep(held).await;
            outputs
        })
    };
    state.collecting = Some(Running {
        flow_id,
        handle,
        cancelled,
        abandon_at: deadline.and_then(|d| d.checked_add(COLLECTION_ABANDON_GRACE)),
        timeout_s: limits.timeout_s,
    });
}

/// What the task stream carries that the session acts on.
enum Pushed {
    /// With when its frame came off the stream (µs since the epoch).
    Task(pb::Task, u64),
    Cancel(pb::Cancel),
    EventTable(pb::EventTable),
    Rekey(pb::Rekey),
    /// The stream's last word: it ended, and how.
    Ended(StreamEnded),
}

async fn accept(state: &mut AgentState, pushed: Pushed, observer: &dyn Observer) {
    match pushed {
        Pushed::Task(task, received_us) => accept_task(state, task, received_us, observer).await,
        Pushed::Cancel(cancel) => accept_cancel(state, cancel).await,
        Pushed::EventTable(table) => accept_event_table(state, table),
        Pushed::Rekey(rekey) => state.rekey_wanted = Some(rekey.reason),
        Pushed::Ended(how) => state.stream_ended = Some(how),
    }
}

/// Keeps the new table and hands it to the event queries (which start and stop to match).
fn accept_event_table(state: &mut AgentState, table: pb::EventTable) {
    let digest = TableDigest::of(&table);
    let names: Vec<&str> = table.queries.iter().map(|q| q.name.as_str()).collect();
    tracing::info!(
        version = table.version,
        queries = ?names,
        "client event table received"
    );
    if let Some(events) = state.events.as_mut() {
        events.queries.table_changed(&table);
    }
    state.event_table = Some((table, digest));
}

/// Takes a task the agent has not seen: persisted in the outbox before it runs. A task
/// already held, or finished (journalled, across restarts), is not run again.
async fn accept_task(
    state: &mut AgentState,
    task: pb::Task,
    received_us: u64,
    observer: &dyn Observer,
) {
    if peek(state, |o| o.knows(&task.flow_id)) {
        return;
    }
    let shown = task.clone();
    if with_outbox(state, move |o| o.add_task(task)).await == Some(true) {
        observer.task_received(&shown, received_us);
    }
}

/// The server cancelled a flow: stop its collection (its output is discarded), drop its
/// task and everything of it in the outbox, and never run it; no status is sent.
async fn accept_cancel(state: &mut AgentState, cancel: pb::Cancel) {
    if state
        .collecting
        .as_ref()
        .is_some_and(|r| r.flow_id == cancel.flow_id)
    {
        let running = state.collecting.take().expect("checked above");
        running.cancelled.store(true, Ordering::Relaxed);
    }
    let flow_id = cancel.flow_id.clone();
    let held = with_outbox(state, move |o| o.cancel(&flow_id)).await;
    tracing::info!(
        flow = %cancel.flow_id,
        reason = %cancel.reason,
        held = held.unwrap_or(false),
        "flow cancelled by the server"
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stamps each task as it arrives: the session takes tasks up only between its own
/// uploads (the first of which is the agent's facts), so the stamp is when the frontend
/// delivered it, not when the agent got round to it.
/// Kinds this agent does not know (a newer server) are skipped, not fatal. Its last
/// message says how the stream ended.
async fn read_tasks(mut tasks: TaskStream, tx: mpsc::Sender<Pushed>) {
    let ended = loop {
        let msg = match tasks.next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break StreamEnded::ByServer,
            Err(e) => break stream_error(&e),
        };
        let pushed = match msg.kind {
            Some(pb::server_message::Kind::Task(task)) => {
                Pushed::Task(task, crate::clock::now_us())
            }
            Some(pb::server_message::Kind::EventTable(table)) => Pushed::EventTable(table),
            Some(pb::server_message::Kind::Cancel(cancel)) => Pushed::Cancel(cancel),
            Some(pb::server_message::Kind::Rekey(rekey)) => Pushed::Rekey(rekey),
            _ => continue,
        };
        if tx.send(pushed).await.is_err() {
            return;
        }
    };
    let _ = tx.send(Pushed::Ended(ended)).await;
}

/// Whether a task stream's error was the server letting the agent go (a GOAWAY or a
/// reset it sent) or the connection breaking.
fn stream_error(e: &CommsError) -> StreamEnded {
    match e {
        CommsError::H2(h) if h.is_remote() && (h.is_go_away() || h.is_reset()) => {
            StreamEnded::ByServer
        }
        _ => StreamEnded::Broken,
    }
}

/// How long to wait after a 503/408: the server's Retry-After (capped), plus jitter so a
/// fleet that was refused at once does not come back at once.
fn overload_pause(reply: &crate::agent::comms::UploadReply) -> Duration {
    let wait = reply
        .retry_after
        .unwrap_or(AGENT_OVERLOAD_PAUSE)
        .min(MAX_AGENT_RETRY_AFTER);
    let jitter = rand::thread_rng().gen_range(0..=wait.as_millis() as u64 / 4);
    wait + Duration::from_millis(jitter)
}

/// Sends the outbox's next upload and acts on the answer: 503/408 (and other 5xx) keep
/// it and wait; everything else goes to the outbox's rules (`outbox::flow`).
async fn deliver_front(
    conn: &mut Connection,
    state: &mut AgentState,
    observer: &dyn Observer,
) -> Result<(), CommsError> {
    let Some(Some((upload, sending))) = with_outbox(state, Outbox::next_upload).await else {
        return Ok(());
    };
    let reply = conn.upload(&upload).await?;
    let answer = match reply.status {
        503 | 408 => None,
        status if status >= 500 => None,
        200 => Some(ack_reply(reply.ack.as_ref())),
        413 => Some(Reply::TooLarge),
        code => Some(Reply::Refused {
            code,
            message: reply
                .ack
                .as_ref()
                .map(|a| a.message.clone())
                .unwrap_or_default(),
            flow_closed: reply
                .ack
                .as_ref()
                .is_some_and(|a| a.status == upload_ack::Status::FlowClosed as i32),
        }),
    };
    let Some(answer) = answer else {
        tokio::time::sleep(overload_pause(&reply)).await;
        return Ok(());
    };
    let taken = matches!(answer, Reply::Ok { .. } | Reply::Duplicate { .. });
    if sending.is_file_chunk()
        && matches!(answer, Reply::Duplicate { .. } | Reply::OutOfOrder { .. })
    {
        observer.file_chunk_resumed();
    }
    let report = sending.clone();
    let outcome = with_outbox(state, move |o| o.answered(&sending, answer)).await;
    report_outcome(&report, taken, outcome, observer);
    Ok(())
}

/// A 200's ack as the outbox takes it (no ack at all: an old server's plain OK).
fn ack_reply(ack: Option<&pb::UploadAck>) -> Reply {
    let Some(ack) = ack else {
        return Reply::Ok { next_seq: 0 };
    };
    let next_seq = ack.next_seq;
    match upload_ack::Status::try_from(ack.status) {
        Ok(upload_ack::Status::Ok) => Reply::Ok { next_seq },
        Ok(upload_ack::Status::Duplicate) => Reply::Duplicate { next_seq },
        Ok(upload_ack::Status::OutOfOrder) => Reply::OutOfOrder { next_seq },
        status => Reply::Refused {
            code: 200,
            message: ack.message.clone(),
            flow_closed: status == Ok(upload_ack::Status::FlowClosed),
        },
    }
}

fn report_outcome(sent: &Sending, taken: bool, outcome: Option<Outcome>, observer: &dyn Observer) {
    if taken && !sent.is_status() {
        observer.uploaded(sent.bytes, sent.rows);
    }
    match outcome {
        Some(Outcome::FlowDone { rows }) => observer.flow_done(&sent.flow_id, rows),
        Some(Outcome::FlowDropped(why)) => {
            observer.error(&format!("flow {}: dropped: {why}", sent.flow_id))
        }
        Some(Outcome::Progressed) | None => {}
    }
}

/// Runs `f` on the spool: on a blocking thread when the spool is on disk (it reads and
/// removes batch files), inline when it is in memory. None if the blocking thread could
/// not finish (the runtime is shutting down).
async fn on_spool<T: Send + 'static>(
    spool: &Arc<EventSpool>,
    f: impl FnOnce(&EventSpool) -> T + Send + 'static,
) -> Option<T> {
    if !spool.on_disk() {
        return Some(f(spool));
    }
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&spool)).await.ok()
}

/// Sends the oldest event batch and acts on the answer: OK or DUPLICATE drop it from the
/// buffer; 413 splits it; 503/408 (and other 5xx) keep it and wait; any other refusal
/// drops it and counts its rows as dropped (reported in the next batch of the artifact).
async fn deliver_event(
    conn: &mut Connection,
    spool: &Arc<EventSpool>,
    state: &mut AgentState,
    observer: &dyn Observer,
) -> Result<(), CommsError> {
    let Some(batch) = on_spool(spool, |s| s.front()).await.flatten() else {
        return Ok(());
    };
    let upload = pb::Upload {
        kind: Some(pb::upload::Kind::Events(batch.clone())),
    };
    let reply = conn.upload(&upload).await?;
    let ack_status = reply
        .ack
        .as_ref()
        .map(|a| a.status)
        .unwrap_or(upload_ack::Status::Ok as i32);
    let taken = [
        upload_ack::Status::Ok as i32,
        upload_ack::Status::Duplicate as i32,
    ];
    let (artifact, bytes) = (batch.artifact.clone(), batch.jsonl.len() as u64);
    match reply.status {
        200 if taken.contains(&ack_status) => {
            let rows = on_spool(spool, move |s| s.acked(&batch)).await.unwrap_or(0);
            observer.events_acked(&artifact, rows, bytes);
        }
        413 => {
            on_spool(spool, move |s| s.split(&batch)).await;
        }
        503 | 408 => tokio::time::sleep(overload_pause(&reply)).await,
        status if status >= 500 => tokio::time::sleep(overload_pause(&reply)).await,
        status => {
            let message = reply.ack.map(|a| a.message).unwrap_or_default();
            state.events_refused += 1;
            let refused = state.events_refused;
            // A server that takes no events refuses every batch: say so, not 4 times a second.
            if refused.is_power_of_two() {
                observer.error(&format!(
                    "event batch of {artifact} refused ({status}): {message}; dropped \
                     ({refused} refused so far)"
                ));
            }
            on_spool(spool, move |s| s.refused(&batch)).await;
        }
    }
    Ok(())
}
