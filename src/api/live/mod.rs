//! `GET /api/v1/live/...`: server-sent events for the GUI's live views (docs/gui/live.md).
//! Each stream is a timer task on the priority executor that, about once a second, builds
//! its figures from in-memory state (presence, metrics counters, hunt counters; never a
//! datastore scan per tick) and queues one `data: <json>` event when they changed, or a
//! `: keepalive` comment when nothing changed for a while. The body the connection sends
//! is the receiving end of that bounded queue, so a stream ends when the client goes away
//! (the queue's receiver is dropped), when the frontend stops, or when its client stopped
//! reading for long.
//!
//! Owns: the live streams, their bound and their figures. Must not: read the datastore
//! per tick, touch a session, or let a slow browser hold memory.

mod dashboard;
mod rates;
mod sse;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::future::{self, Either};
use http::{header, StatusCode};
use serde_json::json;

use super::routes::{ApiError, ApiResult};
use super::{ApiBody, ApiCtx};
use crate::datastore::Datastore;
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::{
    LIVE_STREAM_KEEPALIVE, LIVE_STREAM_STALLED_END, LIVE_STREAM_TICK, MAX_LIVE_HUNTS_LISTED_COUNT,
    MAX_LIVE_STREAMS_COUNT, MAX_LIVE_STREAM_QUEUED_EVENTS_COUNT,
};
use crate::metrics::metrics;
use crate::runtime::offload::offload;
use crate::runtime::shutdown::ShutdownSignal;

pub use dashboard::KnownClients;
pub use rates::{CounterSample, Rates};

pub const CONTENT_TYPE: &str = "text/event-stream";

/// The live streams of one GUI/API server: their bound, the shutdown that ends them, and
/// what they share (one rate sampler and one count of known clients for every stream).
/// Cheap to clone; lives on the priority executor.
#[derive(Clone)]
pub struct LiveStreams {
    shared: Rc<Shared>,
}

struct Shared {
    shutdown: ShutdownSignal,
    max_streams: usize,
    /// Invariant: the number of stream tasks alive (each holds one `StreamSlot`).
    open: Cell<usize>,
    rates: rates::RateSampler,
    known: dashboard::KnownClients,
}

impl LiveStreams {
    pub fn new(shutdown: ShutdownSignal) -> Self {
        Self::with_max_streams(shutdown, MAX_LIVE_STREAMS_COUNT)
    }

