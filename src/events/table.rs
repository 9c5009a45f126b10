//! The client event table as a type: parsed once from a request body or the document on
//! disk, so everything past the parser holds catalogue-checked event artifacts with typed,
//! default-filled parameters.
//!
//! Shape (docs/architecture.md, "API shapes"):
//! `{"all":[{"name":"Generic.Client.Stats","parameters":{"period_s":"10"}}],
//!   "by_label":{"web":[…]}}`; the stored document and `GET` add `"version":N`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifacts::{self, ArtifactError};
use crate::datastore::{ArtifactName, DatastoreError, Label};
use crate::limits::{MAX_EVENT_TABLE_ENTRIES_PER_LIST_COUNT, MAX_EVENT_TABLE_LABELS_COUNT};
use crate::protocol::event_table::FleetTable;
use crate::protocol::pb;

/// One event artifact an agent runs for as long as the table lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventEntry {
    /// Invariant: an `ArtifactKind::Event` artifact of the catalogue.
    pub name: ArtifactName,
    /// Invariant: every parameter of the artifact, in the catalogue's canonical string
    /// form (`"10"`, `"true"`), defaults filled, exactly as a collection stores them.
    pub parameters: BTreeMap<String, String>,
}

/// Which event artifacts agents run: `all` on every agent, plus each label's list on the
/// agents carrying that label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventTable {
    /// Invariant: at most `MAX_EVENT_TABLE_ENTRIES_PER_LIST_COUNT` entries, each artifact
    /// once (as in every `by_label` list).
    pub all: Vec<EventEntry>,
    /// Invariant: at most `MAX_EVENT_TABLE_LABELS_COUNT` labels.
    pub by_label: BTreeMap<Label, Vec<EventEntry>>,
}

/// Counts replacements of the table: 0 before the first, one more with each. Agents will
/// compare it on reconnect to tell whether their table is current.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TableVersion(u64);

impl TableVersion {
    pub fn get(self) -> u64 {
        self.0
    }

    /// The version after this one; `None` only after u64::MAX replacements.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

/// The table with its version: what `GET` answers and what the document on disk holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionedTable {
    pub version: TableVersion,
    #[serde(flatten)]
    pub table: EventTable,
}

/// Why a table (from a request or from disk) was refused. Everything but `Datastore` and
/// `VersionExhausted` is the fault of whoever wrote the table: 400 for a request, a
/// start-up error naming the file for the document.
#[derive(Debug, thiserror::Error)]
pub enum EventTableError {
    #[error("not a client event table: {0}")]
    Syntax(#[source] serde_json::Error),
    #[error("{list}: {count} entries, at most {max} allowed")]
    TooManyEntries {
        list: String,
        count: usize,
        max: usize,
    },
    #[error("by_label: {count} labels, at most {max} allowed")]
    TooManyLabels { count: usize, max: usize },
    #[error("by_label: {0}")]
    BadLabel(#[source] DatastoreError),
    #[error("{list}: {source}")]
    Artifact {
        list: String,
        #[source]
        source: ArtifactError,
    },
    #[error("{list}: artifact `{name}` is listed more than once")]
    DuplicateArtifact { list: String, name: String },
    #[error("the stored client event table {} is unusable: {source}", path.display())]
    Stored {
        path: std::path::PathBuf,
        #[source]
        source: Box<EventTableError>,
    },
    #[error("client event table: {0}")]
    Datastore(#[from] DatastoreError),
    #[error("the client event table version cannot grow past {}", u64::MAX)]
    VersionExhausted,
}

impl EventTableError {
    /// True when the table the caller sent was wrong (HTTP 400).
    pub fn is_caller_fault(&self) -> bool {
        !matches!(
            self,
            Self::Stored { .. } | Self::Datastore(_) | Self::VersionExhausted
        )
    }
}

/// The request body: both keys required, so a PUT always says what it replaces.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    all: Vec<RawEntry>,
    by_label: BTreeMap<String, Vec<RawEntry>>,
}

/// The document on disk: the body plus its version.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    version: TableVersion,
    all: Vec<RawEntry>,
    by_label: BTreeMap<String, Vec<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
}

impl EventTable {
    /// Parses a `PUT` body. The caller caps its size (`MAX_EVENT_TABLE_BODY_BYTES`), which
    /// bounds the lists serde builds before they are counted here.
    pub fn parse(body: &[u8]) -> Result<Self, EventTableError> {
        let raw: RawTable = serde_json::from_slice(body).map_err(EventTableError::Syntax)?;
        Self::from_raw(raw.all, raw.by_label)
    }

