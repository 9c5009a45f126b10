//! Hunts on disk: `hunts/<hunt_id>.json` (definition and state, replaced atomically) and
//! `hunts/<hunt_id>.participants` (one `client_id flow_id` line per recruited agent,
//! append-only). Only the master writes either. Together with each participant flow's
//! status.json they are the hunt: its statistics can always be recounted from disk.
//!
//! `hunts/<hunt_id>.recruiting` has the same lines, appended before the flows they name
//! are written: a master that dies between writing a flow and recording its participant
//! finds the flow there when it starts again, instead of leaving it scheduled forever.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{ensure_dir, read_json, write_json};
use super::flow::ArtifactRequestDoc;
use super::listing::ids_in;
use super::path::Datastore;
use super::{io_error, serde_ids, DatastoreError};
use crate::ids::{ClientId, FlowId, HuntId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HuntState {
    /// Created, not started: recruits no one.
    Paused,
    Running,
    Stopped,
    /// Past `expires_ms`: recruits no one.
    Expired,
}

impl HuntState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Expired => "expired",
        }
    }
}

/// Which agents a hunt recruits: all of these labels, and this OS if set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntCondition {
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub os: String,
}

impl HuntCondition {
    pub fn matches(&self, os: &str, labels: &[String]) -> bool {
        (self.os.is_empty() || self.os.eq_ignore_ascii_case(os))
            && self.labels.iter().all(|l| labels.contains(l))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntDoc {
    #[serde(with = "serde_ids::hunt_id")]
    pub hunt_id: HuntId,
    pub artifacts: Vec<ArtifactRequestDoc>,
    pub condition: HuntCondition,
    pub create_time_ms: u64,
    /// Recruits no one from this time on (0 = never expires).
    pub expires_ms: u64,
    pub state: HuntState,
    #[serde(default)]
    pub start_time_ms: Option<u64>,
    #[serde(default)]
    pub stop_time_ms: Option<u64>,
    /// Every participant's flow limits (the hunt request's, else the config's defaults).
    #[serde(default)]
    pub limits: crate::limits::FlowLimits,
}

pub fn write_hunt(datastore: &Datastore, doc: &HuntDoc) -> Result<(), DatastoreError> {
    ensure_dir(&datastore.hunts_dir(), datastore.fsync_documents())?;
    write_json(
        &datastore.hunt_path(&doc.hunt_id),
        doc,
        datastore.fsync_documents(),
    )
}

pub fn read_hunt(datastore: &Datastore, hunt_id: &HuntId) -> Result<HuntDoc, DatastoreError> {
    let path = datastore.hunt_path(hunt_id);
    let doc: HuntDoc = read_json(&path)?;
    if &doc.hunt_id != hunt_id {
        return Err(DatastoreError::Corrupt {
            path,
            reason: "names another hunt".into(),
        });
    }
    Ok(doc)
}

/// Every hunt on disk; unreadable documents are skipped with a warning.
pub fn list_hunts(datastore: &Datastore) -> Result<Vec<HuntDoc>, DatastoreError> {
    let dir = datastore.hunts_dir();
    let mut hunts = Vec::new();
    for (id, _) in ids_in(&dir, ".json", HuntId::parse)?.flatten() {
        match read_hunt(datastore, &id) {
            Ok(doc) => hunts.push(doc),
            Err(e) => tracing::warn!(hunt = %id, "hunt document skipped: {e}"),
        }
    }
    hunts.sort_by_key(|h| h.create_time_ms);
    Ok(hunts)
}

fn participants_path(datastore: &Datastore, hunt_id: &HuntId) -> PathBuf {
    datastore
        .hunts_dir()
        .join(format!("{}.participants", hunt_id.as_str()))
}

/// Records that these clients joined the hunt with these flows (after the flows were
/// written), with one write: O_APPEND keeps the lines whole and together, and a crash
/// mid-write leaves at most a torn last line, which readers skip. Not synced: the
/// recruiter makes a whole tick's recruits durable at once (`atomic::sync_filesystem`).
pub fn append_participants(
    datastore: &Datastore,
    hunt_id: &HuntId,
    participants: &[(ClientId, FlowId)],
) -> Result<(), DatastoreError> {
    append_pairs(&participants_path(datastore, hunt_id), participants)
}

/// Notes the flows about to be written for these recruits (before any of them is), so
/// that a restart can settle the ones whose participant line never came. Written like
/// the participants file.
pub fn append_recruiting(
    datastore: &Datastore,
    hunt_id: &HuntId,
    recruits: &[(ClientId, FlowId)],
) -> Result<(), DatastoreError> {
    append_pairs(&recruiting_path(datastore, hunt_id), recruits)
}

/// The recruits noted by [`append_recruiting`] since the last [`clear_recruiting`]; a
/// torn or malformed line is skipped.
pub fn read_recruiting(
    datastore: &Datastore,
    hunt_id: &HuntId,
) -> Result<Vec<(ClientId, FlowId)>, DatastoreError> {
    read_pairs(&recruiting_path(datastore, hunt_id))
}

/// Empties the journal once every recruit it names is either a participant or taken back.
pub fn clear_recruiting(datastore: &Datastore, hunt_id: &HuntId) -> Result<(), DatastoreError> {
    let path = recruiting_path(datastore, hunt_id);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("remove recruiting", &path)(e))
        }
        _ => Ok(()),
    }
}