    pub fn with_max_streams(shutdown: ShutdownSignal, max_streams: usize) -> Self {
        Self {
            shared: Rc::new(Shared {
                shutdown,
                max_streams,
                open: Cell::new(0),
                rates: rates::RateSampler::new(),
                known: dashboard::KnownClients::default(),
            }),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.shared.open.get()
    }

    pub fn max_streams(&self) -> usize {
        self.shared.max_streams
    }

    /// Waits until every stream has let go, or `limit` passed (the frontend is stopping:
    /// each stream task sees the shutdown at its next tick and ends its body).
    pub async fn wait_ended(&self, limit: std::time::Duration) {
        let busy = || self.open() > 0;
        crate::runtime::deadline::idle_within(limit, LIVE_STREAMS_GONE_POLL_INTERVAL, busy).await;
    }

    /// A slot for one more stream, or None at the bound.
    fn take_slot(&self) -> Option<StreamSlot> {
        let open = self.shared.open.get();
        if open >= self.shared.max_streams {
            metrics().gui_live_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.shared.open.set(open + 1);
        metrics().gui_live_streams.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot {
            shared: self.shared.clone(),
        })
    }
}

/// How often a stopping frontend looks whether every live stream has let go.
const LIVE_STREAMS_GONE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// One stream's place under the bound, given back when its task ends.
struct StreamSlot {
    shared: Rc<Shared>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let open = self.shared.open.get();
        debug_assert!(open > 0, "a slot is given back once");
        self.shared.open.set(open.saturating_sub(1));
        metrics().gui_live_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a stream shows: built anew at every tick from in-memory state, except a
/// collection's status, which lives on the datastore (written by whichever frontend holds
/// the agent) and is read in the blocking pool.
enum Source {
    Dashboard(dashboard::DashboardSource),
    Hunts(Rc<crate::hunts::Hunts>),
    Hunt(Rc<crate::hunts::Hunts>, HuntId),
    Collection(Datastore, ClientId, FlowId),
}

impl Source {
    /// The event's JSON, or None when there is nothing to show (a hunt or collection that
    /// vanished).
    async fn figures(&self, live: &Shared) -> Option<String> {
        match self {
            Self::Dashboard(source) => Some(source.figures(&live.rates.rates(), &live.known)),
            Self::Hunts(hunts) => Some(hunts_figures(hunts)),
            Self::Hunt(hunts, id) => {
                let (doc, stats) = hunts.get(id)?;
                Some(super::hunts::hunt_json(&doc, &stats).to_string())
            }
            Self::Collection(ds, client, flow) => {
                let (ds, client, flow) = (ds.clone(), client.clone(), flow.clone());
                let status = offload(move || super::routes::live_status(&ds, &client, &flow)).await;
                match status {
                    Ok(doc) => {
                        Some(serde_json::to_string(&doc).expect("status documents serialise"))
                    }
                    Err(ApiError::Datastore(e)) if e.is_not_found() => None,
                    // A transient read failure (a document being replaced on a network
                    // filesystem): said in the event, the next tick tries again.
                    Err(e) => Some(json!({ "error": e.to_string() }).to_string()),
                }
            }
        }
    }
}

/// `GET /api/v1/live/clients/{client}/collections/{flow}`: the collection's status as
/// `GET .../collections/{flow}` answers it, whenever it changes; 404 for one that does not
/// exist.
pub async fn collection(ctx: &ApiCtx, client: &str, flow: &str) -> ApiResult {
    let (client, flow) = (ClientId::parse(client)?, FlowId::parse(flow)?);
    let (ds, c, f) = (ctx.datastore.clone(), client.clone(), flow.clone());
    offload(move || super::routes::live_status(&ds, &c, &f)).await?;
    open_stream(ctx, Source::Collection(ctx.datastore.clone(), client, flow))
}

/// `GET /api/v1/live/dashboard`.
pub fn dashboard(ctx: &ApiCtx) -> ApiResult {
    let source = dashboard::DashboardSource::new(ctx, ctx.live.max_streams());
    open_stream(ctx, Source::Dashboard(source))
}

/// `GET /api/v1/live/hunts`.
pub fn hunts(ctx: &ApiCtx) -> ApiResult {
    open_stream(ctx, Source::Hunts(hunts_of(ctx)?))
}

/// `GET /api/v1/live/hunts/{id}`: 404 for a hunt that does not exist.
pub fn hunt(ctx: &ApiCtx, id: &str) -> ApiResult {
    let id = HuntId::parse(id)?;
    let hunts = hunts_of(ctx)?;
    if hunts.get(&id).is_none() {
        return Err(ApiError::NotFound(format!("no hunt {id}")));
    }
    open_stream(ctx, Source::Hunt(hunts, id))
}

fn hunts_of(ctx: &ApiCtx) -> Result<Rc<crate::hunts::Hunts>, ApiError> {
    ctx.hunts.clone().ok_or_else(|| {
        ApiError::Unavailable("hunts are not available on this frontend (see its log)".into())
    })
}

/// `{"time_ms","total","hunts":[<hunt>…]}`, newest first, at most
/// `MAX_LIVE_HUNTS_LISTED_COUNT` of them.
fn hunts_figures(hunts: &crate::hunts::Hunts) -> String {
    let mut docs = hunts.docs();
    let total = docs.len();
    docs.sort_by(|a, b| {
        (b.0.create_time_ms, &b.0.hunt_id).cmp(&(a.0.create_time_ms, &a.0.hunt_id))
    });
    let listed: Vec<serde_json::Value> = docs
        .iter()
        .take(MAX_LIVE_HUNTS_LISTED_COUNT)
        .map(|(doc, stats)| super::hunts::hunt_json(doc, stats))
        .collect();
    json!({ "total": total, "hunts": listed }).to_string()
}

/// Takes a slot (503 at the bound), starts the stream's task and answers with its body.
fn open_stream(ctx: &ApiCtx, source: Source) -> ApiResult {
    let slot = ctx.live.take_slot().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "{} live streams are open, the most this frontend serves; close a tab or try \
             again later",
            ctx.live.max_streams()
        ))
    })?;
    let (tx, rx) = futures::channel::mpsc::channel::<Bytes>(MAX_LIVE_STREAM_QUEUED_EVENTS_COUNT);
    glommio::spawn_local(run_stream(source, slot, tx)).detach();
    let response = hyper::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-store")
        .body(ApiBody::Streamed(Box::pin(rx)))
        .expect("static response parts are valid");
    Ok(response)
}

