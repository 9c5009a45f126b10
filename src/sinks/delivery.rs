//! What a sink kind does with a batch, and what the sender makes of its answer. Each kind
//! (`elastic`, `clickhouse`, `webhook`, `file`) implements `Deliver`; the sender owns
//! retries, backoff and the spool position.

use std::time::Duration;

use super::record::SpoolEvent;

/// The result of one attempt at delivering a batch.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Every event is delivered, except `rejected` the sink refused for good (sending
    /// them again would fail again): the spool moves past the batch.
    Done { rejected: u64 },
    /// Try again after at least `after` (the sink's Retry-After, if any). `keep` names
    /// the events (indices into the batch) still to deliver; none = all of them.
    /// `rejected` were refused for good in this attempt and are not kept.
    Retry {
        keep: Option<Vec<usize>>,
        rejected: u64,
        after: Option<Duration>,
        reason: String,
    },
}

impl Outcome {
    /// A whole-batch failure worth retrying.
    pub fn retry(reason: impl Into<String>, after: Option<Duration>) -> Self {
        Self::Retry {
            keep: None,
            rejected: 0,
            after,
            reason: reason.into(),
        }
    }
}

/// One sink kind's way of delivering a batch. Runs on the sink's sender thread, so it
/// may block (bounded by `SINK_REQUEST_TIMEOUT` per request).
pub trait Deliver: Send {
    fn deliver(&mut self, events: &[SpoolEvent]) -> Outcome;
}

/// How the HTTP sinks read a status for the batch as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Delivered,
    /// The data itself was refused (400, 413, 422): sending it again fails again.
    Rejected,
    /// Anything else: 408, 429, 5xx, but also 401/403/404 — a credentials or address
    /// mistake the operator fixes, after which the spooled events still go out.
    Retry,
}

pub fn classify(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Delivered,
        400 | 413 | 422 => StatusClass::Rejected,
        _ => StatusClass::Retry,
    }
}

/// The outcome of an HTTP answer whose body needs no further reading.
pub fn outcome_of(answer: &super::http::Answer, events: usize) -> Outcome {
    match classify(answer.status) {
        StatusClass::Delivered => Outcome::Done { rejected: 0 },
        StatusClass::Rejected => {
            tracing::warn!(
                status = answer.status,
                answer = %shown(&answer.body),
                "sink refused a batch of {events} events for good"
            );
            Outcome::Done {
                rejected: events as u64,
            }
        }
        StatusClass::Retry => Outcome::retry(
            format!("HTTP {}: {}", answer.status, shown(&answer.body)),
            answer.retry_after,
        ),
    }
}

/// At most 200 characters of a sink's answer, for the log.
pub fn shown(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}
