//! The config files as written: serde structs that mirror the TOML key for key
//! (`deny_unknown_fields`, so a typo fails at load). Only `config/` reads these; it turns
//! them into the typed `ServerConfig` / `ClientConfig` once. `config generate` writes them,
//! and tools that edit a copy of a client config (tests, loadgen) load and write them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{load_toml, resolve, ConfigError};
use crate::limits;

/// The master's replication port when `config generate` is not told otherwise.
pub const DEFAULT_REPLICATION_PORT: u16 = 8001;

/// `server.config.toml`: one file shared by the master and every minion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub frontend: FrontendSection,
    pub gui: GuiSection,
    /// The master's gRPC API (docs/security/grpc-api.md). Absent in files written before
    /// it existed: then it is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSection>,
    pub tls: ServerTlsSection,
    pub datastore: DatastoreSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// Minion frontends added with `packhunt config frontend`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minions: Vec<MinionEntry>,
    /// Where each frontend ships the events it ingests (`docs/events/sinks.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSection {
    /// Host agents use to reach the master (in its certificate and the client URLs).
    pub public_host: String,
    /// Address the agent port binds to.
    pub bind_address: String,
    pub agent_port: u16,
    /// Port of the master's replication service (gRPC over mutual TLS) that minions
    /// connect to at `public_host`. Bound only when minions are configured.
    #[serde(default = "default_replication_port")]
    pub replication_port: u16,
    /// Agent shards (executor threads); 0 = one per core.
    #[serde(default)]
    pub shards: usize,
    /// io_uring memory glommio registers per shard; memlock bounds the total.
    #[serde(default = "default_io_memory_bytes")]
    pub io_memory_bytes: usize,
    /// io_uring entries per ring of an agent shard. Deeper rings give the kernel's
    /// table of outstanding polls (one per idle agent) more buckets (tuning.md).
    #[serde(default = "default_io_ring_depth")]
    pub io_ring_depth: usize,
    /// Nice value of the agent shards' file-work threads (writes, fsyncs): above 0 they
    /// yield the CPU to task delivery and connections while the box is busy.
    #[serde(default = "default_file_work_nice")]
    pub file_work_nice: i32,
    /// Open files this process may use (production raises `LimitNOFILE`).
    #[serde(default = "default_max_open_files")]
    pub max_open_files: u64,
    /// Transparent huge pages for this process. Off by default: the allocator's huge
    /// pages are only partly used by 19k small idle connections, which costs ~16 KiB of
    /// RSS per idle agent (tuning.md, P1: 53.6 vs 37.3 KiB); turn on only for heaps that fill them.
    #[serde(default)]
    pub transparent_huge_pages: bool,
    /// On SIGTERM, how long uploads in flight may take to finish after the agents were
    /// told to move (docs/operating.md, "Draining and rolling restarts").
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// PEM certificate + key the agent port presents (the master's). A minion's own config
    /// keeps the certificate only: the key is the master's alone.
    pub certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// If set, agents must present this secret (their `client.enrolment_secret`) on every
    /// request, or are refused with 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment_secret: Option<String>,
    /// Names (DNS or IP) agents reach the frontends by through a load balancer: every
    /// frontend's certificate must carry them, since agents check the name they dialled.
    /// `config frontend` issues minion certificates with them (docs/operating.md,
    /// "Behind a load balancer").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balancer_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuiSection {
    pub bind_address: String,
    pub port: u16,
    /// Where GUI/API work runs relative to agent work.
    #[serde(default)]
    pub priority: GuiPriority,
    /// Seconds a browser session lives after login, however busy (docs/gui/sessions.md).
    #[serde(default = "default_session_timeout_s")]
    pub session_timeout_s: u64,
    /// Seconds without a request after which a browser session ends.
    #[serde(default = "default_session_idle_timeout_s")]
    pub session_idle_timeout_s: u64,
    /// A connection's TLS handshake must finish within this after accept.
    #[serde(default = "default_gui_tls_accept_timeout_ms")]
    pub tls_accept_timeout_ms: u64,
    /// An HTTP/1 request's headers must be complete within this after their first byte.
    #[serde(default = "default_gui_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed.
    #[serde(default = "default_gui_idle_timeout_ms")]
    pub connection_idle_timeout_ms: u64,
    /// GUI/API connections open at once; more are closed at accept (at most half of the
    /// files `frontend.max_open_files` keeps back from agents).
    #[serde(default = "default_max_gui_connections")]
    pub max_connections: u32,
}