/// The stream's timer: one event when the figures changed, a keepalive when nothing was
/// sent for `LIVE_STREAM_KEEPALIVE`; ends on shutdown, when the client went away, or when
/// the client has not read for `LIVE_STREAM_STALLED_END`.
async fn run_stream(
    source: Source,
    slot: StreamSlot,
    mut tx: futures::channel::mpsc::Sender<Bytes>,
) {
    let live = slot.shared.clone();
    let mut shutdown = live.shutdown.clone();
    let mut last_sent: Option<String> = None;
    let mut last_write = Instant::now();
    let mut last_read = Instant::now();
    // The client's reconnect delay first: a restarted frontend is found again.
    let mut pending = Some(sse::retry_field(sse::RECONNECT_DELAY));
    loop {
        let figures = source.figures(&live).await;
        if figures.is_none() || figures != last_sent {
            let event = match &figures {
                Some(json) => sse::data_event(&with_time(json)),
                None => sse::end_event("gone"),
            };
            let head = pending.clone().unwrap_or_default();
            match offer(&mut tx, sse::join(head, event)) {
                Offer::Queued => {
                    pending = None;
                    metrics().gui_live_events.fetch_add(1, Ordering::Relaxed);
                    last_sent = figures.clone();
                    (last_write, last_read) = (Instant::now(), Instant::now());
                }
                Offer::Full => {}
                Offer::Gone => return,
            }
            if figures.is_none() {
                return;
            }
        } else if last_write.elapsed() >= LIVE_STREAM_KEEPALIVE {
            match offer(&mut tx, sse::keepalive()) {
                Offer::Queued => (last_write, last_read) = (Instant::now(), Instant::now()),
                Offer::Full => {}
                Offer::Gone => return,
            }
        }
        if last_read.elapsed() >= LIVE_STREAM_STALLED_END {
            metrics().gui_live_stalled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let tick = glommio::timer::sleep(LIVE_STREAM_TICK);
        futures::pin_mut!(tick);
        match future::select(tick, shutdown).await {
            Either::Left((_, signal)) => shutdown = signal,
            Either::Right(_) => return,
        }
        if tx.is_closed() {
            return;
        }
    }
}

enum Offer {
    Queued,
    /// The client reads slower than a second per event: this tick is skipped (the next
    /// one carries newer figures anyway).
    Full,
    Gone,
}

fn offer(tx: &mut futures::channel::mpsc::Sender<Bytes>, bytes: Bytes) -> Offer {
    match tx.try_send(bytes) {
        Ok(()) => Offer::Queued,
        Err(e) if e.is_full() => {
            metrics().gui_live_skipped.fetch_add(1, Ordering::Relaxed);
            Offer::Full
        }
        Err(_) => Offer::Gone,
    }
}

/// The figures with the time they were taken, first: `{"time_ms":T,…}`. Only objects are
/// built here, so the splice is into `{`.
fn with_time(json: &str) -> String {
    debug_assert!(json.starts_with('{'), "figures are JSON objects");
    let rest = &json[1..];
    let comma = if rest.starts_with('}') { "" } else { "," };
    format!("{{\"time_ms\":{}{comma}{rest}", crate::clock::now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the time goes first into any object, empty or not, and the result is JSON.
    #[test]
    fn time_is_spliced_into_objects() {
        let v: serde_json::Value = serde_json::from_str(&with_time("{\"a\":1}")).unwrap();
        assert_eq!(v["a"], 1);
        assert!(v["time_ms"].as_u64().unwrap() > 0);
        let v: serde_json::Value = serde_json::from_str(&with_time("{}")).unwrap();
        assert!(v["time_ms"].is_u64());
    }
}
