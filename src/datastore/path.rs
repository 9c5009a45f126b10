//! Where things live on disk: the ONLY place datastore paths are joined.
//!
//! Owns the layout of docs/architecture.md ("Datastore layout"), the [`ArtifactName`] newtype and
//! the sanitiser that turns an agent-side file path into a path strictly inside the
//! flow's `uploads/`. Every component joined here is either a validated id
//! ([`ClientId`], [`FlowId`], [`HuntId`]), a validated [`ArtifactName`], a constant, or
//! the output of [`sanitise_upload_path`]; so nothing a client sends can name a path
//! outside its own `clients/<client_id>/` folder. It does no io except
//! [`Datastore::open`] creating the top-level folders.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::{io_error, shown, DatastoreError};
use crate::clock::civil_date;
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::{
    MAX_ARTIFACT_NAME_BYTES, MAX_UPLOAD_COMPONENT_CHARS, MAX_UPLOAD_DEPTH_COUNT,
    MAX_UPLOAD_RELATIVE_BYTES,
};

const CLIENTS_DIR: &str = "clients";
const HUNTS_DIR: &str = "hunts";
const SERVER_DIR: &str = "server";
const AUDIT_DIR: &str = "audit";

const _: () = assert!(MAX_ARTIFACT_NAME_BYTES + ".batches".len() <= 255);

/// The datastore root. Cheap to clone; carries the fsync setting so every document
/// writer below it applies the same durability.
#[derive(Debug, Clone)]
pub struct Datastore {
    root: PathBuf,
    fsync_documents: bool,
    fsync_events: bool,
}

impl Datastore {
    /// Opens (creating if needed) the datastore at `root`: `clients/`, `hunts/`, `server/`.
    pub fn open(root: PathBuf, fsync_documents: bool) -> Result<Self, DatastoreError> {
        for sub in [CLIENTS_DIR, HUNTS_DIR, SERVER_DIR] {
            let dir = root.join(sub);
            super::atomic::create_private_dirs(&dir).map_err(io_error("create dir", &dir))?;
        }
        super::atomic::close_to_others(&root);
        Ok(Self {
            root,
            fsync_documents,
            fsync_events: false,
        })
    }

    /// Whether monitoring event batches are fsync'd before they are acknowledged
    /// (`[datastore] fsync_events`; off unless set).
    pub fn with_fsync_events(mut self, fsync_events: bool) -> Self {
        self.fsync_events = fsync_events;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn fsync_documents(&self) -> bool {
        self.fsync_documents
    }

    pub fn clients_dir(&self) -> PathBuf {
        self.root.join(CLIENTS_DIR)
    }

    pub fn hunts_dir(&self) -> PathBuf {
        self.root.join(HUNTS_DIR)
    }

    pub fn server_dir(&self) -> PathBuf {
        self.root.join(SERVER_DIR)
    }

    /// `server/client_event_table.json`: the client event table and its version, written
    /// by the master only.
    pub fn client_event_table_path(&self) -> PathBuf {
        self.server_dir().join("client_event_table.json")
    }

    /// `audit/`: the audit trail's day files (`src/audit/`), created by its writer.
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join(AUDIT_DIR)
    }

    /// `audit/<YYYY-MM-DD>.jsonl`: the audit entries of one UTC day.
    pub fn audit_day_path(&self, day: UtcDay) -> PathBuf {
        self.audit_dir().join(format!("{day}.jsonl"))
    }

    /// `hunts/<hunt_id>.json`.
    pub fn hunt_path(&self, hunt: &HuntId) -> PathBuf {
        self.hunts_dir().join(format!("{}.json", hunt.as_str()))
    }

    /// `clients/<client_id>/`; a handle only, nothing is created.
    pub fn client(&self, id: &ClientId) -> ClientDir {
        ClientDir {
            id: id.clone(),
            dir: self.clients_dir().join(id.as_str()),
            fsync_documents: self.fsync_documents,
            fsync_events: self.fsync_events,
        }
    }
}

/// One client's folder. Invariant: `dir` is `<root>/clients/<id>`.
#[derive(Debug, Clone)]
pub struct ClientDir {
    id: ClientId,
    dir: PathBuf,
    fsync_documents: bool,
    fsync_events: bool,
}

impl ClientDir {
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn fsync_documents(&self) -> bool {
        self.fsync_documents
    }