    fn from_raw(
        all: Vec<RawEntry>,
        by_label: BTreeMap<String, Vec<RawEntry>>,
    ) -> Result<Self, EventTableError> {
        // Counted before anything is checked one by one: a bound is reported as a bound.
        if by_label.len() > MAX_EVENT_TABLE_LABELS_COUNT {
            return Err(EventTableError::TooManyLabels {
                count: by_label.len(),
                max: MAX_EVENT_TABLE_LABELS_COUNT,
            });
        }
        let all = parse_list("all".to_string(), all)?;
        let mut lists = BTreeMap::new();
        for (raw_label, entries) in by_label {
            let label = Label::parse(&raw_label).map_err(EventTableError::BadLabel)?;
            let list = parse_list(format!("by_label.{label}"), entries)?;
            lists.insert(label, list);
        }
        Ok(Self {
            all,
            by_label: lists,
        })
    }
}

impl VersionedTable {
    /// Parses the stored document with the same checks as a request, so a table that
    /// was valid when written but names an artifact a newer catalogue dropped is refused
    /// at start instead of reaching agents.
    pub fn parse_document(bytes: &[u8]) -> Result<Self, EventTableError> {
        let raw: RawDocument = serde_json::from_slice(bytes).map_err(EventTableError::Syntax)?;
        let table = EventTable::from_raw(raw.all, raw.by_label)?;
        Ok(Self {
            version: raw.version,
            table,
        })
    }

    /// The table as agent shards hold it: wire types, merged per agent by
    /// `FleetTable::merged_for`.
    pub fn to_wire(&self) -> FleetTable {
        let list = |entries: &[EventEntry]| -> Vec<pb::ArtifactRequest> {
            entries
                .iter()
                .map(|e| pb::ArtifactRequest {
                    name: e.name.to_string(),
                    parameters: e.parameters.clone(),
                })
                .collect()
        };
        FleetTable {
            version: self.version.get(),
            all: list(&self.table.all),
            by_label: self
                .table
                .by_label
                .iter()
                .map(|(label, entries)| (label.as_str().to_string(), list(entries)))
                .collect(),
        }
    }

    /// The document's bytes: pretty JSON (operators read it by hand), newline-ended.
    pub fn to_document(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("event tables serialise");
        bytes.push(b'\n');
        bytes
    }
}

fn parse_list(list: String, raw: Vec<RawEntry>) -> Result<Vec<EventEntry>, EventTableError> {
    if raw.len() > MAX_EVENT_TABLE_ENTRIES_PER_LIST_COUNT {
        return Err(EventTableError::TooManyEntries {
            list,
            count: raw.len(),
            max: MAX_EVENT_TABLE_ENTRIES_PER_LIST_COUNT,
        });
    }
    let mut seen = BTreeSet::new();
    let mut entries = Vec::with_capacity(raw.len());
    for entry in raw {
        let parsed = parse_entry(&entry).map_err(|source| EventTableError::Artifact {
            list: list.clone(),
            source,
        })?;
        if !seen.insert(parsed.name.clone()) {
            return Err(EventTableError::DuplicateArtifact {
                list,
                name: parsed.name.to_string(),
            });
        }
        entries.push(parsed);
    }
    Ok(entries)
}

fn parse_entry(raw: &RawEntry) -> Result<EventEntry, ArtifactError> {
    let def = artifacts::find_event(&raw.name)?;
    let parameters = artifacts::resolve_json_params(def, &raw.parameters)?;
    // Catalogue names are valid artifact names (the catalogue test parses them all); a
    // failure here is our bug, reported rather than panicking on the request path.
    let name = ArtifactName::parse(def.name).map_err(|e| ArtifactError::BadParameter {
        artifact: def.name.to_string(),
        parameter: "name".to_string(),
        reason: e.to_string(),
    })?;
    Ok(EventEntry { name, parameters })
}

#[cfg(test)]
mod tests {
    //! Goal: every documented refusal of a table is produced and named, a valid table
    //! comes back typed with canonical, default-filled parameters, and the document
    //! round-trips. Method: parse hand-built bodies and match the error variants.

    use super::*;
    use crate::artifacts::{CLIENT_STATS, PROCESS_START, PSLIST};
    use serde_json::json;

    fn parse(body: Value) -> Result<EventTable, EventTableError> {
        EventTable::parse(&serde_json::to_vec(&body).unwrap())
    }

    fn stats(period: Value) -> Value {
        json!({"name": CLIENT_STATS, "parameters": {"period_s": period}})
    }

