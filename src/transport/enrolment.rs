//! The optional enrolment secret (`frontend.enrolment_secret`): when a deployment sets
//! one, an agent must present it in `ENROLMENT_HEADER` on every request, or the request is
//! refused with 403 (counted) before anything else reads it. Anyone who reaches the agent
//! port can make a key and so a client id; the secret narrows enrolment to those who hold
//! the deployment's client config. Compared in constant time, so the answer's timing says
//! nothing about how much of a guess was right.
//!
//! Must not: read a request's body (a refused upload's body is never read).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Request, StatusCode};
use subtle::ConstantTimeEq;

use crate::config::{EnrolmentSecret, ServerConfig};
use crate::metrics::metrics;
use crate::protocol::ENROLMENT_HEADER;

/// Hands `respond` back when the request may go on; otherwise answers 403 and returns
/// None.
pub fn admit<B>(
    config: &ServerConfig,
    request: &Request<B>,
    respond: SendResponse<Bytes>,
) -> Option<SendResponse<Bytes>> {
    let Some(secret) = &config.frontend.enrolment_secret else {
        return Some(respond);
    };
    if presents(secret, request.headers()) {
        return Some(respond);
    }
    metrics().enrolment_refused.fetch_add(1, Ordering::Relaxed);
    refuse(respond);
    None
}

/// Whether `headers` carry `secret` (exactly; compared in constant time).
pub fn presents(secret: &EnrolmentSecret, headers: &http::HeaderMap) -> bool {
    let Some(given) = headers.get(ENROLMENT_HEADER) else {
        return false;
    };
    bool::from(given.as_bytes().ct_eq(secret.as_str().as_bytes()))
}

fn refuse(mut respond: SendResponse<Bytes>) {
    let response = http::Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header("content-type", crate::protocol::CONTENT_TYPE)
        .body(())
        .expect("static response parts are valid");
    let _ = respond.send_response(response, true);
}

#[cfg(test)]
mod tests {
    //! Goal: only the exact secret passes; a prefix, a longer value or none do not.
    use super::*;

    #[test]
    fn only_the_exact_secret_passes() {
        let secret = EnrolmentSecret::parse("0123456789abcdefXYZ").unwrap();
        let mut headers = http::HeaderMap::new();
        assert!(!presents(&secret, &headers));
        for (value, ok) in [
            ("0123456789abcdefXYZ", true),
            ("0123456789abcdefXY", false),
            ("0123456789abcdefXYZ0", false),
            ("0123456789abcdefXYz", false),
            ("", false),
        ] {
            headers.insert(ENROLMENT_HEADER, http::HeaderValue::from_static(value));
            assert_eq!(presents(&secret, &headers), ok, "{value}");
        }
        assert!(EnrolmentSecret::parse("short").is_err());
        assert!(EnrolmentSecret::parse("has a space in it here").is_err());
        let random = EnrolmentSecret::random();
        assert!(EnrolmentSecret::parse(random.as_str()).is_ok());
        assert_eq!(format!("{random:?}"), "EnrolmentSecret(..)");
    }
}