    pub fn info_json(&self) -> PathBuf {
        self.dir.join("info.json")
    }

    /// `labels.json`: written by the master only, so the agent's own writes of
    /// info.json (on another frontend) never race an operator's label change.
    pub fn labels_json(&self) -> PathBuf {
        self.dir.join("labels.json")
    }

    pub fn collections_dir(&self) -> PathBuf {
        self.dir.join("collections")
    }

    /// `tasks/`: one file per flow the agent has not yet picked up.
    pub fn tasks_dir(&self) -> PathBuf {
        self.dir.join("tasks")
    }

    pub fn task_path(&self, flow: &FlowId) -> PathBuf {
        self.tasks_dir().join(flow.as_str())
    }

    /// `<root>/hunts/<hunt_id>.json`: the document a hunt recruit's flow is made from
    /// (`flow::open_documents`).
    pub fn hunt_path(&self, hunt: &HuntId) -> PathBuf {
        // `dir` is `<root>/clients/<id>` (the invariant above).
        let root = self.dir.ancestors().nth(2).unwrap_or(&self.dir);
        root.join(HUNTS_DIR).join(format!("{}.json", hunt.as_str()))
    }

    /// `monitoring/`: one folder per event artifact the agent has sent rows of.
    pub fn monitoring_dir(&self) -> PathBuf {
        self.dir.join("monitoring")
    }

    /// `monitoring/<artifact>/`: the artifact's day sets.
    pub fn monitoring_artifact_dir(&self, artifact: &ArtifactName) -> PathBuf {
        self.monitoring_dir().join(artifact.as_str())
    }

    /// `monitoring/<artifact>/<YYYY-MM-DD>.jsonl`, the UTC day of `unix_ms`.
    pub fn monitoring_path(&self, artifact: &ArtifactName, unix_ms: u64) -> PathBuf {
        self.day_paths(artifact, UtcDay::of_unix_ms(unix_ms)).jsonl
    }

    /// The three files of one (artifact, UTC day) monitoring day set; see
    /// `monitoring.rs` for their format.
    pub fn day_paths(&self, artifact: &ArtifactName, day: UtcDay) -> RowSetPaths {
        let dir = self.monitoring_artifact_dir(artifact);
        RowSetPaths {
            jsonl: dir.join(format!("{day}{}", RowSetPaths::JSONL_SUFFIX)),
            index: dir.join(format!("{day}{}", RowSetPaths::INDEX_SUFFIX)),
            batches: dir.join(format!("{day}{}", RowSetPaths::BATCHES_SUFFIX)),
            dir,
            sync: self.fsync_events,
        }
    }

    /// `collections/<flow_id>/`; a handle only, nothing is created.
    pub fn flow(&self, flow: &FlowId) -> FlowDir {
        FlowDir {
            id: flow.clone(),
            client_id: self.id.clone(),
            dir: self.collections_dir().join(flow.as_str()),
            fsync_documents: self.fsync_documents,
        }
    }
}

/// One flow's folder. Invariant: `dir` is `<root>/clients/<client_id>/collections/<id>`.
#[derive(Debug, Clone)]
pub struct FlowDir {
    id: FlowId,
    client_id: ClientId,
    dir: PathBuf,
    fsync_documents: bool,
}

impl FlowDir {
    pub fn id(&self) -> &FlowId {
        &self.id
    }

