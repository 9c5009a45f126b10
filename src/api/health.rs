//! `GET /healthz` and `GET /readyz`: the two questions a load balancer's health check
//! asks, answered without credentials on the master's GUI/API port and on a minion's
//! metrics port (docs/operating.md, "Behind a load balancer").
//!
//! - `/healthz`: 200 `ok` while the process serves requests at all (liveness).
//! - `/readyz`: 200 `ready` while the frontend takes new agents
//!   (`runtime::readiness::is_ready`), 503 `not ready` while it starts or drains.
//!
//! A balancer checks from outside every trust boundary and has no user, so these answer
//! anyone; in return they say nothing else: a fixed word, no version, no counts, no
//! names. Only GET and HEAD of exactly these paths are answered here; anything else
//! (another method, a longer path) goes through authentication like every other route.
//! They are answered before the API's request count and latency histograms, so a
//! balancer probing every second does not dilute the GUI's figures.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};

use crate::api::ApiResponse;
use crate::metrics::metrics;

/// Which question a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// `/healthz`: is the process serving?
    Alive,
    /// `/readyz`: does it take new agents?
    Ready,
}

impl Probe {
    fn of(method: &Method, path: &str) -> Option<Self> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        match path {
            "/healthz" => Some(Self::Alive),
            "/readyz" => Some(Self::Ready),
            _ => None,
        }
    }
}

/// The answer to a health probe, or None when the request is not one (route it as usual).
pub fn answer(method: &Method, path: &str) -> Option<ApiResponse> {
    let probe = Probe::of(method, path)?;
    let m = metrics();
    let (status, word) = match probe {
        Probe::Alive => {
            m.health_alive_answered.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, "ok\n")
        }
        Probe::Ready if crate::runtime::readiness::is_ready() => {
            m.health_ready_answered.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, "ready\n")
        }
        Probe::Ready => {
            m.health_not_ready_answered.fetch_add(1, Ordering::Relaxed);
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    };
    let mut response = crate::api::routes::bytes_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(word.as_bytes()),
    );
    // A cached "ready" would keep a balancer sending agents to a draining frontend.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}

#[cfg(test)]
mod tests {
    //! Goal: only GET/HEAD of the two exact paths are probes; the answers are one word.
    use super::*;

    #[test]
    fn only_the_two_paths_by_get_or_head_are_probes() {
        assert_eq!(Probe::of(&Method::GET, "/healthz"), Some(Probe::Alive));
        assert_eq!(Probe::of(&Method::HEAD, "/readyz"), Some(Probe::Ready));
        assert_eq!(Probe::of(&Method::POST, "/healthz"), None);
        assert_eq!(Probe::of(&Method::GET, "/healthz/"), None);
        assert_eq!(Probe::of(&Method::GET, "/readyz/x"), None);
        assert_eq!(Probe::of(&Method::GET, "/api/v1/healthz"), None);
        assert!(answer(&Method::PUT, "/readyz").is_none());
    }

    #[test]
    fn healthz_says_ok_and_nothing_else() {
        let response = answer(&Method::GET, "/healthz").expect("a probe");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
