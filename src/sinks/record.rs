//! One spooled event: the line a sink's spool holds for it, and that line read back.
//! The line is also what a `file` sink writes, and each event of a webhook batch.

use serde::{Deserialize, Serialize};

use crate::events::IngestedBatch;

/// An event as every sink kind sees it.
/// Invariant: `id` is `IngestedBatch::event_id` of the row, so a resent event keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolEvent {
    pub id: String,
    pub client_id: String,
    pub artifact: String,
    pub time_ms: u64,
    /// The row as the agent sent it (a JSON object).
    pub row: serde_json::Value,
}

impl SpoolEvent {
    /// Reads one spool line (without its '\n').
    pub fn parse(line: &[u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }
}

/// Appends one line per row of `batch` to `out`; returns the rows written. Rows are
/// copied as they are (ingest checked each is a JSON object), the rest is escaped.
pub fn encode_batch(batch: &IngestedBatch, out: &mut Vec<u8>) -> u64 {
    let client_id = json_string(&batch.client_id.to_string());
    let artifact = json_string(batch.artifact.as_str());
    let mut rows = 0;
    for (i, (time_ms, row)) in batch.rows().enumerate() {
        if row.is_empty() {
            continue;
        }
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(json_string(&batch.event_id(i)).as_bytes());
        out.extend_from_slice(b",\"client_id\":");
        out.extend_from_slice(client_id.as_bytes());
        out.extend_from_slice(b",\"artifact\":");
        out.extend_from_slice(artifact.as_bytes());
        out.extend_from_slice(format!(",\"time_ms\":{time_ms},\"row\":").as_bytes());
        out.extend_from_slice(row);
        out.extend_from_slice(b"}\n");
        rows += 1;
    }
    rows
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_batch_encodes_to_lines_that_read_back_with_their_ids() {
        let batch = IngestedBatch {
            client_id: crate::ids::ClientId::parse("C.0123456789abcdef").unwrap(),
            artifact: crate::datastore::ArtifactName::parse("Linux.Events.ProcessStart").unwrap(),
            seq: 7,
            time_ms: vec![10, 20],
            jsonl: bytes::Bytes::from_static(b"{\"pid\":1}\n{\"cmd\":\"a\\\"b\"}\n"),
            labels: Arc::from(Vec::new()),
        };
        let mut out = Vec::new();
        assert_eq!(encode_batch(&batch, &mut out), 2);
        let events: Vec<SpoolEvent> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| SpoolEvent::parse(l).expect("a line we wrote reads back"))
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, batch.event_id(0));
        assert_eq!(events[1].time_ms, 20);
        assert_eq!(events[1].row["cmd"], "a\"b");
    }
}
