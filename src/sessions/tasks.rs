//! The push channel: one long-lived response per agent that streams `ServerMessage`
//! frames. Opening it registers the agent on this shard, announces its presence, and
//! delivers every task queued on disk while it was away. After Hello the agent gets its
//! client event table (unless its digest header shows it holds that table already), and a
//! new one whenever the table changes.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::future;
use h2::server::SendResponse;

use crate::datastore::{client_info, flow, Datastore, DatastoreError};
use crate::ids::{ClientId, FlowId};
use crate::limits::{
    CONNECT_READS_PER_TRIP_COUNT, CONNECT_READ_BATCH_WINDOW, CONNECT_READ_TRIPS_IN_FLIGHT_COUNT,
    MAX_TASK_STREAM_QUEUED_BYTES, TASK_STREAM_STALL_TIMEOUT,
};
use crate::metrics::metrics;
use crate::notify::mesh::{CancelledFlows, ShardEvent};
use crate::protocol::event_table::{event_table_frame, FleetTable, TableDigest};
use crate::protocol::{framing, pb};
use crate::runtime::batched_offload::{BatchShape, BatchedOffload};
use crate::runtime::deadline::with_deadline;
use crate::runtime::offload::offload;
use crate::sessions::registry::{AgentTable, Relabelled};
use crate::sessions::shard::ShardCtx;

/// Builds the task frame for a queued flow from its request.json (or, for a hunt
/// recruit not answered yet, its queue entry and hunt document). Blocking: run it
/// through `offload`.
pub fn task_frame(
    datastore: &Datastore,
    client_id: &ClientId,
    flow_id: &FlowId,
) -> Result<Bytes, DatastoreError> {
    let client = datastore.client(client_id);
    Ok(crate::protocol::tasks::task_frame(
        flow::queued_request(&client, flow_id)?.into_task(),
    ))
}

/// Pushes a flow to the client if it is connected to this shard: `frame` when the
/// scheduler sent it along (no disk read), else built from request.json.
pub async fn deliver(ctx: &ShardCtx, client_id: &ClientId, flow_id: &FlowId, frame: Option<Bytes>) {
    if !ctx.sessions.is_connected(client_id) {
        return;
    }
    if let Some(frame) = frame {
        return push(ctx, client_id, flow_id, frame);
    }
    let (datastore, client, flow) = (ctx.datastore.clone(), client_id.clone(), flow_id.clone());
    match offload(move || task_frame(&datastore, &client, &flow)).await {
        Ok(frame) => push(ctx, client_id, flow_id, frame),
        Err(e) => tracing::warn!(client = %client_id, flow = %flow_id, "cannot build task: {e}"),
    }
}

fn push(ctx: &ShardCtx, client_id: &ClientId, flow_id: &FlowId, frame: Bytes) {
    if ctx.sessions.push(client_id, flow_id, frame) {
        metrics().tasks_pushed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The hub says these flows were cancelled: each agent connected here gets a Cancel frame
/// for its flow, whether or not this stream pushed the task (the agent may hold it from an
/// earlier connection).
pub fn cancel(ctx: &ShardCtx, cancelled: &CancelledFlows) {
    let m = metrics();
    for (client_id, flow_id) in &cancelled.flows {
        if !ctx.sessions.is_connected(client_id) {
            continue;
        }
        let frame = framing::encode(&pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Cancel(pb::Cancel {
                flow_id: flow_id.to_string(),
                reason: cancelled.reason.clone(),
            })),
        });
        match ctx.sessions.push_control(client_id, flow_id, frame) {
            Some(true) => m.cancel_frames_pushed.fetch_add(1, Ordering::Relaxed),
            // Its stream is not being read: the flow is closed on disk, so the agent is
            // refused at its next upload for it.
            Some(false) => m.cancel_frames_dropped.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }
}

/// How a task stream ended, for its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The agent left, or a newer stream replaced this one: presence was told (or is the
    /// newer stream's).
    Over,
    /// The shard drains and ended it (the agent was told to move). Presence is told by
    /// the connection once it closes (`report_left`), after the uploads it still
    /// finishes: a flow's end reported after its agent "left" would be refused by the
    /// master.
    Moved { session: u64 },
    /// The shard drains: refused with 503 before it began.
    Refused,
}