    /// The client whose folder this flow lives in.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn fsync_documents(&self) -> bool {
        self.fsync_documents
    }

    pub fn request_json(&self) -> PathBuf {
        self.dir.join("request.json")
    }

    pub fn status_json(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    /// `uploads.jsonl`: one line per file that finished uploading, in the order they
    /// finished (`datastore/uploads.rs`). Beside `uploads/`, not in it, so no agent path
    /// can name it.
    pub fn uploads_index(&self) -> PathBuf {
        self.dir.join("uploads.jsonl")
    }

    /// `uploading/`: files still arriving, one per agent upload number, moved into
    /// `uploads/` when complete. Outside `uploads/`, so an unfinished file is never
    /// downloaded or exported and no agent path can name one.
    pub fn uploading_dir(&self) -> PathBuf {
        self.dir.join("uploading")
    }

    /// `uploading/<n>`: the agent's upload number `n` while it arrives.
    pub fn uploading_path(&self, upload: u32) -> PathBuf {
        self.uploading_dir().join(upload.to_string())
    }

    /// `uploading/<n>.json`: what the agent announced for upload `n` (path, artifact,
    /// size, SHA-256), written before its first byte; once the file is complete it also
    /// names where the file is moving to, so a crash mid-move is finished on the next open.
    pub fn uploading_meta_path(&self, upload: u32) -> PathBuf {
        self.uploading_dir().join(format!("{upload}.json"))
    }

    /// The file of an index record's `stored` (relative to `uploads/`). The index lives
    /// on the shared datastore, so the name is checked again: plain components only.
    pub fn stored_upload_path(&self, stored: &str) -> Result<PathBuf, DatastoreError> {
        let relative = Path::new(stored);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !plain || stored.is_empty() || stored.contains('\\') {
            return Err(DatastoreError::Corrupt {
                path: self.uploads_index(),
                reason: format!(
                    "stored name `{}` is not a plain relative path",
                    shown(stored)
                ),
            });
        }
        Ok(self.uploads_dir().join(relative))
    }

    /// The three files of one artifact's result set.
    pub fn result_paths(&self, artifact: &ArtifactName) -> ResultPaths {
        let results = self.results_dir();
        let name = artifact.as_str();
        RowSetPaths {
            jsonl: results.join(format!("{name}{}", RowSetPaths::JSONL_SUFFIX)),
            index: results.join(format!("{name}{}", RowSetPaths::INDEX_SUFFIX)),
            batches: results.join(format!("{name}{}", RowSetPaths::BATCHES_SUFFIX)),
            dir: results,
            sync: self.fsync_documents,
        }
    }

    /// Where the agent's file `agent_path` is stored: always strictly inside
    /// `uploads/` (see [`sanitise_upload_path`]).
    pub fn upload_path(&self, agent_path: &str) -> Result<PathBuf, DatastoreError> {
        let relative = sanitise_upload_path(agent_path)?;
        // Paired check on the sanitiser's invariant: only plain components, at least one.
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !plain || relative.as_os_str().is_empty() {
            return Err(DatastoreError::BadUploadPath {
                shown: shown(agent_path),
                reason: "does not name a file",
            });
        }
        Ok(self.uploads_dir().join(relative))
    }
}

/// The three files of one row set (a result set or a monitoring day set); see
/// `rowlog.rs` for their format. Invariant: all three lie directly in `dir`.
#[derive(Debug, Clone)]
pub struct RowSetPaths {
    dir: PathBuf,
    jsonl: PathBuf,
    index: PathBuf,
    batches: PathBuf,
    sync: bool,
}

/// The files of one (flow, artifact) result set.
pub type ResultPaths = RowSetPaths;

impl RowSetPaths {
    pub const JSONL_SUFFIX: &'static str = ".jsonl";
    pub const INDEX_SUFFIX: &'static str = ".index";
    /// The commit records; the file whose presence says the row set exists.
    pub const BATCHES_SUFFIX: &'static str = ".batches";

    /// The folder holding the three files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn jsonl(&self) -> &Path {
        &self.jsonl
    }

    pub fn index(&self) -> &Path {
        &self.index
    }

    pub fn batches(&self) -> &Path {
        &self.batches
    }

    /// Whether appends are made durable before they are acknowledged (follows the
    /// datastore's fsync setting).
    pub fn sync(&self) -> bool {
        self.sync
    }
}

/// A validated artifact name, safe as a single path component.
/// Invariant: matches `^[A-Za-z0-9]+(\.[A-Za-z0-9_]+)*$` and is at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactName(String);

