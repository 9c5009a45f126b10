//! The client event table as it travels to agents: the fleet-wide table in wire form, the
//! one agent's merged slice of it (`all` plus its labels' lists), and the digest an agent
//! sends back on reconnect so an unchanged table is not sent again. Shared by both ends,
//! so the server and the agent compute the digest the same way.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::protocol::{framing, pb};

/// Request header of `GET /agent/v1/tasks`: the hex digest of the EventTable the agent
/// holds (absent when it holds none).
pub const EVENT_TABLE_HEADER: &str = "x-packhunt-event-table";

/// The fleet-wide client event table as the shards hold it: already in wire form, so a
/// shard merges and encodes without knowing the API's types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetTable {
    pub version: u64,
    pub all: Vec<pb::ArtifactRequest>,
    /// Invariant: keys are valid labels (`datastore::Label`), each list names an artifact
    /// at most once.
    pub by_label: BTreeMap<String, Vec<pb::ArtifactRequest>>,
}

/// SHA-256 of an encoded `EventTable` message's queries: what the agent sends back in
/// [`EVENT_TABLE_HEADER`] (as lowercase hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableDigest([u8; 32]);

impl TableDigest {
    /// The digest of `table`'s queries: the `EventTable` encoded by prost with version 0
    /// (deterministic: map fields are BTreeMaps, see build.rs). The version is left out
    /// so a table change that leaves an agent's queries as they were sends it nothing:
    /// the agent keeps the version at which its queries last changed.
    pub fn of(table: &pb::EventTable) -> Self {
        let queries_only = pb::EventTable {
            version: 0,
            queries: table.queries.clone(),
        };
        Self(Sha256::digest(queries_only.encode_to_vec()).into())
    }

    /// Parses the header's value; `None` for anything but 64 hex digits (an agent that
    /// sent garbage simply gets the table).
    pub fn parse_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl FleetTable {
    /// The table one agent runs: `all`, then each of `labels`' lists in sorted label order
    /// (labels the table does not list add nothing). An artifact met twice keeps the
    /// position of its first mention and the parameters of its last, so a label's
    /// parameters win over `all`'s (and a later label's over an earlier one's).
    pub fn merged_for(&self, labels: &[String]) -> pb::EventTable {
        let mut sorted: Vec<&String> = labels.iter().collect();
        sorted.sort();
        sorted.dedup();
        let lists = std::iter::once(&self.all)
            .chain(sorted.into_iter().filter_map(|l| self.by_label.get(l)));
        let mut queries: Vec<pb::ArtifactRequest> = Vec::new();
        for entry in lists.flatten() {
            match queries.iter_mut().find(|q| q.name == entry.name) {
                Some(existing) => existing.parameters = entry.parameters.clone(),
                None => queries.push(entry.clone()),
            }
        }
        pb::EventTable {
            version: self.version,
            queries,
        }
    }
}

/// The task-stream frame that carries `table`.
pub fn event_table_frame(table: pb::EventTable) -> Bytes {
    framing::encode(&pb::ServerMessage {
        kind: Some(pb::server_message::Kind::EventTable(table)),
    })
}

#[cfg(test)]
mod tests {
    //! Goal: an agent gets `all` plus exactly its labels' entries, each artifact once with
    //! the label's parameters, and the digest is stable, order-sensitive where the table
    //! is, and survives the hex header. Method: hand-built tables.

    use super::*;

    fn entry(name: &str, period: &str) -> pb::ArtifactRequest {
        pb::ArtifactRequest {
            name: name.into(),
            parameters: [("period_s".to_string(), period.to_string())].into(),
        }
    }

    fn table() -> FleetTable {
        FleetTable {
            version: 7,
            all: vec![entry("Generic.Client.Stats", "10")],
            by_label: [
                (
                    "web".to_string(),
                    vec![
                        entry("Linux.Events.LogTail", "1"),
                        entry("Generic.Client.Stats", "5"),
                    ],
                ),
                (
                    "db".to_string(),
                    vec![entry("Linux.Events.ProcessStart", "0")],
                ),
            ]
            .into(),
        }
    }

    fn names(t: &pb::EventTable) -> Vec<&str> {
        t.queries.iter().map(|q| q.name.as_str()).collect()
    }

    #[test]
    fn merge_is_all_plus_own_labels_with_label_parameters_winning() {
        let t = table();
        let plain = t.merged_for(&[]);
        assert_eq!(plain.version, 7);
        assert_eq!(names(&plain), ["Generic.Client.Stats"]);
        let unknown = t.merged_for(&["mail".to_string()]);
        assert_eq!(
            unknown, plain,
            "a label the table does not list adds nothing"
        );
        let web = t.merged_for(&["web".to_string()]);
        assert_eq!(
            names(&web),
            ["Generic.Client.Stats", "Linux.Events.LogTail"]
        );
        assert_eq!(
            web.queries[0].parameters["period_s"], "5",
            "the label's parameters win"
        );
        let both = t.merged_for(&["web".to_string(), "db".to_string(), "web".to_string()]);
        assert_eq!(
            names(&both),
            [
                "Generic.Client.Stats",
                "Linux.Events.ProcessStart",
                "Linux.Events.LogTail"
            ],
            "labels in sorted order, each once"
        );
        assert!(FleetTable::default()
            .merged_for(&["web".into()])
            .queries
            .is_empty());
    }

    #[test]
    fn digest_is_stable_and_round_trips_through_the_header() {
        let t = table();
        let web = t.merged_for(&["web".to_string()]);
        let digest = TableDigest::of(&web);
        assert_eq!(digest, TableDigest::of(&web.clone()));
        // What the agent computes from the frame it decoded is what the server computed.
        let frame = event_table_frame(web.clone());
        let decoded: pb::ServerMessage =
            framing::decode_single(frame, 1 << 20).expect("a frame we encoded decodes");
        let Some(pb::server_message::Kind::EventTable(got)) = decoded.kind else {
            panic!("not an event table frame");
        };
        assert_eq!(TableDigest::of(&got), digest);
        assert_eq!(TableDigest::parse_hex(&digest.to_hex()), Some(digest));
        assert_ne!(TableDigest::of(&t.merged_for(&[])), digest);
        let mut newer = web.clone();
        newer.version += 1;
        assert_eq!(TableDigest::of(&newer), digest, "only the queries count");
        newer.queries[0]
            .parameters
            .insert("period_s".into(), "6".into());
        assert_ne!(TableDigest::of(&newer), digest, "a parameter counts");
        for junk in ["", "zz", &"0".repeat(63), &"0".repeat(66)] {
            assert_eq!(TableDigest::parse_hex(junk), None, "{junk:?}");
        }
    }
}
