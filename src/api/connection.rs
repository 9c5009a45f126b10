//! What one GUI/API peer may hold, and for how long (`gui.*` in the config,
//! docs/security/secrets.md): at most `max_connections` connections at once (the rest are
//! closed at accept); a TLS handshake finished within `tls_accept_timeout`; an HTTP/1
//! request's headers complete within `header_timeout` of their first byte; no connection
//! kept with no request in flight for `idle_timeout`. A request counts as in flight until
//! its response body ends, so live views (server-sent events) never idle out. Every
//! connection closed by a limit is counted (`packhunt_gui_connections_closed_total`).
//!
//! Must not: read or route requests (that is `routes.rs`).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};

use crate::config::GuiConnectionLimits;
use crate::limits::GUI_CONNECTION_CHECK_INTERVAL;
use crate::metrics::{metrics, GuiConnectionEnd};
use crate::runtime::observed_read::ReadObserver;

/// GUI/API connections open now, against `max_connections`.
pub struct ConnectionCap {
    open: Rc<Cell<u32>>,
    max: u32,
}

/// One admitted connection's place under the cap, given back on drop.
pub struct CapSlot(Rc<Cell<u32>>);

impl Drop for CapSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
        metrics()
            .gui_connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ConnectionCap {
    pub fn new(limits: &GuiConnectionLimits) -> Self {
        Self {
            open: Rc::new(Cell::new(0)),
            max: limits.max_connections.get(),
        }
    }

    /// A slot for one more connection; None (counted) at the cap.
    pub fn admit(&self) -> Option<CapSlot> {
        let open = self.open.get();
        if open >= self.max {
            metrics().gui_connection_closed(GuiConnectionEnd::OverCap);
            return None;
        }
        self.open.set(open + 1);
        metrics()
            .gui_connections_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(CapSlot(self.open.clone()))
    }
}

/// What one connection's watchdog reads: requests in flight and since when nothing was.
pub struct Watch {
    /// Requests whose response has not ended.
    in_flight: Cell<usize>,
    /// When the connection last had no request in flight (accept, or a response's end).
    idle_since: Cell<Instant>,
    /// When bytes of a request not yet routed first arrived (HTTP/1 only).
    partial_since: Cell<Option<Instant>>,
    /// HTTP/2 peers send frames between requests (window updates, settings acks), so
    /// bytes there are no sign of a request's headers: only the idle timeout applies.
    track_headers: Cell<bool>,
}

impl Watch {
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            in_flight: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            partial_since: Cell::new(None),
            track_headers: Cell::new(true),
        })
    }

    /// TLS is up: idleness counts from now.
    pub fn handshake_done(&self) {
        self.idle_since.set(Instant::now());
    }

    /// The connection speaks HTTP/2 (ALPN `h2`).
    pub fn speaks_h2(&self) {
        self.track_headers.set(false);
    }

    fn bytes_read(&self) {
        if self.track_headers.get()
            && self.in_flight.get() == 0
            && self.partial_since.get().is_none()
        {
            self.partial_since.set(Some(Instant::now()));
        }
    }

    /// A request was routed: in flight until the guard (held by its response body) drops.
    pub fn request_started(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        self.partial_since.set(None);
        InFlight(self.clone())
    }

    /// Resolves when a limit says the connection must close (counted).
    pub async fn expired(&self, limits: GuiConnectionLimits) {
        loop {
            glommio::timer::sleep(GUI_CONNECTION_CHECK_INTERVAL).await;
            if self.in_flight.get() > 0 {
                continue;
            }
            let now = Instant::now();
            if let Some(since) = self.partial_since.get() {
                if now.duration_since(since) >= limits.header_timeout {
                    return metrics().gui_connection_closed(GuiConnectionEnd::HeaderTimeout);
                }
            }
            if now.duration_since(self.idle_since.get()) >= limits.idle_timeout {
                return metrics().gui_connection_closed(GuiConnectionEnd::IdleTimeout);
            }
        }
    }
}

/// One request in flight on a watched connection.
pub struct InFlight(Rc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let watch = &self.0;
        watch.in_flight.set(watch.in_flight.get() - 1);
        if watch.in_flight.get() == 0 {
            watch.idle_since.set(Instant::now());
            watch.partial_since.set(None);
        }
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's plaintext reads tell its `Watch` when bytes arrive (through the
/// runtime's `ObservedRead`, as the agent port's watchers see theirs).
pub struct HeaderWatch(pub Rc<Watch>);

impl ReadObserver for HeaderWatch {
    fn observe(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0.bytes_read();
        }
    }
}