impl ArtifactName {
    pub fn parse(raw: &str) -> Result<Self, DatastoreError> {
        match artifact_name_problem(raw) {
            None => Ok(Self(raw.to_string())),
            Some(reason) => Err(DatastoreError::BadName {
                kind: "artifact name",
                shown: shown(raw),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn artifact_name_problem(raw: &str) -> Option<&'static str> {
    if raw.is_empty() {
        return Some("empty");
    }
    if raw.len() > MAX_ARTIFACT_NAME_BYTES {
        return Some("longer than 128 bytes");
    }
    let mut segments = raw.split('.');
    let first = segments.next().unwrap_or("");
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some("must start with letters or digits");
    }
    let segment_ok =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !segments.all(segment_ok) {
        return Some("segments after a dot must be non-empty letters, digits or _");
    }
    None
}

impl AsRef<str> for ArtifactName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ArtifactName> for String {
    fn from(name: ArtifactName) -> String {
        name.0
    }
}

/// Compare with raw names (e.g. from an upload) without parsing them first: equality
/// with a valid name implies the raw name is valid too.
impl PartialEq<str> for ArtifactName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ArtifactName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for ArtifactName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ArtifactName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ArtifactName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Turns an agent-side path (`/etc/passwd`, `C:\x\y`, `\\?\C:\x`, `../../x`) into a
/// relative path of plain components: root, drive and device prefixes are dropped, as
/// are empty, `.` and `..` components; any character outside `[A-Za-z0-9._-]` becomes
/// `_`; components are cut to [`MAX_UPLOAD_COMPONENT_CHARS`]; only the last
/// [`MAX_UPLOAD_DEPTH_COUNT`] components (and at most [`MAX_UPLOAD_RELATIVE_BYTES`]) are kept.
/// Different agent paths may map to the same result; that is accepted, never escaping is
/// the point. Errors when nothing is left.
pub fn sanitise_upload_path(agent_path: &str) -> Result<PathBuf, DatastoreError> {
    let mut kept: VecDeque<String> = VecDeque::with_capacity(MAX_UPLOAD_DEPTH_COUNT + 1);
    for raw in strip_path_prefix(agent_path).split(['/', '\\']) {
        if raw.is_empty() || raw == "." || raw == ".." {
            continue;
        }
        kept.push_back(sanitise_component(raw));
        if kept.len() > MAX_UPLOAD_DEPTH_COUNT {
            kept.pop_front();
        }
    }
    let mut total_bytes: usize = kept.iter().map(|c| c.len() + 1).sum();
    while total_bytes > MAX_UPLOAD_RELATIVE_BYTES {
        // Cannot empty the deque: one component is at most 201 bytes (const-asserted).
        total_bytes -= kept.pop_front().map_or(0, |c| c.len() + 1);
    }
    if kept.is_empty() {
        return Err(DatastoreError::BadUploadPath {
            shown: shown(agent_path),
            reason: "no file name left after removing root, `.` and `..`",
        });
    }
    Ok(kept.into_iter().collect())
}

/// Drops the Windows namespace prefixes (`\\?\UNC\`, `\\?\`, `\\.\`) and a drive
/// letter (`C:`, also drive-relative `C:x`); a leading `/` needs no special case
/// because empty components are dropped anyway.
fn strip_path_prefix(agent_path: &str) -> &str {
    let mut rest = agent_path;
    for prefix in [r"\\?\UNC\", r"\\?\", r"\\.\", "//?/", "//./"] {
        if let Some(stripped) = rest.strip_prefix(prefix) {
            rest = stripped;
            break;
        }
    }
    let bytes = rest.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        rest = &rest[2..];
    }
    rest
}

fn sanitise_component(raw: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    raw.chars()
        .take(MAX_UPLOAD_COMPONENT_CHARS)
        .map(|c| if allowed(c) { c } else { '_' })
        .collect()
}

/// `path` + `.tmp.<16 hex>` in the same folder, so the final rename stays on one
/// filesystem. Ids and artifact names never contain `.tmp.` + 16 hex in a way that
/// parses as an id, so listings skip these files.
pub(crate) fn temp_sibling(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let mut temp: OsString = name.to_os_string();
    temp.push(format!(".tmp.{:016x}", rand::random::<u64>()));
    Some(path.with_file_name(temp))
}

/// One UTC calendar day, as days since 1970-01-01; names a monitoring day set
/// (`YYYY-MM-DD`). Invariant: the day's last millisecond fits in a u64 and its year has
/// four digits (so names sort as days do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UtcDay(u64);

impl UtcDay {
    pub const MS_PER_DAY: u64 = 86_400_000;
    /// 9999-12-31: the last day with a four-digit year.
    const LAST_DAYS_SINCE_EPOCH: u64 = 2_932_896;

    /// The day holding `unix_ms` (milliseconds since the Unix epoch). Times past year
    /// 9999 map to its last day, so a name never grows a fifth year digit.
    pub fn of_unix_ms(unix_ms: u64) -> Self {
        Self((unix_ms / Self::MS_PER_DAY).min(Self::LAST_DAYS_SINCE_EPOCH))
    }

    /// The day holding `unix_ms`, or `None` past 9999-12-31.
    pub fn checked_of_unix_ms(unix_ms: u64) -> Option<Self> {
        let days = unix_ms / Self::MS_PER_DAY;
        (days <= Self::LAST_DAYS_SINCE_EPOCH).then_some(Self(days))
    }

    /// Parses `YYYY-MM-DD` (a real date, zero-padded); `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let b = raw.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u64> {
            let part = raw.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        let days = days_from_civil(year, month, day);
        // Round trip rejects 02-30 and friends.
        (civil_date(days) == (year, month, day)).then_some(Self(days))
    }

    /// The day's first millisecond since the Unix epoch.
    pub fn start_ms(self) -> u64 {
        self.0 * Self::MS_PER_DAY
    }

    /// The first millisecond after the day.
    pub fn end_ms(self) -> u64 {
        (self.0 + 1) * Self::MS_PER_DAY
    }
}

impl fmt::Display for UtcDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_date(self.0);
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date on or after it; the inverse of
/// [`civil_date`](crate::clock::civil_date) (Howard Hinnant's `days_from_civil`, public domain).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Prefix of the start-up mount check's scratch folders in the datastore root; nothing
/// else there starts with it, so a stale one (a frontend killed mid-check) is recognised.
pub(crate) const MOUNT_CHECK_PREFIX: &str = ".mount-check-";

/// The scratch folder of one start-up mount check (`datastore/mount_check.rs`) and the
/// files it tries: `<root>/.mount-check-<host>-<pid>-<16 hex>/`, unique per process so
/// frontends starting together on one shared mount never touch each other's files.
/// Invariant: the folder's name holds only `[A-Za-z0-9._-]` (the host name is sanitised here).
#[derive(Debug, Clone)]
pub struct MountCheckPaths {
    dir: PathBuf,
}

impl MountCheckPaths {
    pub fn new(root: &Path, host: &str, pid: u32) -> Self {
        let host = sanitise_component(host);
        let name = format!(
            "{MOUNT_CHECK_PREFIX}{host}-{pid}-{:016x}",
            rand::random::<u64>()
        );
        Self {
            dir: root.join(name),
        }
    }

