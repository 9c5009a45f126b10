//! The agent's life: connect to a frontend (random first, rotating on failure, backing
//! off with jitter after each full round of URLs), hold the task stream, run what it
//! pushes, and deliver every result until acknowledged, across reconnects.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use crate::agent::collected::CollectContext;
use crate::agent::comms::{self, CommsError, Connection, TaskStream};
use crate::agent::events::{DropReason, EventQueries, EventSpool};
use crate::agent::outbox::{ArtifactOutput, OutItem, Outbox};
use crate::agent::runner::Runner;
use crate::config::url::ServerUrl;
use crate::limits::{
    jittered_backoff, AGENT_BACKOFF_MAX, AGENT_BACKOFF_MIN, AGENT_OVERLOAD_PAUSE,
    MAX_AGENT_QUEUED_TASKS_COUNT, MAX_AGENT_REMEMBERED_FLOWS_COUNT, MAX_AGENT_RETRY_AFTER,
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
    fn flow_done(&self, _flow_id: &str, _rows: u64) {}
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
    /// Client monitoring events; None runs no event queries (the table is still kept).
    pub events: Option<AgentEvents>,
}

/// State that outlives a connection.
struct AgentState {
    /// The client event table the server last sent, with its digest (sent back on every
    /// connect so an unchanged table is not sent again). In memory only: a restarted
    /// agent gets its table again.
    event_table: Option<(pb::EventTable, TableDigest)>,
    outbox: Outbox,
    queue: VecDeque<pb::Task>,
    /// The collection running now (at most one), kept across reconnects: it runs beside
    /// the session, so event batches and earlier results keep moving while it works.
    collecting: Option<(pb::Task, tokio::task::JoinHandle<Vec<ArtifactOutput>>)>,
    events: Option<AgentEvents>,
    /// Event batches the server refused for good, for logging a refusal storm sparingly.
    events_refused: u64,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl AgentState {
    fn remember(&mut self, flow_id: &str) -> bool {
        if !self.seen.insert(flow_id.to_string()) {
            return false;
        }
        self.seen_order.push_back(flow_id.to_string());
        if self.seen_order.len() > MAX_AGENT_REMEMBERED_FLOWS_COUNT {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// Runs the agent until `stop` resolves.
pub async fn run(
    mut opts: AgentOptions,
    runner: Arc<dyn Runner>,
    observer: Arc<dyn Observer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut state = AgentState {
        event_table: None,
        outbox: Outbox::new(opts.max_upload_bytes),
        queue: VecDeque::new(),
        collecting: None,
        events: opts.events.take(),
        events_refused: 0,
        seen: HashSet::new(),
        seen_order: VecDeque::new(),
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
        match comms::connect_holding(url, opts.tls.clone(), opts.local_ip, held).await {
            Ok((conn, tasks)) => {
                observer.connected(&conn.url, conn.connect_time, first);
                first = false;
                failures_in_round = 0;
                round = 0;
                let spool = state.events.as_ref().map(|e| e.spool.clone());
                spool.iter().for_each(|s| s.set_connected(true));
                let why = tokio::select! {
                    why = session(&opts, conn, tasks, &mut state, &runner, observer.as_ref()) => why,
                    _ = stop.changed() => "stopping".to_string(),
                };
                spool.iter().for_each(|s| s.set_connected(false));
                observer.disconnected(&why);
            }
            Err(e) => {
                observer.error(&e.to_string());
                next += 1;
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
}

/// One connection: returns why it ended.
async fn session(
    opts: &AgentOptions,
    mut conn: Connection,
    tasks: TaskStream,
    state: &mut AgentState,
    runner: &Arc<dyn Runner>,
    observer: &dyn Observer,
) -> String {
    let (tx, mut rx) = mpsc::channel::<Pushed>(MAX_AGENT_QUEUED_TASKS_COUNT);
    let reader = tokio::spawn(read_tasks(tasks, tx));
    let _abort = AbortOnDrop(reader);
    let info = pb::Upload {
        kind: Some(pb::upload::Kind::Info(opts.info.clone())),
    };
    // The facts must land (the client list and hunt conditions read them): a busy
    // frontend's 503 means wait and send them again, not go on without.
    loop {
        match conn.upload(&info).await {
            Err(e) => return format!("client info: {e}"),
            Ok(reply) if matches!(reply.status, 503 | 408) => {
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
            accept(state, pushed, observer);
        }
        let spool = state.events.as_ref().map(|e| e.spool.clone());
        let has_results = !state.outbox.is_empty();
        let events = spool.filter(|s| s.has_batches());
        if let Some(spool) = events.filter(|_| events_turn || !has_results) {
            events_turn = false;
            if let Err(e) = deliver_event(&mut conn, &spool, state, observer).await {
                return e.to_string();
            }
            continue;
        }
        if has_results {
            events_turn = true;
            uploads += 1;
            let every = opts.drop_connection_every_uploads;
            if every > 0 && uploads % every == 0 {
                let item = state
                    .outbox
                    .front()
                    .expect("outbox is not empty")
                    .to_upload();
                let _ = conn.upload(&item).await;
                return "injected disconnect before the ack".to_string();
            }
            if let Err(e) = deliver_front(&mut conn, state, observer).await {
                return e.to_string();
            }
            continue;
        }
        if state.collecting.is_none() {
            if let Some(task) = state.queue.pop_front() {
                start_collection(state, runner, task);
                continue;
            }
        }
        if let Some(why) = wait_for_work(&mut rx, state, observer).await {
            return why;
        }
    }
}

/// Waits until something needs the session: a pushed message, the running collection
/// finishing, or an event batch sealed. Some(why) when the task stream ended.
async fn wait_for_work(
    rx: &mut mpsc::Receiver<Pushed>,
    state: &mut AgentState,
    observer: &dyn Observer,
) -> Option<String> {
    let spool = state.events.as_ref().map(|e| e.spool.clone());
    let collecting = state.collecting.as_mut().map(|(_, handle)| handle);
    tokio::select! {
        pushed = rx.recv() => match pushed {
            Some(pushed) => accept(state, pushed, observer),
            None => return Some("task stream ended".to_string()),
        },
        outputs = async move {
            match collecting {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        } => {
            let (task, _) = state.collecting.take().expect("a collection was running");
            // A collection that panicked is reported as failed, artifact by artifact.
            let outputs = outputs.unwrap_or_else(|e| {
                task.artifacts
                    .iter()
                    .map(|a| ArtifactOutput {
                        name: a.name.clone(),
                        jsonl: Default::default(),
                        error: Some(format!("collection failed: {e}")),
                        ..Default::default()
                    })
                    .collect()
            });
            state.outbox.add_flow(&task.flow_id, outputs);
        },
        _ = async {
            match &spool {
                Some(spool) => spool.batch_queued().await,
                None => std::future::pending().await,
            }
        } => {}
    }
    None
}

/// Starts a task's collection beside the session (on a blocking thread when the runner
/// blocks; loadgen's synthetic runner answers at once and is queued straight away).
fn start_collection(state: &mut AgentState, runner: &Arc<dyn Runner>, task: pb::Task) {
    if !runner.is_blocking() {
        let outputs = runner.collect(&task, &CollectContext::unlimited());
        state.outbox.add_flow(&task.flow_id, outputs);
        return;
    }
    let runner = runner.clone();
    let running = task.clone();
    let handle =
        tokio::task::spawn_blocking(move || runner.collect(&running, &CollectContext::unlimited()));
    state.collecting = Some((task, handle));
}

/// What the task stream carries that the session acts on.
enum Pushed {
    /// With when its frame came off the stream (µs since the epoch).
    Task(pb::Task, u64),
    EventTable(pb::EventTable),
}

fn accept(state: &mut AgentState, pushed: Pushed, observer: &dyn Observer) {
    match pushed {
        Pushed::Task(task, received_us) => accept_task(state, task, received_us, observer),
        Pushed::EventTable(table) => accept_event_table(state, table),
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

fn accept_task(state: &mut AgentState, task: pb::Task, received_us: u64, observer: &dyn Observer) {
    if state.remember(&task.flow_id) {
        observer.task_received(&task, received_us);
        state.queue.push_back(task);
    }
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
/// Kinds this agent does not know (a newer server) are skipped, not fatal.
async fn read_tasks(mut tasks: TaskStream, tx: mpsc::Sender<Pushed>) {
    while let Ok(Some(msg)) = tasks.next().await {
        let pushed = match msg.kind {
            Some(pb::server_message::Kind::Task(task)) => {
                Pushed::Task(task, crate::clock::now_us())
            }
            Some(pb::server_message::Kind::EventTable(table)) => Pushed::EventTable(table),
            _ => continue,
        };
        if tx.send(pushed).await.is_err() {
            return;
        }
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

/// Sends the outbox's front item and acts on the answer.
async fn deliver_front(
    conn: &mut Connection,
    state: &mut AgentState,
    observer: &dyn Observer,
) -> Result<(), CommsError> {
    let item = state
        .outbox
        .front()
        .expect("caller checked the outbox is not empty")
        .clone();
    let reply = conn.upload(&item.to_upload()).await?;
    let (bytes, rows) = match &item {
        OutItem::Batch(b) => (b.jsonl.len() as u64, b.row_count as u64),
        OutItem::Status(_) => (0, 0),
    };
    let flow_id = match &item {
        OutItem::Batch(b) => b.flow_id.clone(),
        OutItem::Status(s) => s.flow_id.clone(),
    };
    match reply.status {
        200 => {
            let status = reply
                .ack
                .as_ref()
                .map(|a| a.status)
                .unwrap_or(upload_ack::Status::Ok as i32);
            if status == upload_ack::Status::OutOfOrder as i32 {
                // The server lacks batches this agent no longer holds: give the flow up.
                observer.error(&format!(
                    "flow {flow_id}: server expects another batch; dropping the flow"
                ));
                state.outbox.drop_flow(&flow_id);
                return Ok(());
            }
            state.outbox.pop_front();
            observer.uploaded(bytes, rows);
            if let OutItem::Status(s) = &item {
                observer.flow_done(&s.flow_id, s.artifacts.iter().map(|a| a.rows).sum());
            }
        }
        413 => state.outbox.split_front(),
        // Keep the data and wait as told.
        503 | 408 => tokio::time::sleep(overload_pause(&reply)).await,
        status => {
            let message = reply.ack.map(|a| a.message).unwrap_or_default();
            observer.error(&format!(
                "flow {flow_id}: server refused an upload ({status}): {message}"
            ));
            state.outbox.drop_flow(&flow_id);
        }
    }
    Ok(())
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