/// Serves `GET /agent/v1/tasks` until the agent goes away or the shard stops. `held` is
/// the digest of the event table the agent says it holds (its request header).
pub async fn serve_task_stream(
    ctx: Rc<ShardCtx>,
    client_id: ClientId,
    held: Option<TableDigest>,
    mut respond: SendResponse<Bytes>,
) -> StreamEnd {
    let session_id = ctx.next_session_id();
    let Some(mut registration) = ctx.sessions.register(&client_id, session_id) else {
        metrics()
            .drain_task_streams_refused
            .fetch_add(1, Ordering::Relaxed);
        refuse_while_draining(respond);
        return StreamEnd::Refused;
    };
    let connected = ShardEvent::Connected {
        client_id: client_id.clone(),
        shard: ctx.shard,
        session: session_id,
    };
    let _ = ctx.events.send(connected).await;

    let response = http::Response::builder()
        .status(200)
        .header("content-type", crate::protocol::CONTENT_TYPE)
        .body(())
        .expect("static response parts are valid");
    if let Ok(mut stream) = respond.send_response(response, false) {
        let hello = pb::Hello {
            client_id: client_id.to_string(),
            frontend: ctx.frontend_name.clone(),
        };
        let hello = framing::encode(&pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Hello(hello)),
        });
        if stream.send_data(hello, false).is_ok() {
            let (pending, labels) = read_at_connect(&ctx, &client_id).await;
            let labels = match ctx.sessions.relabelled(&client_id, session_id) {
                Some(newer) => newer.to_vec(),
                None => labels,
            };
            let table = agent_table(&ctx, labels, held);
            let sent = match table.frame {
                Some(frame) => stream.send_data(frame, false).is_ok(),
                None => true,
            };
            if sent {
                ctx.sessions
                    .set_event_table(&client_id, session_id, table.state);
                push_all(&ctx, &client_id, pending);
                pump(&mut registration.frames, &mut stream).await;
            }
        }
    }

    if ctx.sessions.unregister(&client_id, session_id) {
        report_left(&ctx, client_id, session_id).await;
        return StreamEnd::Over;
    }
    if ctx.sessions.is_closed() {
        return StreamEnd::Moved {
            session: session_id,
        };
    }
    StreamEnd::Over
}

/// Tells the hub (and through it the master) that the agent's stream `session` here is
/// gone.
pub async fn report_left(ctx: &ShardCtx, client_id: ClientId, session: u64) {
    let gone = ShardEvent::Disconnected {
        client_id,
        shard: ctx.shard,
        session,
    };
    let _ = ctx.events.send(gone).await;
}

/// 503 to a task stream opened on a draining shard: the agent goes to its next frontend.
fn refuse_while_draining(mut respond: SendResponse<Bytes>) {
    let response = http::Response::builder()
        .status(http::StatusCode::SERVICE_UNAVAILABLE)
        .header("content-type", crate::protocol::CONTENT_TYPE)
        .body(())
        .expect("static response parts are valid");
    let _ = respond.send_response(response, true);
}

/// Pushes the tasks queued on disk for every agent connected to this shard (after
/// notifications may have been lost). Sequential: one directory listing at a time, so a
/// rescan of thousands of agents does not flood the blocking pool or the NFS server.
pub async fn rescan(ctx: &ShardCtx) {
    for client_id in ctx.sessions.client_ids() {
        if ctx.sessions.is_connected(&client_id) {
            deliver_pending(ctx, &client_id).await;
        }
    }
}

/// The frames of the tasks queued for a client, or why they could not be listed.
type PendingFrames = Result<Vec<(FlowId, Bytes)>, DatastoreError>;

/// Tasks queued on disk while the agent was away (or before this stream registered).
async fn deliver_pending(ctx: &ShardCtx, client_id: &ClientId) {
    let (datastore, client) = (ctx.datastore.clone(), client_id.clone());
    let frames = offload(move || pending_frames(&datastore, &client)).await;
    push_all(ctx, client_id, frames);
}

/// Blocking: the frames of every task queued for `client`.
fn pending_frames(datastore: &Datastore, client: &ClientId) -> PendingFrames {
    let queued = flow::pending_tasks(&datastore.client(client))?;
    let frames = queued
        .into_iter()
        .filter_map(|f| task_frame(datastore, client, &f).ok().map(|b| (f, b)));
    Ok(frames.collect())
}

fn push_all(ctx: &ShardCtx, client_id: &ClientId, frames: PendingFrames) {
    match frames {
        Ok(frames) => frames
            .into_iter()
            .for_each(|(flow_id, frame)| push(ctx, client_id, &flow_id, frame)),
        Err(e) => tracing::warn!(client = %client_id, "cannot list queued tasks: {e}"),
    }
}

