//! The dashboard's figures: every frontend the master knows of (role, up, connected
//! agents, this frontend's agent-port rates, the replication link), the fleet total and
//! the limits in force. Built from presence and the metrics counters each tick; the count
//! of known clients comes from the master's client index, or (while the index loads, or
//! without one) from the clients folder on the datastore, listed at most once per
//! `LIVE_KNOWN_CLIENTS_REFRESH` on the blocking pool and shared by every stream.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::rates::Rates;
use crate::api::ApiCtx;
use crate::config::{FrontendRole, ServerConfig};
use crate::datastore::Datastore;
use crate::limits::LIVE_KNOWN_CLIENTS_REFRESH;
use crate::notify::presence::{FrontendView, Presence};
use crate::runtime::offload::offload;

/// What one dashboard stream reads.
pub struct DashboardSource {
    presence: Rc<Presence>,
    config: Arc<ServerConfig>,
    datastore: Datastore,
    /// The master's client index: `known` comes from it once its start-up load is done.
    index: Option<Rc<crate::clients::ClientIndex>>,
    /// This frontend's name: the one whose rates are known.
    this: String,
    max_live_streams: usize,
}

impl DashboardSource {
    pub fn new(ctx: &ApiCtx, max_live_streams: usize) -> Self {
        Self {
            presence: ctx.presence.clone(),
            config: ctx.config.clone(),
            datastore: ctx.datastore.clone(),
            index: ctx.clients.clone(),
            this: ctx.frontend_name.clone(),
            max_live_streams,
        }
    }

    /// `{"frontends":[…],"fleet":{"connected","known"},"limits":{…}}`.
    pub fn figures(&self, rates: &Rates, known: &KnownClients) -> String {
        let indexed = self
            .index
            .as_ref()
            .filter(|i| i.is_complete())
            .map(|i| i.len());
        if indexed.is_none() {
            known.refresh_if_stale(self.datastore.clone());
        }
        let views = self.presence.frontends();
        let links_up = views
            .iter()
            .filter(|v| v.role == FrontendRole::Minion && v.up)
            .count();
        let frontends: Vec<Value> = views
            .iter()
            .map(|view| self.frontend(view, rates, links_up, views.len() - 1))
            .collect();
        let connected = self.presence.connected_count();
        // The folder count lags a new agent by up to a refresh; connected ones are known.
        let known = indexed.or(known.count()).map(|k| k.max(connected));
        json!({
            "frontends": frontends,
            "fleet": { "connected": connected, "known": known },
            "limits": self.limits(),
        })
        .to_string()
    }

    fn frontend(
        &self,
        view: &FrontendView,
        rates: &Rates,
        links_up: usize,
        others: usize,
    ) -> Value {
        let here = *view.name == *self.this;
        // Only this frontend's counters are in this process; a minion reports none.
        let rate = |r: Option<f64>| if here { r } else { None };
        let replication = match view.role {
            FrontendRole::Master => json!({
                "state": "master",
                "links_up": links_up,
                "links_configured": others,
            }),
            FrontendRole::Minion => json!({
                "state": if view.up { "up" } else { "down" },
                "since_ms": view.link_changed.map(wall_ms),
            }),
        };
        json!({
            "name": &*view.name,
            "role": view.role,
            "up": view.up,
            "connected_clients": view.connected_clients,
            "accepts_per_second": rate(rates.accepts_per_second),
            "sheds_per_second": rate(rates.sheds_per_second),
            "upload_503s_per_second": rate(rates.upload_503s_per_second),
            "ingest_mb_per_second": rate(rates.ingest_mb_per_second),
            "flows_finished": view.flows_finished,
            "flows_failed": view.flows_failed,
            "replication": replication,
        })
    }

    /// The limits in force, as the config keys spell them.
    fn limits(&self) -> Value {
        let l = &self.config.limits;
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        json!({
            "concurrency": l.concurrency.get(),
            "concurrency_wait_ms": ms(l.concurrency_wait),
            "max_connections_per_second": l.max_connections_per_second.get(),
            "hunt_recruitment_per_second": l.hunt_recruitment_per_second.get(),
            "max_upload_bytes": l.max_upload_bytes.get(),
            "handshake_timeout_ms": ms(l.handshake_timeout),
            "handshakes_in_flight_per_shard": l.handshakes_in_flight_per_shard.get(),
            "idle_timeout_ms": ms(l.idle_timeout),
            "request_timeout_ms": ms(l.request_timeout),
            "collection_timeout_s": l.collection.timeout_s,
            "collection_max_rows": l.collection.max_rows,
            "collection_max_upload_bytes": l.collection.max_upload_bytes,
            "max_open_files": self.config.frontend.max_open_files,
            "max_live_streams": self.max_live_streams,
        })
    }
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Clients with a folder on the datastore, counted on the blocking pool at most once per
/// `LIVE_KNOWN_CLIENTS_REFRESH`. Cheap to clone (clones share the count).
#[derive(Clone, Default)]
pub struct KnownClients {
    state: Rc<KnownState>,
}

#[derive(Default)]
struct KnownState {
    count: Cell<Option<usize>>,
    counted_at: Cell<Option<Instant>>,
    counting: Cell<bool>,
}

impl KnownClients {
    /// The last count; None until the first one is in.
    pub fn count(&self) -> Option<usize> {
        self.state.count.get()
    }

    /// Starts a count in the background if the last one is stale and none is under way.
    pub fn refresh_if_stale(&self, datastore: Datastore) {
        let state = &self.state;
        let fresh = state
            .counted_at
            .get()
            .is_some_and(|at| at.elapsed() < LIVE_KNOWN_CLIENTS_REFRESH);
        if fresh || state.counting.get() {
            return;
        }
        state.counting.set(true);
        let state = self.state.clone();
        glommio::spawn_local(async move {
            let counted = offload(move || crate::datastore::list_clients(&datastore)).await;
            match counted {
                Ok(ids) => state.count.set(Some(ids.len())),
                Err(e) => tracing::warn!("live dashboard: cannot count known clients: {e}"),
            }
            state.counted_at.set(Some(Instant::now()));
            state.counting.set(false);
        })
        .detach();
    }
}