/// `[api]`: the gRPC API port, served by the master only, mutual TLS with API client
/// certificates (`packhunt config api-client`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Like the GUI's: loopback unless the operator exposes it on purpose.
    #[serde(default = "default_api_bind_address")]
    pub bind_address: String,
    #[serde(default = "default_api_port")]
    pub port: u16,
}

/// `executor`: a dedicated priority executor thread (the design), niced above the shards.
/// `realtime`: the same thread under SCHED_RR, so the kernel runs it as soon as it wakes
/// (needs CAP_SYS_NICE; falls back to `executor`'s nice otherwise). The kernel's RT
/// throttling leaves the shards at least 5 % of a core should it ever spin.
/// `shared`: GUI/API served on agent shard 0 at equal priority — the baseline that
/// reproduces the anchor product's sluggish GUI, kept for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuiPriority {
    #[default]
    Executor,
    Realtime,
    Shared,
}

impl GuiPriority {
    /// The value as `gui.priority` spells it, for what the frontend tells the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executor => "executor",
            Self::Realtime => "realtime",
            Self::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSection {
    /// PEM of the deployment CA; agents pin it.
    pub ca_certificate: String,
    /// PEM of the CA key, as configs written before the key moved to its own file
    /// (`ca.key.pem` beside this file) carry it. No frontend needs it; only the tools that
    /// issue certificates (`config frontend`, `config api-client`) read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_private_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreSection {
    /// Root of the datastore; a shared mount when there are several frontends.
    /// Relative paths are taken from the config file's folder.
    pub location: PathBuf,
    /// fsync whole-file documents (status.json, info.json, ...) before the rename.
    #[serde(default = "default_true")]
    pub fsync_documents: bool,
    /// fsync monitoring event day files before an event batch is acknowledged.
    #[serde(default)]
    pub fsync_events: bool,
    /// Threads per executor that do datastore file work (mostly waiting on the disk or
    /// NFS, so more threads than cores: fsyncs and NFS round trips then overlap).
    #[serde(default = "default_io_threads")]
    pub io_threads_per_executor: usize,
    /// Free space the mount must have for the frontend to start (0: not checked).
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Uploads processed at once by this frontend (split over its agent shards).
    pub concurrency: u32,
    /// How long an upload waits for a concurrency permit before 503 + Retry-After.
    pub concurrency_wait_ms: u64,
    pub max_connections_per_second: u32,
    pub hunt_recruitment_per_second: u32,
    pub max_upload_bytes: u64,
    pub handshake_timeout_ms: u64,
    /// Connections each agent shard handshakes at once; more wait in the accept queue.
    pub handshakes_in_flight_per_shard: u32,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// A collection's defaults where its request sets none (0 = no limit): seconds until
    /// the agent gives up, rows over all its artifacts, bytes of uploaded files.
    pub collection_timeout_s: u64,
    pub collection_max_rows: u64,
    pub collection_max_upload_bytes: u64,
    /// Retry-After sent with the 503 that refuses an upload because the datastore is full
    /// (ENOSPC/EDQUOT): how long agents keep their data and wait before trying again.
    pub disk_full_retry_after_s: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            concurrency: limits::default_concurrency(),
            concurrency_wait_ms: millis(limits::DEFAULT_CONCURRENCY_WAIT),
            max_connections_per_second: limits::DEFAULT_MAX_CONNECTIONS_PER_SECOND,
            hunt_recruitment_per_second: limits::DEFAULT_HUNT_RECRUITMENT_PER_SECOND,
            max_upload_bytes: limits::DEFAULT_MAX_UPLOAD_BYTES,
            handshake_timeout_ms: millis(limits::DEFAULT_HANDSHAKE_TIMEOUT),
            handshakes_in_flight_per_shard: limits::DEFAULT_HANDSHAKES_IN_FLIGHT_PER_SHARD,
            idle_timeout_ms: millis(limits::DEFAULT_IDLE_TIMEOUT),
            request_timeout_ms: millis(limits::DEFAULT_REQUEST_TIMEOUT),
            collection_timeout_s: limits::DEFAULT_COLLECTION_TIMEOUT_S,
            collection_max_rows: limits::DEFAULT_COLLECTION_MAX_ROWS,
            collection_max_upload_bytes: limits::DEFAULT_COLLECTION_MAX_UPLOAD_BYTES,
            disk_full_retry_after_s: limits::RETRY_AFTER_DISK_FULL.as_secs(),
        }
    }
}

