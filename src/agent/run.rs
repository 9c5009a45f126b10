//! The agent's life: connect to a frontend (random first, rotating on failure, backing
//! off with jitter after each full round of URLs), hold the task stream, run what it
//! pushes, and deliver every result until acknowledged, across reconnects.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use crate::agent::comms::{self, CommsError, Connection, TaskStream};
use crate::agent::outbox::{OutItem, Outbox};
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
}

/// State that outlives a connection.
struct AgentState {
    /// The client event table the server last sent, with its digest (sent back on every
    /// connect so an unchanged table is not sent again). In memory only: a restarted
    /// agent gets its table again.
    event_table: Option<(pb::EventTable, TableDigest)>,
    outbox: Outbox,
    queue: VecDeque<pb::Task>,
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
    opts: AgentOptions,
    runner: Arc<dyn Runner>,
    observer: Arc<dyn Observer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut state = AgentState {
        event_table: None,
        outbox: Outbox::new(opts.max_upload_bytes),
        queue: VecDeque::new(),
        seen: HashSet::new(),
        seen_order: VecDeque::new(),
    };
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
                let why = tokio::select! {
                    why = session(&opts, conn, tasks, &mut state, &runner, observer.as_ref()) => why,
                    _ = stop.changed() => "stopping".to_string(),
                };
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
    loop {
        while let Ok(pushed) = rx.try_recv() {
            accept(state, pushed, runner.as_ref(), observer);
        }
        if !state.outbox.is_empty() {
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
        if let Some(task) = state.queue.pop_front() {
            let outputs = collect(runner.clone(), task.clone()).await;
            state.outbox.add_flow(&task.flow_id, outputs);
            continue;
        }
        match rx.recv().await {
            Some(pushed) => accept(state, pushed, runner.as_ref(), observer),
            None => return "task stream ended".to_string(),
        }
    }
}

/// What the task stream carries that the session acts on.
enum Pushed {
    /// With when its frame came off the stream (µs since the epoch).
    Task(pb::Task, u64),
    EventTable(pb::EventTable),
}

fn accept(state: &mut AgentState, pushed: Pushed, runner: &dyn Runner, observer: &dyn Observer) {
    match pushed {
        Pushed::Task(task, received_us) => accept_task(state, task, received_us, observer),
        Pushed::EventTable(table) => accept_event_table(state, table, runner),
    }
}

/// Keeps the new table and hands it to the runner (which will run its queries).
fn accept_event_table(state: &mut AgentState, table: pb::EventTable, runner: &dyn Runner) {
    let digest = TableDigest::of(&table);
    let names: Vec<&str> = table.queries.iter().map(|q| q.name.as_str()).collect();
    tracing::info!(
        version = table.version,
        queries = ?names,
        "client event table received"
    );
    runner.event_table_changed(&table);
    state.event_table = Some((table, digest));
}

fn accept_task(state: &mut AgentState, task: pb::Task, received_us: u64, observer: &dyn Observer) {
    if state.remember(&task.flow_id) {
        observer.task_received(&task, received_us);
        state.queue.push_back(task);
    }
}

async fn collect(
    runner: Arc<dyn Runner>,
    task: pb::Task,
) -> Vec<crate::agent::outbox::ArtifactOutput> {
    if !runner.is_blocking() {
        return runner.collect(&task);
    }
    tokio::task::spawn_blocking(move || runner.collect(&task))
        .await
        .unwrap_or_default()
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