/// What a stream opening reads from disk: the queued tasks and the agent's labels (for
/// its event table).
pub struct AtConnect {
    pending: PendingFrames,
    labels: Result<Option<Vec<String>>, DatastoreError>,
}

/// A shard's stream openings share blocking-pool trips for their reads (a storm made one
/// trip per connection).
pub type ConnectReads = BatchedOffload<ClientId, AtConnect>;

pub fn connect_reads(datastore: Datastore) -> ConnectReads {
    let shape = BatchShape {
        window: CONNECT_READ_BATCH_WINDOW,
        max_per_trip: CONNECT_READS_PER_TRIP_COUNT,
        max_in_flight: CONNECT_READ_TRIPS_IN_FLIGHT_COUNT,
    };
    BatchedOffload::new(shape, move |client: &ClientId| AtConnect {
        pending: pending_frames(&datastore, client),
        labels: client_info::read_labels(&datastore.client(client)),
    })
}

/// Reads what a stream opening needs, batched with other openings on this shard. Labels
/// that cannot be read count as none (warned): the agent gets the `all` entries and its
/// labels' entries on its next connect.
async fn read_at_connect(ctx: &ShardCtx, client_id: &ClientId) -> (PendingFrames, Vec<String>) {
    let AtConnect { pending, labels } = match ctx.connect_reads.run(client_id.clone()).await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(client = %client_id, "cannot read queued tasks and labels: {e}");
            return (Ok(Vec::new()), Vec::new());
        }
    };
    let labels = labels.unwrap_or_else(|e| {
        tracing::warn!(client = %client_id, "cannot read labels: {e}");
        None
    });
    (pending, labels.unwrap_or_default())
}

/// The event table frame a stream opening sends, if any, and what the shard then records.
struct ConnectTable {
    frame: Option<Bytes>,
    state: AgentTable,
}

/// The agent's merged table from the shard's latest one; no frame when the shard holds
/// none yet (the hub's hand-off pushes it) or the agent's digest shows it has it.
fn agent_table(ctx: &ShardCtx, labels: Vec<String>, held: Option<TableDigest>) -> ConnectTable {
    let labels: Rc<[String]> = labels.into();
    let Some(table) = ctx.event_table() else {
        let state = AgentTable {
            labels,
            digest: held,
        };
        return ConnectTable { frame: None, state };
    };
    let own = table.merged_for(&labels);
    let digest = TableDigest::of(&own);
    let m = metrics();
    let frame = if held == Some(digest) {
        m.event_table_frames_skipped.fetch_add(1, Ordering::Relaxed);
        None
    } else {
        m.event_table_frames_sent.fetch_add(1, Ordering::Relaxed);
        Some(event_table_frame(own))
    };
    let state = AgentTable {
        labels,
        digest: Some(digest),
    };
    ConnectTable { frame, state }
}

/// An operator changed `client_id`'s labels: if it is connected here, send it its new
/// merged table when that differs from the one it holds.
pub fn labels_changed(ctx: &ShardCtx, client_id: &ClientId, labels: Arc<[String]>) {
    let table = ctx.event_table();
    let labels: Rc<[String]> = labels.iter().cloned().collect();
    let m = metrics();
    match ctx.sessions.relabel(client_id, labels, table.as_deref()) {
        Some(Relabelled::Queued) => m.event_table_frames_sent.fetch_add(1, Ordering::Relaxed),
        Some(Relabelled::AlreadyHeld) => {
            m.event_table_frames_skipped.fetch_add(1, Ordering::Relaxed)
        }
        Some(Relabelled::QueueFull) | None => 0,
    };
}

/// The hub handed over a client event table: hold it if it is newer, and send every
/// connected agent whose merged table it changes its new one.
pub fn event_table_changed(ctx: &ShardCtx, table: Arc<FleetTable>) {
    if !ctx.hold_event_table(table.clone()) {
        return;
    }
    let (sent, held) = ctx.sessions.offer_event_table(&table);
    let m = metrics();
    m.event_table_frames_sent.fetch_add(sent, Ordering::Relaxed);
    m.event_table_frames_skipped
        .fetch_add(held, Ordering::Relaxed);
    let version = table.version;
    tracing::debug!(shard = ctx.shard, version, sent, held, "event table pushed");
}