    #[test]
    fn valid_table_is_typed_canonical_and_default_filled() {
        let table = parse(json!({
            "all": [stats(json!(10))],
            "by_label": {"web": [{"name": PROCESS_START}, stats(json!("30"))]},
        }))
        .unwrap();
        assert_eq!(table.all.len(), 1);
        assert_eq!(table.all[0].name, CLIENT_STATS);
        assert_eq!(table.all[0].parameters["period_s"], "10");
        let web = &table.by_label[&Label::parse("web").unwrap()];
        assert_eq!(web[0].name, PROCESS_START);
        assert!(web[0].parameters.is_empty());
        assert_eq!(web[1].parameters["period_s"], "30");
        // Defaults are filled as for a collection.
        let table = parse(json!({"all": [{"name": CLIENT_STATS}], "by_label": {}})).unwrap();
        assert_eq!(table.all[0].parameters["period_s"], "10");
    }

    #[test]
    fn empty_table_is_valid_and_both_keys_are_required() {
        assert_eq!(
            parse(json!({"all": [], "by_label": {}})).unwrap(),
            EventTable::default()
        );
        for body in [json!({"all": []}), json!({"by_label": {}}), json!([])] {
            assert!(matches!(parse(body), Err(EventTableError::Syntax(_))));
        }
        let err = parse(json!({"all": [], "by_label": {}, "extra": 1})).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        assert!(EventTable::parse(b"\xff{").is_err());
    }

    #[test]
    fn artifacts_must_be_known_event_artifacts_listed_once() {
        let err = parse(json!({"all": [{"name": "Linux.Nope"}], "by_label": {}})).unwrap_err();
        assert!(
            err.to_string().contains("unknown artifact `Linux.Nope`"),
            "{err}"
        );
        let err = parse(json!({"all": [], "by_label": {"web": [{"name": PSLIST}]}})).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("by_label.web") && text.contains("collection artifact"),
            "{text}"
        );
        let err =
            parse(json!({"all": [stats(json!(1)), stats(json!(2))], "by_label": {}})).unwrap_err();
        assert!(
            matches!(err, EventTableError::DuplicateArtifact { ref name, .. }
            if name == CLIENT_STATS)
        );
        assert!(err.is_caller_fault());
    }

    #[test]
    fn parameters_are_checked_against_the_catalogue() {
        for (period, reason) in [
            (json!(-1), "non-negative integer"),
            (json!("ten"), "non-negative integer"),
            (json!(true), "must be a u64"),
        ] {
            let err = parse(json!({"all": [stats(period)], "by_label": {}})).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("period_s") && text.contains(reason), "{text}");
        }
        let body = json!({"all": [{"name": CLIENT_STATS, "parameters": {"colour": 1}}],
                          "by_label": {}});
        let err = parse(body).unwrap_err();
        assert!(err.to_string().contains("no parameter `colour`"), "{err}");
    }

    #[test]
    fn labels_and_bounds_are_enforced() {
        let err = parse(json!({"all": [], "by_label": {"a b": []}})).unwrap_err();
        assert!(matches!(err, EventTableError::BadLabel(_)), "{err}");
        let many: BTreeMap<String, Value> = (0..=MAX_EVENT_TABLE_LABELS_COUNT)
            .map(|i| (format!("l{i}"), json!([])))
            .collect();
        let err = parse(json!({"all": [], "by_label": many})).unwrap_err();
        assert!(
            matches!(err, EventTableError::TooManyLabels { .. }),
            "{err}"
        );
        let long = vec![json!({"name": PROCESS_START}); MAX_EVENT_TABLE_ENTRIES_PER_LIST_COUNT + 1];
        let err = parse(json!({"all": long, "by_label": {}})).unwrap_err();
        assert!(
            matches!(err, EventTableError::TooManyEntries { .. }),
            "{err}"
        );
    }

    #[test]
    fn document_round_trips_and_bad_documents_are_refused() {
        let table = parse(json!({
            "all": [stats(json!(5))],
            "by_label": {"web": [{"name": PROCESS_START}]},
        }))
        .unwrap();
        let versioned = VersionedTable {
            version: TableVersion::default().next().unwrap(),
            table,
        };
        let bytes = versioned.to_document();
        assert_eq!(VersionedTable::parse_document(&bytes).unwrap(), versioned);
        let shape: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(shape["version"], 1);
        assert_eq!(shape["all"][0]["parameters"]["period_s"], "5");
        for junk in [&b""[..], b"{", b"{\"all\":[],\"by_label\":{}}", b"\0\0\0"] {
            let err = VersionedTable::parse_document(junk).unwrap_err();
            assert!(matches!(err, EventTableError::Syntax(_)), "{err}");
        }
        let stale = br#"{"version":3,"all":[{"name":"Gone.Artifact"}],"by_label":{}}"#;
        let err = VersionedTable::parse_document(stale).unwrap_err();
        assert!(err.to_string().contains("Gone.Artifact"), "{err}");
        assert_eq!(TableVersion(u64::MAX).next(), None);
    }
}