fn recruiting_path(datastore: &Datastore, hunt_id: &HuntId) -> PathBuf {
    datastore
        .hunts_dir()
        .join(format!("{}.recruiting", hunt_id.as_str()))
}

/// Appends `client_id flow_id` lines to a hunt's participants file or journal (the path
/// in an error says which).
fn append_pairs(path: &Path, pairs: &[(ClientId, FlowId)]) -> Result<(), DatastoreError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut lines = String::with_capacity(pairs.len() * 40);
    for (client_id, flow_id) in pairs {
        lines.push_str(&format!("{client_id} {flow_id}\n"));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error("open", path))?;
    let before = file.metadata().map_err(io_error("stat", path))?.len();
    if let Err(e) = file.write_all(lines.as_bytes()) {
        // A full disk can take part of the lines: cut them off (the master is the only
        // writer), or the next append would run into a torn line and be lost with it.
        let _ = file.set_len(before);
        return Err(io_error("append to", path)(e));
    }
    Ok(())
}

/// Ends a torn last line (a crash mid-append) with a newline, so that the next append
/// starts a line of its own instead of running into the torn one and being lost with it.
/// The master calls it once per hunt when it loads them, before anything appends.
pub fn end_torn_participants(
    datastore: &Datastore,
    hunt_id: &HuntId,
) -> Result<(), DatastoreError> {
    let path = participants_path(datastore, hunt_id);
    let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("open participants", &path)(e)),
    };
    let len = file
        .metadata()
        .map_err(io_error("stat participants", &path))?
        .len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))
        .map_err(io_error("seek participants", &path))?;
    file.read_exact(&mut last)
        .map_err(io_error("read participants", &path))?;
    if last[0] != b'\n' {
        file.write_all(b"\n")
            .map_err(io_error("end torn participant line", &path))?;
    }
    Ok(())
}

/// The recruited agents in recruitment order. A torn or malformed last line (a crash
/// mid-append) is ignored; so is a client listed twice (only its first flow counts).
pub fn read_participants(
    datastore: &Datastore,
    hunt_id: &HuntId,
) -> Result<Vec<(ClientId, FlowId)>, DatastoreError> {
    let mut seen = std::collections::HashSet::new();
    Ok(read_pairs(&participants_path(datastore, hunt_id))?
        .into_iter()
        .filter(|(client, _)| seen.insert(client.clone()))
        .collect())
}

fn read_pairs(path: &Path) -> Result<Vec<(ClientId, FlowId)>, DatastoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", path)(e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let (client, flow) = line.split_once(' ')?;
            Some((ClientId::parse(client).ok()?, FlowId::parse(flow).ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunts_and_participants_round_trip_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let doc = HuntDoc {
            hunt_id: HuntId::random(),
            artifacts: vec![],
            condition: HuntCondition {
                labels: vec!["prod".into()],
                os: "linux".into(),
            },
            create_time_ms: 1,
            expires_ms: 0,
            state: HuntState::Paused,
            start_time_ms: None,
            stop_time_ms: None,
            limits: Default::default(),
        };
        write_hunt(&ds, &doc).unwrap();
        assert_eq!(read_hunt(&ds, &doc.hunt_id).unwrap(), doc);
        assert_eq!(list_hunts(&ds).unwrap(), vec![doc.clone()]);
        let (c1, c2) = (
            ClientId::parse("C.0000000000000001").unwrap(),
            ClientId::parse("C.0000000000000002").unwrap(),
        );
        let (f1, f2) = (FlowId::random(), FlowId::random());
        append_participants(
            &ds,
            &doc.hunt_id,
            &[(c1.clone(), f1.clone()), (c2.clone(), f2.clone())],
        )
        .unwrap();
        append_participants(&ds, &doc.hunt_id, &[]).unwrap();
        append_participants(&ds, &doc.hunt_id, &[(c1.clone(), FlowId::random())]).unwrap();
        let path = participants_path(&ds, &doc.hunt_id);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"C.00000000000").unwrap();
        assert_eq!(
            read_participants(&ds, &doc.hunt_id).unwrap(),
            vec![(c1.clone(), f1.clone()), (c2.clone(), f2.clone())]
        );
        // After a restart's repair the next append is read whole, not lost in the torn line.
        end_torn_participants(&ds, &doc.hunt_id).unwrap();
        end_torn_participants(&ds, &doc.hunt_id).unwrap();
        let (c3, f3) = (
            ClientId::parse("C.0000000000000003").unwrap(),
            FlowId::random(),
        );
        append_participants(&ds, &doc.hunt_id, &[(c3.clone(), f3.clone())]).unwrap();
        assert_eq!(
            read_participants(&ds, &doc.hunt_id).unwrap(),
            vec![(c1, f1), (c2, f2), (c3, f3)]
        );
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        end_torn_participants(&ds, &HuntId::random()).unwrap();
    }

    #[test]
    fn conditions_need_every_label_and_the_os() {
        let c = HuntCondition {
            labels: vec!["a".into(), "b".into()],
            os: "linux".into(),
        };
        assert!(c.matches("Linux", &["b".into(), "a".into(), "c".into()]));
        assert!(!c.matches("linux", &["a".into()]));
        assert!(!c.matches("windows", &["a".into(), "b".into()]));
        assert!(HuntCondition::default().matches("anything", &[]));
    }
}
