//! `elastic`: each batch is one Elasticsearch / OpenSearch `_bulk` request, an `index`
//! action with `_id` = the event id per event, so a retried batch overwrites instead of
//! duplicating. The bulk answer is read item by item: items refused for a retryable
//! reason (429, 5xx) are sent again, items refused for their content (a mapping error)
//! are counted and given up.

use serde::Deserialize;

use super::delivery::{classify, outcome_of, shown, Deliver, Outcome, StatusClass};
use super::http::HttpClient;
use super::record::SpoolEvent;
use crate::clock::civil_date;

pub struct Elastic {
    /// Invariant: a valid index name (config checks it).
    pub index: String,
    pub client: HttpClient,
}

impl Elastic {
    /// The `_bulk` body: action line + document line per event.
    pub fn bulk_body(&self, events: &[SpoolEvent]) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Action<'a> {
            index: Target<'a>,
        }
        #[derive(serde::Serialize)]
        struct Target<'a> {
            _index: &'a str,
            _id: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Document<'a> {
            #[serde(rename = "@timestamp")]
            timestamp: String,
            id: &'a str,
            client_id: &'a str,
            artifact: &'a str,
            time_ms: u64,
            row: &'a serde_json::Value,
        }
        let mut body = Vec::with_capacity(events.len() * 320);
        for e in events {
            let action = Action {
                index: Target {
                    _index: &self.index,
                    _id: &e.id,
                },
            };
            let document = Document {
                timestamp: rfc3339_ms(e.time_ms),
                id: &e.id,
                client_id: &e.client_id,
                artifact: &e.artifact,
                time_ms: e.time_ms,
                row: &e.row,
            };
            // Serializing our own structs of strings and numbers cannot fail.
            let _ = serde_json::to_writer(&mut body, &action);
            body.push(b'\n');
            let _ = serde_json::to_writer(&mut body, &document);
            body.push(b'\n');
        }
        body
    }
}

impl Deliver for Elastic {
    fn deliver(&mut self, events: &[SpoolEvent]) -> Outcome {
        let body = self.bulk_body(events);
        let answer = match self.client.post("/_bulk", "application/x-ndjson", body) {
            Ok(a) => a,
            Err(e) => return Outcome::retry(e, None),
        };
        if classify(answer.status) != StatusClass::Delivered {
            return outcome_of(&answer, events.len());
        }
        read_items(&answer.body, events.len())
    }
}

/// The outcome of a 2xx `_bulk` answer, item by item.
pub fn read_items(body: &[u8], events: usize) -> Outcome {
    #[derive(Deserialize)]
    struct Bulk {
        errors: bool,
        #[serde(default)]
        items: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let bulk: Bulk = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return Outcome::retry(format!("unreadable _bulk answer: {e}"), None),
    };
    if !bulk.errors {
        return Outcome::Done { rejected: 0 };
    }
    if bulk.items.len() != events {
        let reason = format!("_bulk answered {} items for {events}", bulk.items.len());
        return Outcome::retry(reason, None);
    }
    let (mut keep, mut rejected, mut first_error) = (Vec::new(), 0u64, None);
    for (i, item) in bulk.items.iter().enumerate() {
        // Each item is `{"index": {"status": N, "error": {...}}}`.
        let result = item.values().next();
        let status = result
            .and_then(|r| r.get("status"))
            .and_then(|s| s.as_u64())
            .unwrap_or(500);
        match classify(status.min(u16::MAX as u64) as u16) {
            StatusClass::Delivered => {}
            StatusClass::Rejected => {
                rejected += 1;
                if first_error.is_none() {
                    first_error = result.and_then(|r| r.get("error")).map(|e| e.to_string());
                }
            }
            StatusClass::Retry => keep.push(i),
        }
    }
    if let Some(error) = first_error {
        tracing::warn!(rejected, error = %shown(error.as_bytes()), "_bulk refused events for good");
    }
    if keep.is_empty() {
        return Outcome::Done { rejected };
    }
    let reason = format!("_bulk: {} items to retry", keep.len());
    Outcome::Retry {
        keep: Some(keep),
        rejected,
        after: None,
        reason,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the epoch (UTC).
pub fn rfc3339_ms(time_ms: u64) -> String {
    let (days, ms_of_day) = (time_ms / 86_400_000, time_ms % 86_400_000);
    let (year, month, day) = civil_date(days);
    let (h, m) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (s, ms) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn bulk_items_are_retried_or_given_up_by_their_status() {
        let body = br#"{"took":1,"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"index":{"_id":"c","status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#;
        match read_items(body, 3) {
            Outcome::Retry { keep, rejected, .. } => {
                assert_eq!(keep, Some(vec![1]));
                assert_eq!(rejected, 1);
            }
            other => panic!("{other:?}"),
        }
        let ok = br#"{"took":1,"errors":false,"items":[{"index":{"status":201}}]}"#;
        assert_eq!(read_items(ok, 1), Outcome::Done { rejected: 0 });
    }
}
