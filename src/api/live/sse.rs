//! The `text/event-stream` framing (WHATWG HTML, "Server-sent events"): a `data:` field
//! per line of the payload, a blank line ending the event, `:` comments as keepalives.
//! Our payloads are one-line JSON, so each event is one `data:` line.

use std::time::Duration;

use bytes::Bytes;

/// What the browser waits before reconnecting a stream that ended (a frontend restart):
/// long enough not to hammer a frontend that is starting, short enough to look live.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(3);

/// `data: <json>\n\n`. A payload with a line break is split over several `data:` lines,
/// which the browser joins back with `\n` (serde_json never writes one, but a payload
/// must not be able to end the event early).
pub fn data_event(json: &str) -> Bytes {
    let mut out = String::with_capacity(json.len() + 8);
    for line in json.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// `event: end` with the reason: the stream has nothing more to show (the browser's
/// EventSource should close rather than reconnect).
pub fn end_event(reason: &str) -> Bytes {
    let reason = serde_json::to_string(reason).expect("strings serialise");
    Bytes::from(format!("event: end\ndata: {{\"end\":{reason}}}\n\n"))
}

/// A comment line: keeps proxies and the browser from timing the stream out.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

/// `retry: <ms>\n\n`: sets the browser's reconnect delay.
pub fn retry_field(delay: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", delay.as_millis()))
}

pub fn join(head: Bytes, event: Bytes) -> Bytes {
    if head.is_empty() {
        return event;
    }
    let mut out = Vec::with_capacity(head.len() + event.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&event);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: one data line per payload line and a blank line after; comments and retry
    // are their own blocks.
    #[test]
    fn frames_events() {
        assert_eq!(&data_event("{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&data_event("x\ny")[..], b"data: x\ndata: y\n\n");
        assert_eq!(&keepalive()[..], b": keepalive\n\n");
        assert_eq!(&retry_field(RECONNECT_DELAY)[..], b"retry: 3000\n\n");
        assert_eq!(
            &end_event("gone \"x\"")[..],
            b"event: end\ndata: {\"end\":\"gone \\\"x\\\"\"}\n\n"
        );
        assert_eq!(&join(Bytes::new(), keepalive())[..], b": keepalive\n\n");
    }
}