    /// A root entry's path, if its name says it is a mount check's scratch folder.
    pub fn scratch_in(root: &Path, entry: &std::ffi::OsStr) -> Option<PathBuf> {
        let name = entry.to_str()?;
        name.starts_with(MOUNT_CHECK_PREFIX)
            .then(|| root.join(name))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The document replaced by rename (as `atomic::write_atomic` replaces status.json).
    pub fn document(&self) -> PathBuf {
        self.dir.join("document.json")
    }

    /// The temp sibling renamed over [`Self::document`].
    pub fn document_temp(&self) -> PathBuf {
        self.dir.join("document.json.tmp")
    }

    /// The file fsync'd and appended to from two handles (as result sets and audit days).
    pub fn log(&self) -> PathBuf {
        self.dir.join("append.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientId {
        ClientId::parse("C.0123456789abcdef").unwrap()
    }

    fn flow() -> FlowId {
        FlowId::parse("F.0123456789ABCDEF").unwrap()
    }

    // Goal: the layout is exactly docs/architecture.md's. Method: build every path under a fake root.
    #[test]
    fn layout_matches_design() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().join("ds"), false).unwrap();
        for sub in ["clients", "hunts", "server"] {
            assert!(dir.path().join("ds").join(sub).is_dir(), "{sub}");
        }
        let c = ds.client(&client());
        let base = dir.path().join("ds/clients/C.0123456789abcdef");
        assert_eq!(c.info_json(), base.join("info.json"));
        assert_eq!(c.task_path(&flow()), base.join("tasks/F.0123456789ABCDEF"));
        let f = c.flow(&flow());
        let fbase = base.join("collections/F.0123456789ABCDEF");
        assert_eq!(f.path(), fbase);
        assert_eq!(f.request_json(), fbase.join("request.json"));
        assert_eq!(f.status_json(), fbase.join("status.json"));
        let rp = f.result_paths(&ArtifactName::parse("Linux.Sys.Pslist").unwrap());
        assert_eq!(rp.jsonl(), fbase.join("results/Linux.Sys.Pslist.jsonl"));
        assert_eq!(rp.index(), fbase.join("results/Linux.Sys.Pslist.index"));
        assert_eq!(rp.batches(), fbase.join("results/Linux.Sys.Pslist.batches"));
        assert_eq!(
            f.upload_path("/etc/passwd").unwrap(),
            fbase.join("uploads/etc/passwd")
        );
        let hunt = HuntId::parse("H.0123456789ABCDEF").unwrap();
        assert_eq!(
            ds.hunt_path(&hunt),
            dir.path().join("ds/hunts/H.0123456789ABCDEF.json")
        );
    }