/// What an API user may do (docs/security/roles.md; `api::permissions` holds the table).
/// Ordered by what a role may do: each may do all that the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything the API shows; changes nothing.
    Reader,
    /// Also collects, cancels, hunts and labels.
    Investigator,
    /// Also manages users, the client event table, sinks and the audit trail.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Administrator, Role::Investigator, Role::Reader];

    /// The name the config file, the CLI and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Investigator => "investigator",
            Role::Reader => "reader",
        }
    }

    /// The role named `name` (as `as_str` spells it); None for any other text.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinionEntry {
    /// HOST:PORT: the minion's agent address and its name on the replication stream.
    pub name: String,
    /// PEM certificate (signed by the deployment CA, for HOST) + key: presented to
    /// agents on the agent port and to the master on the replication link. The key is
    /// only in the minion's own config (`minion-<name>.config.toml`); the master's config
    /// keeps the certificate, which it checks the minion's link against.
    pub certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Port on `gui.bind_address` where the minion serves `/metrics` (a minion has no
    /// GUI); none if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
}

/// A `[[sinks]]` entry as written; `config::sinks` checks it and fills the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkEntry {
    /// Names the sink in metrics and its spool folder: letters, digits, `-`, `_`.
    pub name: String,
    /// `elastic`, `clickhouse`, `webhook` or `file`.
    pub kind: String,
    /// `http://` or `https://` endpoint (every kind but `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The JSONL file a `file` sink writes (relative to the config file's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Event artifacts of the catalogue whose events this sink receives.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// If set, only events of clients carrying one of these labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_bytes: Option<u64>,
    /// Parent of the per-frontend spool folders (relative to the config file's folder);
    /// default `<datastore.location>/spool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Extra HTTP headers sent with every request (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// HTTP Basic credentials (both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA that signs an `https://` sink's certificate; default the
    /// system's bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `elastic`: the index written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// `clickhouse`: the table inserted into (`db.table` or `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// `file`: rotate at this size, keep this many rotated files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

/// `client.config.toml`: what every agent (and loadgen) needs to find the frontends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub client: ClientSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Every frontend's agent URL, `https://HOST:PORT/`; the agent picks one at random
    /// and rotates on failure.
    pub server_urls: Vec<String>,
    /// PEM of the deployment CA the agent pins.
    pub ca_certificate: String,
    /// Where the agent keeps its key and client id. Relative to the config file's folder.
    pub writeback_path: PathBuf,
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// Folder where client monitoring events wait until the server has them. Relative to
    /// the config file's folder; by default beside the writeback file, named after it
    /// with the extension `.events` (`client.writeback.toml` -> `client.writeback.events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_buffer_dir: Option<PathBuf>,
    /// Most bytes of events kept waiting; beyond it the oldest batches are dropped,
    /// counted and reported to the server.
    #[serde(default = "default_max_event_buffer_bytes")]
    pub max_event_buffer_bytes: u64,
    /// Folder where results and collected files wait until the server acknowledged them,
    /// so an agent restart resumes its flows. Relative to the config file's folder; by
    /// default beside the writeback file with the extension `.outbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_dir: Option<PathBuf>,
    /// Most bytes the outbox holds; past it the oldest flow is failed with an error.
    #[serde(default = "default_max_outbox_bytes")]
    pub max_outbox_bytes: u64,
    /// Sent on every request when the frontends require one (`frontend.enrolment_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment_secret: Option<String>,
}

