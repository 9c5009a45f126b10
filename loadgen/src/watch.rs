//! `--watch-artifact A`: follows `GET /api/v1/events/watch?artifact=A` on the master (one
//! JSON object per line: `client_id`, `artifact`, `time_ms`, `row`; a last line may be
//! `{"end": reason}`) for the whole run, and measures how late each event arrives:
//! receive time minus the event's own `time_ms` (same host, same clock), in an HDR
//! histogram. A stream that ends or fails is opened again after a pause.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use tokio::sync::watch;

use crate::api::ApiTarget;

/// Pause before the watch is opened again after it ended or failed.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);
/// Longest line accepted from the stream: an event row is at most one upload (5 MiB by
/// default) and its envelope; a longer line means a broken stream.
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

pub struct WatchOutcome {
    pub artifact: String,
    pub events_seen: u64,
    /// Receive time minus `time_ms`, µs (at least 1).
    pub lag_us: Histogram<u64>,
    /// Times the stream was opened with a 200.
    pub opened: u64,
    /// The last `{"end": reason}` the server sent, if any.
    pub end_reason: Option<String>,
    /// The first failure (refused, unreadable), if any.
    pub error: Option<String>,
}

/// Watches until `stop` turns true.
pub async fn watch(
    target: ApiTarget,
    artifact: String,
    mut stop: watch::Receiver<bool>,
) -> WatchOutcome {
    let mut outcome = WatchOutcome {
        artifact: artifact.clone(),
        events_seen: 0,
        lag_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"),
        opened: 0,
        end_reason: None,
        error: None,
    };
    while !*stop.borrow() {
        let followed = tokio::select! {
            r = follow(&target, &artifact, &mut outcome) => r,
            _ = stop.changed() => Ok(()),
        };
        if let Err(e) = followed {
            if outcome.error.is_none() {
                eprintln!("loadgen: watching {artifact}: {e:#}");
                outcome.error = Some(format!("{e:#}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REOPEN_PAUSE) => {}
            _ = stop.changed() => {}
        }
    }
    outcome
}

/// One watch request, read to its end.
async fn follow(target: &ApiTarget, artifact: &str, outcome: &mut WatchOutcome) -> Result<()> {
    let mut send = crate::api::connect_http1::<Empty<bytes::Bytes>>(target).await?;
    let mut req = hyper::Request::builder()
        .method("GET")
        .uri(format!(
            "/api/v1/events/watch?artifact={}",
            query_escape(artifact)
        ))
        .header("host", &target.host)
        .header("accept", "application/x-ndjson");
    if let Some(auth) = target.authorization() {
        req = req.header("authorization", auth);
    }
    let resp = send
        .send_request(req.body(Empty::<bytes::Bytes>::new())?)
        .await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    if status != 200 {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "watch answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    outcome.opened += 1;
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("reading the watch stream")?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(at) = memchr_newline(&pending) {
            let line = pending.split_to(at + 1);
            if take_line(&line[..at], outcome)? {
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE_BYTES {
            bail!("a watch line longer than {MAX_LINE_BYTES} bytes");
        }
    }
    Ok(())
}

/// Counts one line; true when it was the stream's `end`.
fn take_line(line: &[u8], outcome: &mut WatchOutcome) -> Result<bool> {
    let received_us = packhunt::clock::now_us();
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).context("a watch line that is not JSON")?;
    if let Some(end) = value.get("end") {
        outcome.end_reason = Some(end.as_str().map_or_else(|| end.to_string(), String::from));
        return Ok(true);
    }
    let time_ms = value["time_ms"]
        .as_u64()
        .context("a watch event without time_ms")?;
    outcome.events_seen += 1;
    let lag_us = received_us
        .saturating_sub(time_ms.saturating_mul(1000))
        .max(1);
    let _ = outcome.lag_us.record(lag_us);
    Ok(false)
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Artifact names are letters, digits and dots; anything else is percent-encoded.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Goal: events are counted with their lag and the end line stops the stream.
    //! Method: feed lines as the endpoint's contract shapes them.

    use super::*;

    #[test]
    fn lines_are_counted_and_end_stops() {
        let mut outcome = WatchOutcome {
            artifact: "A".into(),
            events_seen: 0,
            lag_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
            opened: 0,
            end_reason: None,
            error: None,
        };
        let now_ms = packhunt::clock::now_ms();
        let event = format!(
            r#"{{"client_id":"C.1","artifact":"A","time_ms":{},"row":{{"x":1}}}}"#,
            now_ms - 2_000
        );
        assert!(!take_line(event.as_bytes(), &mut outcome).unwrap());
        assert!(!take_line(b"  ", &mut outcome).unwrap());
        assert!(take_line(br#"{"end":"shutting down"}"#, &mut outcome).unwrap());
        assert_eq!(outcome.events_seen, 1);
        assert!(outcome.lag_us.max() >= 2_000_000);
        assert_eq!(outcome.end_reason.as_deref(), Some("shutting down"));
        assert!(take_line(b"{\"row\":1}", &mut outcome).is_err());
        assert_eq!(query_escape("Linux.Events.LogTail"), "Linux.Events.LogTail");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}