    #[test]
    fn monitoring_path_uses_the_utc_day() {
        let ds = Datastore {
            root: PathBuf::from("/r"),
            fsync_documents: false,
            fsync_events: false,
        };
        let c = ds.client(&client());
        let a = ArtifactName::parse("Generic.Client.Stats").unwrap();
        // 2024-02-29T23:59:59.999Z (a leap day) and the epoch.
        let p = c.monitoring_path(&a, 1_709_251_199_999);
        assert!(
            p.ends_with("monitoring/Generic.Client.Stats/2024-02-29.jsonl"),
            "{p:?}"
        );
        assert!(c.monitoring_path(&a, 0).ends_with("1970-01-01.jsonl"));
        assert!(c
            .monitoring_path(&a, 1_709_251_200_000)
            .ends_with("2024-03-01.jsonl"));
        assert!(c
            .monitoring_path(&a, 951_782_400_000)
            .ends_with("2000-02-29.jsonl"));
        let day = c.day_paths(&a, UtcDay::of_unix_ms(1_709_251_199_999));
        assert!(day
            .index()
            .ends_with("Generic.Client.Stats/2024-02-29.index"));
        assert!(day
            .batches()
            .ends_with("Generic.Client.Stats/2024-02-29.batches"));
        assert_eq!(day.dir(), c.monitoring_artifact_dir(&a));
        assert!(c
            .monitoring_path(&a, u64::MAX)
            .ends_with("9999-12-31.jsonl"));
    }