fn default_session_timeout_s() -> u64 {
    limits::DEFAULT_SESSION_TIMEOUT.as_secs()
}

fn default_session_idle_timeout_s() -> u64 {
    limits::DEFAULT_SESSION_IDLE_TIMEOUT.as_secs()
}

fn default_gui_tls_accept_timeout_ms() -> u64 {
    millis(limits::DEFAULT_GUI_TLS_ACCEPT_TIMEOUT)
}
fn default_gui_header_timeout_ms() -> u64 {
    millis(limits::DEFAULT_GUI_HEADER_TIMEOUT)
}
fn default_gui_idle_timeout_ms() -> u64 {
    millis(limits::DEFAULT_GUI_IDLE_TIMEOUT)
}
fn default_max_gui_connections() -> u32 {
    limits::DEFAULT_MAX_GUI_CONNECTIONS_COUNT
}

fn default_true() -> bool {
    true
}
fn default_io_threads() -> usize {
    limits::DEFAULT_IO_THREADS_PER_EXECUTOR
}

fn default_min_free_bytes() -> u64 {
    limits::DEFAULT_MIN_FREE_BYTES
}
fn default_io_ring_depth() -> usize {
    limits::DEFAULT_IO_RING_DEPTH
}
fn default_file_work_nice() -> i32 {
    limits::DEFAULT_FILE_WORK_NICE
}

fn default_io_memory_bytes() -> usize {
    limits::DEFAULT_IO_MEMORY_BYTES
}
fn default_drain_timeout_ms() -> u64 {
    millis(limits::DEFAULT_DRAIN_TIMEOUT)
}
fn default_max_open_files() -> u64 {
    limits::DEFAULT_MAX_OPEN_FILES
}
fn default_api_bind_address() -> String {
    "127.0.0.1".into()
}

fn default_api_port() -> u16 {
    limits::DEFAULT_API_PORT
}

fn default_replication_port() -> u16 {
    DEFAULT_REPLICATION_PORT
}
fn default_max_upload_bytes() -> u64 {
    limits::DEFAULT_MAX_UPLOAD_BYTES
}
fn default_max_event_buffer_bytes() -> u64 {
    limits::DEFAULT_MAX_EVENT_BUFFER_BYTES
}
fn default_max_outbox_bytes() -> u64 {
    limits::DEFAULT_MAX_OUTBOX_BYTES
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ServerFile {
    /// Reads and deserializes `path`, relative paths resolved against its folder; checks
    /// nothing else (`ServerConfig::load` does).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut file: ServerFile = load_toml(path)?;
        file.datastore.location = resolve(path, &file.datastore.location);
        for sink in &mut file.sinks {
            for p in [&mut sink.path, &mut sink.spool_dir, &mut sink.ca_file]
                .into_iter()
                .flatten()
            {
                *p = resolve(path, p);
            }
        }
        Ok(file)
    }
}

impl ClientFile {
    /// Reads and deserializes `path`, relative paths resolved against its folder; checks
    /// nothing else (`ClientConfig::load` does).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut file: ClientFile = load_toml(path)?;
        file.client.writeback_path = resolve(path, &file.client.writeback_path);
        file.client.event_buffer_dir = file.client.event_buffer_dir.map(|dir| resolve(path, &dir));
        file.client.outbox_dir = file.client.outbox_dir.map(|dir| resolve(path, &dir));
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::GuiPriority;

    #[test]
    fn gui_priority_names_itself_as_the_config_spells_it() {
        // Goal: what the frontend prints is what the operator writes in the file.
        for priority in [
            GuiPriority::Executor,
            GuiPriority::Realtime,
            GuiPriority::Shared,
        ] {
            let spelled = serde_json::to_value(priority).expect("a unit variant serializes");
            assert_eq!(spelled, priority.as_str());
        }
    }
}
