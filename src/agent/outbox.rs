//! What the agent still has to deliver: result batches and flow statuses, in order.
//! An item leaves the outbox only when the server acknowledged it, so after a reconnect
//! (to any frontend) the agent simply sends the front again; the server's batch
//! sequence numbers make a resend harmless.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::pb;

/// Room kept in an upload for the frame and message fields around the rows.
const UPLOAD_OVERHEAD_BYTES: usize = 1024;

pub use crate::agent::collected::ArtifactOutput;

#[derive(Debug, Clone)]
pub enum OutItem {
    Batch(pb::ResultBatch),
    Status(pb::FlowStatus),
}

impl OutItem {
    pub fn to_upload(&self) -> pb::Upload {
        use pb::upload::Kind;
        let kind = match self {
            OutItem::Batch(b) => Kind::Result(b.clone()),
            OutItem::Status(s) => Kind::Status(s.clone()),
        };
        pb::Upload { kind: Some(kind) }
    }
}

pub struct Outbox {
    items: VecDeque<OutItem>,
    max_rows_bytes: usize,
}

impl Outbox {
    pub fn new(max_upload_bytes: u64) -> Self {
        let max_rows_bytes = (max_upload_bytes as usize)
            .saturating_sub(UPLOAD_OVERHEAD_BYTES)
            .max(256);
        Self {
            items: VecDeque::new(),
            max_rows_bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn front(&self) -> Option<&OutItem> {
        self.items.front()
    }

    pub fn pop_front(&mut self) -> Option<OutItem> {
        self.items.pop_front()
    }

    /// Queues a finished collection: its batches, then its status.
    pub fn add_flow(&mut self, flow_id: &str, outputs: Vec<ArtifactOutput>) {
        let mut status = pb::FlowStatus {
            flow_id: flow_id.to_string(),
            ..Default::default()
        };
        for output in outputs {
            let batches = split_lines(&output.jsonl, self.max_rows_bytes);
            let count = batches.len() as u64;
            for (seq, (jsonl, rows)) in batches.into_iter().enumerate() {
                let batch = pb::ResultBatch {
                    flow_id: flow_id.to_string(),
                    artifact: output.name.clone(),
                    seq: seq as u64,
                    jsonl,
                    row_count: rows,
                };
                self.items.push_back(OutItem::Batch(batch));
            }
            if let Some(e) = output.error {
                status.errors.push(format!("{}: {e}", output.name));
            }
            status.artifacts.push(pb::ArtifactRows {
                name: output.name,
                rows: output.rows,
                batches: count,
            });
        }
        if !status.errors.is_empty() {
            status.state = pb::flow_status::State::Error as i32;
        }
        self.items.push_back(OutItem::Status(status));
    }

    /// The server refused the front batch as too large: split it in two and renumber
    /// the later batches of the same artifact. When it is a single row that can't be
    /// split, the row is dropped and the flow's status records it.
    pub fn split_front(&mut self) {
        let Some(OutItem::Batch(front)) = self.items.pop_front() else {
            return;
        };
        let halves = split_lines(&front.jsonl, (front.jsonl.len() / 2).max(1));
        if front.row_count <= 1 || halves.len() < 2 {
            let note = format!(
                "{}: a row of {} bytes is above the server's upload limit",
                front.artifact,
                front.jsonl.len()
            );
            self.shift_seqs(&front, -1, Some(note), front.row_count as u64);
            return;
        }
        // Re-pack into exactly two batches so only one sequence number is added.
        let mid = halves.len() / 2;
        let (a, b) = halves.split_at(mid);
        let join = |parts: &[(Bytes, u32)]| {
            let mut v = Vec::new();
            parts
                .iter()
                .for_each(|(bytes, _)| v.extend_from_slice(bytes));
            (Bytes::from(v), parts.iter().map(|(_, r)| r).sum::<u32>())
        };
        let ((ja, ra), (jb, rb)) = (join(a), join(b));
        self.shift_seqs(&front, 1, None, 0);
        let second = pb::ResultBatch {
            seq: front.seq + 1,
            jsonl: jb,
            row_count: rb,
            ..front.clone()
        };
        let first = pb::ResultBatch {
            jsonl: ja,
            row_count: ra,
            ..front
        };
        self.items.push_front(OutItem::Batch(second));
        self.items.push_front(OutItem::Batch(first));
    }

    /// Drops everything queued for a flow (the server refused it for good).
    pub fn drop_flow(&mut self, flow_id: &str) -> usize {
        let before = self.items.len();
        self.items.retain(|item| match item {
            OutItem::Batch(b) => b.flow_id != flow_id,
            OutItem::Status(s) => s.flow_id != flow_id,
        });
        before - self.items.len()
    }

    fn shift_seqs(
        &mut self,
        front: &pb::ResultBatch,
        delta: i64,
        note: Option<String>,
        dropped_rows: u64,
    ) {
        for item in self.items.iter_mut() {
            match item {
                OutItem::Batch(b) if b.flow_id == front.flow_id && b.artifact == front.artifact => {
                    b.seq = (b.seq as i64 + delta) as u64;
                }
                OutItem::Status(s) if s.flow_id == front.flow_id => {
                    if let Some(a) = s.artifacts.iter_mut().find(|a| a.name == front.artifact) {
                        a.batches = (a.batches as i64 + delta) as u64;
                        a.rows -= dropped_rows.min(a.rows);
                    }
                    if let Some(note) = &note {
                        s.errors.push(note.clone());
                        s.state = pb::flow_status::State::Error as i32;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Splits JSONL at line ends into chunks of at most `max_bytes` (a longer single line
/// becomes a chunk of its own); the chunks share `jsonl`'s memory.
pub fn split_lines(jsonl: &Bytes, max_bytes: usize) -> Vec<(Bytes, u32)> {
    let mut out = Vec::new();
    let (mut start, mut pos, mut rows) = (0usize, 0usize, 0u32);
    while pos < jsonl.len() {
        let end = jsonl[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(jsonl.len(), |i| pos + i + 1);
        if end - start > max_bytes && rows > 0 {
            out.push((jsonl.slice(start..pos), rows));
            start = pos;
            rows = 0;
        }
        rows += 1;
        pos = end;
    }
    if rows > 0 {
        out.push((jsonl.slice(start..), rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, width: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(width)).into_bytes())
            .collect()
    }

    #[test]
    fn split_keeps_every_row_once_under_the_cap() {
        let data = Bytes::from(rows(100, 50));
        let parts = split_lines(&data, 700);
        assert!(parts
            .iter()
            .all(|(b, _)| b.len() <= 700 && b.ends_with(b"\n")));
        assert_eq!(parts.iter().map(|(_, r)| *r).sum::<u32>(), 100);
        let joined: Vec<u8> = parts.iter().flat_map(|(b, _)| b.to_vec()).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn split_front_renumbers_later_batches() {
        let mut ob = Outbox::new(4096);
        let out = ArtifactOutput {
            name: "A".into(),
            jsonl: rows(200, 40).into(),
            rows: 200,
            ..Default::default()
        };
        ob.add_flow("F.0000000000000001", vec![out]);
        let before = ob.len();
        ob.split_front();
        assert_eq!(ob.len(), before + 1);
        let seqs: Vec<u64> = ob
            .items
            .iter()
            .filter_map(|i| match i {
                OutItem::Batch(b) => Some(b.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        let total: u32 = ob
            .items
            .iter()
            .filter_map(|i| match i {
                OutItem::Batch(b) => Some(b.row_count),
                _ => None,
            })
            .sum();
        assert_eq!(total, 200);
        let Some(OutItem::Status(s)) = ob.items.back() else {
            panic!("status last")
        };
        assert_eq!(s.artifacts[0].batches as usize, seqs.len());
    }
}