    // Goal: day names parse back to the day they name and nothing else parses.
    // Method: every day from 1970 to 2400 round-trips; malformed and impossible dates fail.
    #[test]
    fn utc_days_round_trip_and_reject_junk() {
        for days in 0..157_000u64 {
            let day = UtcDay(days);
            assert_eq!(UtcDay::parse(&day.to_string()), Some(day));
            assert_eq!(UtcDay::of_unix_ms(day.start_ms()), day);
            assert_eq!(UtcDay::of_unix_ms(day.end_ms() - 1), day);
        }
        for bad in [
            "",
            "2024-02-30",
            "2023-02-29",
            "1969-12-31",
            "2024-2-01",
            "2024-13-01",
            "2024-00-10",
            "+024-01-01",
            "2024-01-1x",
            "2024/01/01",
            "20240-1-01",
        ] {
            assert_eq!(UtcDay::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn artifact_names_are_validated() {
        for good in [
            "Generic.Client.Info",
            "A",
            "a1.b_c",
            "X.Y_.Z9",
            &"a".repeat(128),
        ] {
            assert!(ArtifactName::parse(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            ".a",
            "a.",
            "a..b",
            "a/b",
            "a\\b",
            "_a",
            "A_b.c",
            "a.b-c",
            "a b",
            "é",
            "a\0",
            "../etc/passwd",
            "a.b/../c",
            &too_long,
            "a.\u{202e}b",
        ] {
            let err = ArtifactName::parse(bad).unwrap_err();
            assert!(matches!(err, DatastoreError::BadName { .. }), "{bad}");
        }
    }

    #[test]
    fn artifact_name_deserialising_validates() {
        let ok: ArtifactName = serde_json::from_str("\"Linux.Sys.Pslist\"").unwrap();
        assert_eq!(ok.as_str(), "Linux.Sys.Pslist");
        assert!(serde_json::from_str::<ArtifactName>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"Linux.Sys.Pslist\"");
        let owned = String::from("Linux.Sys.Pslist");
        assert!(ok == "Linux.Sys.Pslist" && ok != "Linux.Sys" && ok == owned);
    }

    fn sanitised(raw: &str) -> String {
        sanitise_upload_path(raw)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn sanitiser_maps_agent_paths() {
        assert_eq!(sanitised("/etc/passwd"), "etc/passwd");
        assert_eq!(sanitised(r"C:\x\y"), "x/y");
        assert_eq!(sanitised("C:rel.txt"), "rel.txt");
        assert_eq!(sanitised("../../x"), "x");
        assert_eq!(sanitised("a/./b/../../c"), "a/b/c");
        assert_eq!(
            sanitised(r"\\?\C:\Windows\System32\cmd.exe"),
            "Windows/System32/cmd.exe"
        );
        assert_eq!(sanitised(r"\\?\UNC\srv\share\f"), "srv/share/f");
        assert_eq!(sanitised(r"\\srv\share\f"), "srv/share/f");
        assert_eq!(sanitised("/tmp/a b/$x:y*?"), "tmp/a_b/_x_y__");
        assert_eq!(sanitised("/home/é/..."), "home/_/...");
        assert_eq!(sanitised("/x\0y/.. /~"), "x_y/.._/_");
        assert_eq!(sanitised("//a//b//"), "a/b");
    }

    #[test]
    fn sanitiser_rejects_paths_that_name_nothing() {
        for raw in [
            "",
            "/",
            "\\",
            "..",
            "../..",
            "./././",
            "C:",
            r"C:\",
            r"\\?\",
            "//?/C:/..",
        ] {
            let err = sanitise_upload_path(raw).unwrap_err();
            assert!(
                matches!(err, DatastoreError::BadUploadPath { .. }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn sanitiser_caps_component_length_depth_and_total() {
        let long = format!("/{}", "a".repeat(1000));
        assert_eq!(sanitised(&long).len(), MAX_UPLOAD_COMPONENT_CHARS);
        let deep: String = (0..100).map(|i| format!("/d{i}")).collect();
        let p = sanitise_upload_path(&deep).unwrap();
        assert_eq!(p.components().count(), MAX_UPLOAD_DEPTH_COUNT);
        assert!(p.ends_with("d99"), "the file name survives");
        let wide: String = (0..32)
            .map(|i| format!("/{i}{}", "w".repeat(300)))
            .collect();
        let p = sanitise_upload_path(&wide).unwrap();
        assert!(p.as_os_str().len() <= MAX_UPLOAD_RELATIVE_BYTES);
        // 10 components of 200 chars + separators fit in 2048 bytes; 11 do not.
        assert_eq!(p.components().count(), 10);
        assert!(p.to_str().unwrap().starts_with("22w"));
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with("31w"));
    }

    // Goal: whatever the agent sends, the upload lands strictly inside uploads/.
    // Method: hostile fixed cases plus 20k random strings over a path-heavy alphabet.
    #[test]
    fn upload_paths_never_escape_uploads() {
        use rand::{Rng, SeedableRng};
        let ds = Datastore {
            root: PathBuf::from("/r"),
            fsync_documents: false,
            fsync_events: false,
        };
        let f = ds.client(&client()).flow(&flow());
        let uploads = f.uploads_dir();
        let alphabet: Vec<char> = "./\\:?*a\0 é~$C".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut cases: Vec<String> = [
            "../../../etc/shadow",
            "/..",
            "a/../../..",
            r"..\..\x",
            "....//....//x",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..20_000 {
            let len = rng.gen_range(0..24);
            cases.push(
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect(),
            );
        }
        for raw in &cases {
            let Ok(p) = f.upload_path(raw) else { continue };
            let rel = p.strip_prefix(&uploads).expect("inside uploads");
            assert!(rel.components().count() >= 1, "{raw:?}");
            assert!(
                rel.components().all(|c| matches!(c, Component::Normal(_))),
                "{raw:?} -> {p:?}"
            );
            let s = rel.to_str().unwrap();
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)),
                "{s}"
            );
        }
    }

    #[test]
    fn temp_siblings_stay_in_the_folder() {
        let p = Path::new("/a/b/status.json");
        let t = temp_sibling(p).unwrap();
        assert_eq!(t.parent(), p.parent());
        assert!(t
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("status.json.tmp."));
        assert_ne!(temp_sibling(p), temp_sibling(p));
        assert!(temp_sibling(Path::new("/")).is_none());
    }
}