/// Forwards frames until the registry closes the queue or the agent resets the stream,
/// within HTTP/2 flow control: h2 is handed only as many bytes as the agent's window and
/// its send buffer take (`poll_capacity`), so an agent that stops reading grows nothing
/// in h2. The pump takes frames off the registry's queue while it holds less than
/// `MAX_TASK_STREAM_QUEUED_BYTES` (counted in `packhunt_agentport_task_bytes_queued`);
/// beyond, frames wait in that count-bounded queue. Holding the limit with nothing taken
/// by the agent for `TASK_STREAM_STALL_TIMEOUT`, the stream is reset: its tasks wait on
/// disk for the agent's next connect (they are pushed from the datastore then).
async fn pump(
    frames: &mut futures::channel::mpsc::Receiver<Bytes>,
    stream: &mut h2::SendStream<Bytes>,
) {
    let mut queue = Queued::default();
    let ended = loop {
        let mut progressed = false;
        let step = future::poll_fn(|cx| pump_step(cx, frames, stream, &mut queue, &mut progressed));
        if let Some(ended) = with_deadline(TASK_STREAM_STALL_TIMEOUT, step).await {
            break ended;
        }
        if !progressed && queue.bytes >= MAX_TASK_STREAM_QUEUED_BYTES {
            break PumpEnd::Stalled;
        }
    };
    if ended == PumpEnd::Stalled {
        metrics()
            .agentport_task_streams_stalled
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("task stream not read; ended with its tasks left on disk");
        stream.send_reset(h2::Reason::CANCEL);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum PumpEnd {
    /// The registry closed the queue and everything was handed to h2.
    Closed,
    /// The agent reset the stream or the connection went away.
    Gone,
    /// The agent did not read: `MAX_TASK_STREAM_QUEUED_BYTES` were queued and none taken
    /// for `TASK_STREAM_STALL_TIMEOUT`.
    Stalled,
}

/// Frames taken from the registry's queue and not yet handed to h2.
#[derive(Default)]
struct Queued {
    frames: std::collections::VecDeque<Bytes>,
    bytes: usize,
}

impl Queued {
    fn push(&mut self, frame: Bytes) {
        self.gauge(frame.len() as i64);
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Takes up to `max` bytes off the front (a frame may go to h2 in pieces).
    fn take(&mut self, max: usize) -> Option<Bytes> {
        let front = self.frames.front_mut()?;
        let piece = if front.len() <= max {
            self.frames.pop_front()?
        } else {
            front.split_to(max)
        };
        self.bytes -= piece.len();
        self.gauge(-(piece.len() as i64));
        Some(piece)
    }

    fn gauge(&self, delta: i64) {
        metrics()
            .agentport_task_bytes_queued
            .fetch_add(delta, Ordering::Relaxed);
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.gauge(-(self.bytes as i64));
    }
}

fn pump_step(
    cx: &mut std::task::Context<'_>,
    frames: &mut futures::channel::mpsc::Receiver<Bytes>,
    stream: &mut h2::SendStream<Bytes>,
    queue: &mut Queued,
    progressed: &mut bool,
) -> std::task::Poll<PumpEnd> {
    use futures::StreamExt;
    use std::task::Poll;
    let mut closed = false;
    // Until neither side moves: sending makes room to take more frames, and taking
    // frames gives more to send.
    loop {
        let mut moved = false;
        while queue.bytes < MAX_TASK_STREAM_QUEUED_BYTES {
            match frames.poll_next_unpin(cx) {
                Poll::Ready(Some(frame)) => {
                    queue.push(frame);
                    moved = true;
                }
                Poll::Ready(None) => {
                    closed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        while queue.bytes > 0 {
            let capacity = stream.capacity();
            if capacity == 0 {
                stream.reserve_capacity(queue.bytes);
                match stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                        return Poll::Ready(PumpEnd::Gone)
                    }
                }
            }
            let Some(piece) = queue.take(capacity) else {
                break;
            };
            if stream.send_data(piece, false).is_err() {
                return Poll::Ready(PumpEnd::Gone);
            }
            *progressed = true;
            moved = true;
        }
        if !moved {
            break;
        }
    }
    if closed && queue.bytes == 0 {
        let _ = stream.send_data(Bytes::new(), true);
        return Poll::Ready(PumpEnd::Closed);
    }
    if stream.poll_reset(cx).is_ready() {
        return Poll::Ready(PumpEnd::Gone);
    }
    Poll::Pending
}
