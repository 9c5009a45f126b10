//! The typed configuration: `server.config.toml` (frontends) and `client.config.toml`
//! (agents). The files deserialize into the raw structs of `file`, which are parsed here
//! and only here, once: a broken file fails at start with the file, the key and what is
//! wrong, and nothing past this module sees a string for a duration, an address, a
//! certificate, a key, a role or a URL.

pub mod api_client;
pub mod file;
pub mod generate;
pub mod minion;
pub mod private_file;
pub mod secrets;
pub mod sinks;
pub mod url;
pub mod users;

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;

pub use file::{
    ApiSection, ClientFile, ClientSection, DatastoreSection, FrontendSection, GuiPriority,
    GuiSection, LimitsSection, MinionEntry, Role, ServerFile, ServerTlsSection, SinkEntry,
    UserEntry, DEFAULT_REPLICATION_PORT,
};

use crate::limits;
use crate::tls::pem::{self, CertificateAndKey};
pub use sinks::{HttpTarget, HttpUrl, Sink, SinkKind};
use url::{HostPort, ServerUrl};

/// Errors loading or writing a config file. Always the operator's fault or the disk's.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: cannot write: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Generate(String),
}

/// `server.config.toml`, parsed: one file shared by the master and every minion. Its
/// sections mirror the file's; `ServerConfig::load` is the only way to build one.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub frontend: Frontend,
    pub gui: Gui,
    /// `[api]`: where the master serves the gRPC API; none when not served.
    pub api: Option<ApiPort>,
    pub tls: ServerTls,
    pub datastore: DatastoreSettings,
    pub limits: Limits,
    /// Invariant: not empty, and every `password_hash` is an argon2 PHC string.
    pub users: Vec<UserEntry>,
    /// Invariant: names are unique and none is the master's.
    pub minions: Vec<Minion>,
    /// `[[sinks]]`; invariant: names are unique.
    pub sinks: Vec<Sink>,
    /// The file this was read from: where user changes are written and re-read
    /// (`config::users`, `api::auth`).
    pub path: PathBuf,
}

/// `[frontend]`: the master's address, certificate and process resources.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// `public_host:agent_port`: the master's name, and where agents reach it.
    pub master: HostPort,
    /// `public_host` as the TLS name minions check the master's certificate against.
    pub master_tls_name: ServerName<'static>,
    /// Address the agent port (and the master's replication port) binds to.
    pub bind_address: IpAddr,
    /// Port of the master's replication service; bound only when minions are configured.
    pub replication_port: u16,
    /// Agent shards (executor threads); none = one per core.
    pub shards: Option<NonZeroUsize>,
    /// Invariant: at least `limits::MIN_IO_MEMORY_BYTES`.
    pub io_memory_bytes: usize,
    /// Invariant: within `limits::MIN_IO_RING_DEPTH..=limits::MAX_IO_RING_DEPTH`.
    pub io_ring_depth: usize,
    /// Invariant: within `limits::MIN_FILE_WORK_NICE..=limits::MAX_FILE_WORK_NICE`.
    pub file_work_nice: i32,
    /// Invariant: above `limits::RESERVED_FILES_COUNT`.
    pub max_open_files: u64,
    pub transparent_huge_pages: bool,
    /// How long a stopping frontend lets uploads in flight finish.
    /// Invariant: within `1 ms..=limits::MAX_DRAIN_TIMEOUT`.
    pub drain_timeout: Duration,
    /// The master's certificate and key; none in a minion's own config (`master_tls`).
    pub tls: Option<CertificateAndKey>,
    /// If set, every agent request must carry it (`transport/enrolment.rs`).
    pub enrolment_secret: Option<EnrolmentSecret>,
    /// Names agents reach the frontends by through a load balancer (each an IP address or
    /// a DNS name); every frontend certificate `config frontend` issues carries them.
    pub balancer_names: Vec<String>,
}

impl Frontend {
    /// The master's certificate and key, or why this config cannot run the master.
    pub fn master_tls(&self) -> Result<&CertificateAndKey, ConfigError> {
        self.tls.as_ref().ok_or_else(|| {
            ConfigError::Generate(
                "this config holds no master key (frontend.private_key): it is a minion's own \
                 config; run it with --minion --node HOST:PORT, or run the master from \
                 server.config.toml"
                    .into(),
            )
        })
    }

    /// Where the master listens for minions.
    pub fn replication_address(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.replication_port)
    }
}

/// `[gui]`.
#[derive(Debug, Clone)]
pub struct Gui {
    /// The master's GUI/API listener; a minion's `/metrics` uses its IP.
    pub address: SocketAddr,
    pub priority: GuiPriority,
    pub sessions: SessionTimeouts,
    pub connections: GuiConnectionLimits,
}

/// What one GUI/API peer may hold (`gui.tls_accept_timeout_ms`, `gui.header_timeout_ms`,
/// `gui.connection_idle_timeout_ms`, `gui.max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuiConnectionLimits {
    /// From accept to a finished TLS handshake. Invariant: not zero.
    pub tls_accept_timeout: Duration,
    /// From an HTTP/1 request's first byte to its last header. Invariant: not zero.
    pub header_timeout: Duration,
    /// Without a request in flight. Invariant: not zero.
    pub idle_timeout: Duration,
    /// Connections open at once. Invariant: within 1..=`RESERVED_FILES_COUNT / 2`.
    pub max_connections: NonZeroU32,
}

/// The secret agents present on every request when the frontends require one. Debug
/// does not show it. Invariant: `MIN_ENROLMENT_SECRET_CHARS..=MAX_ENROLMENT_SECRET_CHARS`
/// visible ASCII characters (it travels in an HTTP header).
#[derive(Clone, PartialEq, Eq)]
pub struct EnrolmentSecret(String);

impl EnrolmentSecret {
    pub fn parse(text: &str) -> Result<Self, String> {
        let chars = text.chars().count();
        if !(limits::MIN_ENROLMENT_SECRET_CHARS..=limits::MAX_ENROLMENT_SECRET_CHARS)
            .contains(&chars)
        {
            return Err(format!(
                "must be {}..={} characters (this one has {chars})",
                limits::MIN_ENROLMENT_SECRET_CHARS,
                limits::MAX_ENROLMENT_SECRET_CHARS
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters (no spaces)".into());
        }
        Ok(Self(text.to_string()))
    }

    /// A new random secret: `ENROLMENT_SECRET_BYTES` from the OS, base64url.
    pub fn random() -> Self {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; limits::ENROLMENT_SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for EnrolmentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrolmentSecret(..)")
    }
}

/// `[api]` when enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiPort {
    /// Where the master's gRPC API listens.
    pub address: SocketAddr,
}

/// How long a browser session lives (`gui.session_timeout_s`, `gui.session_idle_timeout_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// From login, however busy. Invariant: within 1 s..=`limits::MAX_SESSION_TIMEOUT`.
    pub absolute: Duration,
    /// Without a request. Invariant: not zero and at most `absolute` (a longer idle
    /// timeout could never bite, so it is cut to `absolute`).
    pub idle: Duration,
}

/// `[tls]`. The CA key stays in the file: only `config frontend` needs it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The deployment CA agents pin and frontends check each other against. Not empty.
    pub ca_certificate: Vec<CertificateDer<'static>>,
}

/// `[datastore]`.
#[derive(Debug, Clone)]
pub struct DatastoreSettings {
    /// Absolute, or relative to the working folder when the config path was.
    pub location: PathBuf,
    pub fsync_documents: bool,
    /// Whether an acknowledged event batch is on stable storage (true) or in the page
    /// cache of the datastore's host (false, the default): see docs/events/ingest.md.
    pub fsync_events: bool,
    /// Invariant: at most `limits::MAX_IO_THREADS_PER_EXECUTOR`.
    pub io_threads_per_executor: NonZeroUsize,
    /// The start-up mount check refuses a mount with less free space (0: not checked).
    pub min_free_bytes: u64,
}

/// `[limits]`, with units in the types: the `_ms` keys are `Duration`s.
#[derive(Debug, Clone)]
pub struct Limits {
    pub concurrency: NonZeroU32,
    pub concurrency_wait: Duration,
    pub max_connections_per_second: NonZeroU32,
    pub hunt_recruitment_per_second: NonZeroU32,
    /// Invariant: at most `limits::MAX_MAX_UPLOAD_BYTES`.
    pub max_upload_bytes: NonZeroU64,
    /// Invariant: the three timeouts are not zero.
    pub handshake_timeout: Duration,
    pub handshakes_in_flight_per_shard: NonZeroU32,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// What a collection gets where its request sets no limit of its own.
    pub collection: crate::limits::FlowLimits,
    /// Retry-After of a 503 for a full datastore. Invariant: within
    /// `limits::MIN_DISK_FULL_RETRY_AFTER..=limits::MAX_DISK_FULL_RETRY_AFTER`.
    pub disk_full_retry_after: Duration,
}

/// A `[[minions]]` entry.
#[derive(Debug, Clone)]
pub struct Minion {
    /// Its agent address and its name on the replication stream.
    pub name: HostPort,
    /// Presented to agents and to the master; signed by the deployment CA for its host.
    /// The key only in the minion's own config.
    pub tls: MinionTls,
    /// Where it serves `/metrics` on the GUI's IP; none if absent.
    pub metrics_port: Option<u16>,
}

/// A minion's certificate, and its key where this config is the minion's own.
pub struct MinionTls {
    /// Invariant: not empty.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Option<rustls::pki_types::PrivateKeyDer<'static>>,
}

/// `PrivateKeyDer` is deliberately not `Clone`; a copy here is made once per config built.
impl Clone for MinionTls {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.as_ref().map(|k| k.clone_key()),
        }
    }
}

impl std::fmt::Debug for MinionTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinionTls")
            .field("chain", &self.chain.len())
            .field("key", &self.key.is_some())
            .finish()
    }
}

/// What a frontend is in its deployment. The one carrier of the role: presence, the API
/// (which shows it as "master"/"minion") and start-up all match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrontendRole {
    /// Serves the GUI/API and hunts, and the replication service minions link to.
    Master,
    /// Serves agents and at most `/metrics`; links to the master.
    Minion,
}

impl FrontendRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Minion => "minion",
        }
    }
}

/// What differs between the frontends that share one config file.
#[derive(Debug, Clone)]
pub struct FrontendIdentity {
    /// As agents and the replication stream name this frontend.
    pub name: HostPort,
    pub agent_port: u16,
    pub tls: CertificateAndKey,
    pub role: FrontendRole,
    /// Where the GUI/API (master) or `/metrics` (minion) listens; none for a minion
    /// configured without a metrics port.
    pub api_address: Option<SocketAddr>,
}

impl FrontendIdentity {
    pub fn is_master(&self) -> bool {
        self.role == FrontendRole::Master
    }
}

/// `client.config.toml`, parsed: what every agent (and loadgen) needs to find the
/// frontends. Mirrors the file's one section.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client: ClientSettings,
}

/// `[client]`.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Every frontend's agent URL; the agent picks one at random and rotates on failure.
    /// Not empty.
    pub server_urls: Vec<ServerUrl>,
    /// The deployment CA the agent pins. Not empty.
    pub ca_certificate: Vec<CertificateDer<'static>>,
    /// Where the agent keeps its key and client id. Resolved against the config's folder.
    pub writeback_path: PathBuf,
    /// Invariant: at least `limits::MIN_CLIENT_UPLOAD_BYTES`.
    pub max_upload_bytes: u64,
    /// The agent's event buffer folder (resolved; by default beside the writeback file).
    pub event_buffer_dir: PathBuf,
    /// Invariant: at least `limits::MIN_EVENT_BUFFER_BYTES`.
    pub max_event_buffer_bytes: u64,
    /// The agent's outbox folder (resolved; by default beside the writeback file).
    pub outbox_dir: PathBuf,
    /// Invariant: at least `limits::MIN_OUTBOX_BYTES`.
    pub max_outbox_bytes: u64,
    /// Sent on every request when set (the frontends' `frontend.enrolment_secret`).
    pub enrolment_secret: Option<EnrolmentSecret>,
}

impl ServerConfig {
    /// Reads, parses and checks `path`; relative datastore paths are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ServerFile::load(path)?;
        if let Some(warning) = secrets::embedded_secrets_warning(&file, path) {
            tracing::warn!("{warning}");
        }
        file.parse(path)
    }

    /// The identity of the frontend to run: the master, or (`node` = HOST:PORT) the
    /// minion of that name.
    pub fn identity(&self, node: Option<&str>) -> Result<FrontendIdentity, ConfigError> {
        let identity = self.identity_unchecked(node)?;
        self.warn_of_missing_balancer_names(&identity);
        Ok(identity)
    }

    /// Agents that dial a balancer check its name against this frontend's certificate:
    /// one without it takes no agents through the balancer. Said at start, not refused:
    /// agents that dial the frontend directly still work.
    fn warn_of_missing_balancer_names(&self, identity: &FrontendIdentity) {
        let Some(leaf) = identity.tls.chain.first() else {
            return;
        };
        let missing = generate::names_missing_from_certificate(leaf, &self.frontend.balancer_names);
        if !missing.is_empty() {
            tracing::warn!(
                "the certificate of frontend {} is not valid for {} (frontend.balancer_names): \
                 agents dialling the balancer will refuse it; reissue it with `packhunt config \
                 frontend --balancer-name` (docs/operating.md, \"Behind a load balancer\")",
                identity.name,
                missing.join(", ")
            );
        }
    }

    fn identity_unchecked(&self, node: Option<&str>) -> Result<FrontendIdentity, ConfigError> {
        let Some(node) = node else {
            return Ok(FrontendIdentity {
                name: self.frontend.master.clone(),
                agent_port: self.frontend.master.port,
                tls: self.frontend.master_tls()?.clone(),
                role: FrontendRole::Master,
                api_address: Some(self.gui.address),
            });
        };
        let minion = HostPort::parse(node)
            .ok()
            .and_then(|name| self.minions.iter().find(|m| m.name == name));
        let Some(minion) = minion else {
            let known: Vec<String> = self.minions.iter().map(|m| m.name.to_string()).collect();
            return Err(ConfigError::Generate(format!(
                "no minion `{node}` in the config (known: {}); add it with `packhunt config frontend --name {node}`",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let Some(key) = &minion.tls.key else {
            return Err(ConfigError::Generate(format!(
                "the key of minion `{node}` is not in this config: run the minion with its own \
                 config, {}",
                secrets::minion_config_path(Path::new("server.config.toml"), &minion.name)
                    .display()
            )));
        };
        Ok(FrontendIdentity {
            name: minion.name.clone(),
            agent_port: minion.name.port,
            tls: CertificateAndKey {
                chain: minion.tls.chain.clone(),
                key: key.clone_key(),
            },
            role: FrontendRole::Minion,
            api_address: minion
                .metrics_port
                .map(|port| SocketAddr::new(self.gui.address.ip(), port)),
        })
    }

    /// Every frontend's name, the master first.
    pub fn frontend_names(&self) -> Vec<HostPort> {
        std::iter::once(self.frontend.master.clone())
            .chain(self.minions.iter().map(|m| m.name.clone()))
            .collect()
    }
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        ClientFile::load(path)?.parse(path)
    }
}

/// Names the file and the key of what is wrong.
struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn certificates(
        &self,
        key: &str,
        text: &str,
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        pem::certificates(text).map_err(|e| self.invalid(key, e.to_string()))
    }

    /// `section.certificate` and `section.private_key`, each named if it fails.
    fn certificate_and_key(
        &self,
        section: &str,
        certificate: &str,
        private_key: &str,
    ) -> Result<CertificateAndKey, ConfigError> {
        let chain = self.certificates(&format!("{section}.certificate"), certificate)?;
        let key = pem::private_key(private_key)
            .map_err(|e| self.invalid(&format!("{section}.private_key"), e.to_string()))?;
        Ok(CertificateAndKey { chain, key })
    }

    fn non_zero_u32(&self, key: &str, value: u32) -> Result<NonZeroU32, ConfigError> {
        NonZeroU32::new(value).ok_or_else(|| self.invalid(key, "must be greater than 0"))
    }

    fn non_zero_ms(&self, key: &str, value_ms: u64) -> Result<Duration, ConfigError> {
        match value_ms {
            0 => Err(self.invalid(key, "must be greater than 0")),
            ms => Ok(Duration::from_millis(ms)),
        }
    }

    fn ip(&self, key: &str, text: &str) -> Result<IpAddr, ConfigError> {
        text.parse().map_err(|_| {
            let shown: String = text.chars().take(100).collect();
            self.invalid(
                key,
                format!("`{shown}` is not an IP address (e.g. 0.0.0.0 or ::)"),
            )
        })
    }
}

impl ServerFile {
    /// Turns the file as written into the typed config, naming the first bad key.
    pub fn parse(self, path: &Path) -> Result<ServerConfig, ConfigError> {
        let check = Checker { path };
        let frontend = parse_frontend(&check, &self.frontend)?;
        let minions = parse_minions(&check, &frontend.master, &self.minions)?;
        if self.users.is_empty() {
            return Err(check.invalid("users", "at least one user is needed for the API"));
        }
        for (i, user) in self.users.iter().enumerate() {
            if argon2::PasswordHash::new(&user.password_hash).is_err() {
                return Err(check.invalid(
                    &format!("users[{i}].password_hash"),
                    format!("user `{}`: not an argon2 PHC string", user.name),
                ));
            }
        }
        let io_threads = self.datastore.io_threads_per_executor;
        let io_threads_per_executor = NonZeroUsize::new(io_threads)
            .filter(|n| n.get() <= limits::MAX_IO_THREADS_PER_EXECUTOR)
            .ok_or_else(|| {
                check.invalid(
                    "datastore.io_threads_per_executor",
                    format!("must be 1..={}", limits::MAX_IO_THREADS_PER_EXECUTOR),
                )
            })?;
        Ok(ServerConfig {
            gui: Gui {
                address: SocketAddr::new(
                    check.ip("gui.bind_address", &self.gui.bind_address)?,
                    self.gui.port,
                ),
                priority: self.gui.priority,
                sessions: parse_session_timeouts(&check, &self.gui)?,
                connections: parse_gui_connections(&check, &self.gui)?,
            },
            api: match &self.api {
                Some(api) if api.enabled => Some(ApiPort {
                    address: SocketAddr::new(
                        check.ip("api.bind_address", &api.bind_address)?,
                        api.port,
                    ),
                }),
                _ => None,
            },
            tls: ServerTls {
                ca_certificate: check
                    .certificates("tls.ca_certificate", &self.tls.ca_certificate)?,
            },
            datastore: DatastoreSettings {
                location: self.datastore.location,
                fsync_documents: self.datastore.fsync_documents,
                fsync_events: self.datastore.fsync_events,
                io_threads_per_executor,
                min_free_bytes: self.datastore.min_free_bytes,
            },
            limits: parse_limits(&check, &self.limits)?,
            frontend,
            users: self.users,
            minions,
            sinks: sinks::parse_sinks(&check, &self.sinks)?,
            path: path.to_path_buf(),
        })
    }
}

fn parse_gui_connections(
    check: &Checker<'_>,
    gui: &GuiSection,
) -> Result<GuiConnectionLimits, ConfigError> {
    let most = limits::RESERVED_FILES_COUNT / 2;
    let max_connections = NonZeroU32::new(gui.max_connections)
        .filter(|n| u64::from(n.get()) <= most)
        .ok_or_else(|| {
            check.invalid(
                "gui.max_connections",
                format!("must be 1..={most}: GUI connections use the files kept back from agents"),
            )
        })?;
    Ok(GuiConnectionLimits {
        tls_accept_timeout: check
            .non_zero_ms("gui.tls_accept_timeout_ms", gui.tls_accept_timeout_ms)?,
        header_timeout: check.non_zero_ms("gui.header_timeout_ms", gui.header_timeout_ms)?,
        idle_timeout: check.non_zero_ms(
            "gui.connection_idle_timeout_ms",
            gui.connection_idle_timeout_ms,
        )?,
        max_connections,
    })
}

fn parse_enrolment_secret(
    check: &Checker<'_>,
    key: &str,
    text: Option<&str>,
) -> Result<Option<EnrolmentSecret>, ConfigError> {
    text.map(|t| EnrolmentSecret::parse(t).map_err(|e| check.invalid(key, e)))
        .transpose()
}

fn parse_session_timeouts(
    check: &Checker<'_>,
    gui: &GuiSection,
) -> Result<SessionTimeouts, ConfigError> {
    let max_s = limits::MAX_SESSION_TIMEOUT.as_secs();
    if gui.session_timeout_s == 0 || gui.session_timeout_s > max_s {
        return Err(check.invalid(
            "gui.session_timeout_s",
            format!(
                "must be 1..={max_s} seconds (default {})",
                limits::DEFAULT_SESSION_TIMEOUT.as_secs()
            ),
        ));
    }
    if gui.session_idle_timeout_s == 0 {
        return Err(check.invalid(
            "gui.session_idle_timeout_s",
            format!(
                "must be greater than 0 seconds (default {})",
                limits::DEFAULT_SESSION_IDLE_TIMEOUT.as_secs()
            ),
        ));
    }
    let absolute = Duration::from_secs(gui.session_timeout_s);
    Ok(SessionTimeouts {
        absolute,
        idle: Duration::from_secs(gui.session_idle_timeout_s).min(absolute),
    })
}

fn parse_frontend(check: &Checker<'_>, f: &FrontendSection) -> Result<Frontend, ConfigError> {
    // The host goes into certificates, TLS names and URLs: only what all three carry.
    let master_tls_name = ServerName::try_from(f.public_host.clone()).map_err(|_| {
        check.invalid(
            "frontend.public_host",
            "is neither an IP address nor a DNS name",
        )
    })?;
    if !(limits::MIN_IO_RING_DEPTH..=limits::MAX_IO_RING_DEPTH).contains(&f.io_ring_depth) {
        return Err(check.invalid(
            "frontend.io_ring_depth",
            format!(
                "must be between {} and {}",
                limits::MIN_IO_RING_DEPTH,
                limits::MAX_IO_RING_DEPTH
            ),
        ));
    }
    if !(limits::MIN_FILE_WORK_NICE..=limits::MAX_FILE_WORK_NICE).contains(&f.file_work_nice) {
        return Err(check.invalid(
            "frontend.file_work_nice",
            format!(
                "must be between {} and {}",
                limits::MIN_FILE_WORK_NICE,
                limits::MAX_FILE_WORK_NICE
            ),
        ));
    }
    if f.io_memory_bytes < limits::MIN_IO_MEMORY_BYTES {
        return Err(check.invalid(
            "frontend.io_memory_bytes",
            format!(
                "glommio needs at least {} bytes",
                limits::MIN_IO_MEMORY_BYTES
            ),
        ));
    }
    if f.max_open_files <= limits::RESERVED_FILES_COUNT {
        return Err(check.invalid(
            "frontend.max_open_files",
            format!(
                "must exceed the {} files kept in reserve",
                limits::RESERVED_FILES_COUNT
            ),
        ));
    }
    Ok(Frontend {
        master: HostPort {
            host: f.public_host.clone(),
            port: f.agent_port,
        },
        master_tls_name,
        bind_address: check.ip("frontend.bind_address", &f.bind_address)?,
        replication_port: f.replication_port,
        shards: NonZeroUsize::new(f.shards),
        io_memory_bytes: f.io_memory_bytes,
        io_ring_depth: f.io_ring_depth,
        file_work_nice: f.file_work_nice,
        max_open_files: f.max_open_files,
        transparent_huge_pages: f.transparent_huge_pages,
        drain_timeout: parse_drain_timeout(check, f.drain_timeout_ms)?,
        tls: f
            .private_key
            .as_deref()
            .map(|key| check.certificate_and_key("frontend", &f.certificate, key))
            .transpose()?,
        enrolment_secret: parse_enrolment_secret(
            check,
            "frontend.enrolment_secret",
            f.enrolment_secret.as_deref(),
        )?,
        balancer_names: parse_balancer_names(check, &f.balancer_names)?,
    })
}

/// Each name goes into certificates and is what agents dial: an IP address or DNS name.
fn parse_balancer_names(check: &Checker<'_>, names: &[String]) -> Result<Vec<String>, ConfigError> {
    for name in names {
        if ServerName::try_from(name.as_str()).is_err() {
            let shown: String = name.chars().take(100).collect();
            return Err(check.invalid(
                "frontend.balancer_names",
                format!("`{shown}` is neither an IP address nor a DNS name"),
            ));
        }
    }
    Ok(names.to_vec())
}

fn parse_drain_timeout(check: &Checker<'_>, ms: u64) -> Result<Duration, ConfigError> {
    let timeout = Duration::from_millis(ms);
    if ms == 0 || timeout > limits::MAX_DRAIN_TIMEOUT {
        return Err(check.invalid(
            "frontend.drain_timeout_ms",
            format!(
                "must be between 1 and {} ms (default {})",
                limits::MAX_DRAIN_TIMEOUT.as_millis(),
                limits::DEFAULT_DRAIN_TIMEOUT.as_millis()
            ),
        ));
    }
    Ok(timeout)
}

fn parse_limits(check: &Checker<'_>, l: &LimitsSection) -> Result<Limits, ConfigError> {
    let max_upload_bytes = NonZeroU64::new(l.max_upload_bytes)
        .filter(|n| n.get() <= limits::MAX_MAX_UPLOAD_BYTES)
        .ok_or_else(|| {
            check.invalid(
                "limits.max_upload_bytes",
                format!("must be 1..={}", limits::MAX_MAX_UPLOAD_BYTES),
            )
        })?;
    Ok(Limits {
        concurrency: check.non_zero_u32("limits.concurrency", l.concurrency)?,
        concurrency_wait: Duration::from_millis(l.concurrency_wait_ms),
        max_connections_per_second: check.non_zero_u32(
            "limits.max_connections_per_second",
            l.max_connections_per_second,
        )?,
        hunt_recruitment_per_second: check.non_zero_u32(
            "limits.hunt_recruitment_per_second",
            l.hunt_recruitment_per_second,
        )?,
        max_upload_bytes,
        handshake_timeout: check
            .non_zero_ms("limits.handshake_timeout_ms", l.handshake_timeout_ms)?,
        handshakes_in_flight_per_shard: check.non_zero_u32(
            "limits.handshakes_in_flight_per_shard",
            l.handshakes_in_flight_per_shard,
        )?,
        idle_timeout: check.non_zero_ms("limits.idle_timeout_ms", l.idle_timeout_ms)?,
        request_timeout: check.non_zero_ms("limits.request_timeout_ms", l.request_timeout_ms)?,
        collection: crate::limits::FlowLimits {
            timeout_s: l.collection_timeout_s,
            max_rows: l.collection_max_rows,
            max_upload_bytes: l.collection_max_upload_bytes,
        },
        disk_full_retry_after: disk_full_retry_after(check, l.disk_full_retry_after_s)?,
    })
}

/// `limits.disk_full_retry_after_s`, within what agents honour.
fn disk_full_retry_after(check: &Checker<'_>, seconds: u64) -> Result<Duration, ConfigError> {
    let (min, max) = (
        limits::MIN_DISK_FULL_RETRY_AFTER.as_secs(),
        limits::MAX_DISK_FULL_RETRY_AFTER.as_secs(),
    );
    if !(min..=max).contains(&seconds) {
        return Err(check.invalid(
            "limits.disk_full_retry_after_s",
            format!(
                "must be {min}..={max} seconds (agents wait at most {max} s whatever they are told)"
            ),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

fn parse_minions(
    check: &Checker<'_>,
    master: &HostPort,
    entries: &[MinionEntry],
) -> Result<Vec<Minion>, ConfigError> {
    let mut names = std::collections::HashSet::from([master.clone()]);
    let mut minions = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("minions[{i}]");
        let name =
            HostPort::parse(&entry.name).map_err(|e| check.invalid(&format!("{key}.name"), e))?;
        if !names.insert(name.clone()) {
            return Err(check.invalid(
                &format!("{key}.name"),
                format!("`{}` is listed twice", entry.name),
            ));
        }
        let chain = check.certificates(&format!("{key}.certificate"), &entry.certificate)?;
        let private_key = entry
            .private_key
            .as_deref()
            .map(|pem| {
                pem::private_key(pem)
                    .map_err(|e| check.invalid(&format!("{key}.private_key"), e.to_string()))
            })
            .transpose()?;
        minions.push(Minion {
            name,
            tls: MinionTls {
                chain,
                key: private_key,
            },
            metrics_port: entry.metrics_port,
        });
    }
    Ok(minions)
}

impl ClientFile {
    /// Turns the file as written into the typed config, naming the first bad key.
    pub fn parse(self, path: &Path) -> Result<ClientConfig, ConfigError> {
        let check = Checker { path };
        let c = self.client;
        if c.server_urls.is_empty() {
            return Err(check.invalid("client.server_urls", "needs at least one URL"));
        }
        let server_urls = c
            .server_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                ServerUrl::parse(url)
                    .map_err(|e| check.invalid(&format!("client.server_urls[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ca_certificate = check.certificates("client.ca_certificate", &c.ca_certificate)?;
        if c.max_upload_bytes < limits::MIN_CLIENT_UPLOAD_BYTES {
            return Err(check.invalid(
                "client.max_upload_bytes",
                format!("must be at least {}", limits::MIN_CLIENT_UPLOAD_BYTES),
            ));
        }
        if c.max_event_buffer_bytes < limits::MIN_EVENT_BUFFER_BYTES {
            return Err(check.invalid(
                "client.max_event_buffer_bytes",
                format!("must be at least {}", limits::MIN_EVENT_BUFFER_BYTES),
            ));
        }
        if c.max_outbox_bytes < limits::MIN_OUTBOX_BYTES {
            return Err(check.invalid(
                "client.max_outbox_bytes",
                format!("must be at least {}", limits::MIN_OUTBOX_BYTES),
            ));
        }
        let event_buffer_dir = c
            .event_buffer_dir
            .unwrap_or_else(|| c.writeback_path.with_extension("events"));
        let outbox_dir = c
            .outbox_dir
            .unwrap_or_else(|| c.writeback_path.with_extension("outbox"));
        Ok(ClientConfig {
            client: ClientSettings {
                server_urls,
                ca_certificate,
                writeback_path: c.writeback_path,
                max_upload_bytes: c.max_upload_bytes,
                event_buffer_dir,
                max_event_buffer_bytes: c.max_event_buffer_bytes,
                outbox_dir,
                max_outbox_bytes: c.max_outbox_bytes,
                enrolment_secret: parse_enrolment_secret(
                    &check,
                    "client.enrolment_secret",
                    c.enrolment_secret.as_deref(),
                )?,
            },
        })
    }
}

/// Writes `value` as TOML to `path` atomically (temp file + rename).
pub fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), ConfigError> {
    let text = toml::to_string_pretty(value).map_err(|e| ConfigError::Generate(e.to_string()))?;
    write_text(path, &text)
}

/// Writes `text` to `path` atomically (temp file + rename).
pub fn write_text(path: &Path, text: &str) -> Result<(), ConfigError> {
    let tmp = path.with_extension("toml.tmp");
    let write = |p: &Path, t: &str| std::fs::write(p, t);
    write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            error: source,
        })
}

fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        error: source,
    })?;
    // toml's error message names the key and shows the offending line.
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn resolve(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(p)
}

#[cfg(test)]
mod tests {
    //! Goal: a broken config fails at load naming the file, the key and what is wrong.
    //! Method: generate a valid config, break one thing, load, match the error.
    use super::*;

    /// A freshly generated deployment and its parsed server config as a TOML tree.
    fn generated() -> (tempfile::TempDir, PathBuf, toml::Value) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = generate::GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        let path = generate::generate(&opts)
            .expect("generate")
            .server_config_path;
        let value = std::fs::read_to_string(&path)
            .unwrap()
            .parse::<toml::Value>()
            .unwrap();
        (dir, path, value)
    }

    fn load_edited(edit: impl FnOnce(&mut toml::Value)) -> (PathBuf, ConfigError) {
        let (_dir, path, mut value) = generated();
        edit(&mut value);
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let err = ServerConfig::load(&path).expect_err("edited config must not load");
        (path, err)
    }

    /// A generated config with `edit` applied, which must load.
    fn load_accepted(edit: impl FnOnce(&mut toml::Value)) -> ServerConfig {
        let (_dir, path, mut value) = generated();
        edit(&mut value);
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        ServerConfig::load(&path).expect("edited config must load")
    }

    fn table<'a>(value: &'a mut toml::Value, key: &str) -> &'a mut toml::Table {
        value
            .get_mut(key)
            .and_then(toml::Value::as_table_mut)
            .expect(key)
    }

    #[test]
    fn unknown_keys_are_named() {
        let (path, err) = load_edited(|v| {
            table(v, "gui").insert("colour_scheme".into(), "dark".into());
        });
        let message = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{message}");
        assert!(message.contains("colour_scheme"), "{message}");
        assert!(message.contains(&*path.to_string_lossy()), "{message}");

        let (_, err) = load_edited(|v| {
            v.as_table_mut()
                .unwrap()
                .insert("frontends".into(), 1.into());
        });
        assert!(err.to_string().contains("frontends"), "{err}");
    }

    #[test]
    fn zero_upload_limit_is_invalid() {
        let (path, err) = load_edited(|v| {
            table(v, "limits").insert("max_upload_bytes".into(), 0.into());
        });
        match &err {
            ConfigError::Invalid { path: p, key, .. } => {
                assert_eq!(key, "limits.max_upload_bytes");
                assert_eq!(p, &path);
            }
            other => panic!("expected Invalid, got {other}"),
        }
        assert!(err.to_string().contains("limits.max_upload_bytes"));
    }

    #[test]
    fn zero_io_threads_is_invalid() {
        let (_, err) = load_edited(|v| {
            table(v, "datastore").insert("io_threads_per_executor".into(), 0.into());
        });
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "datastore.io_threads_per_executor"),
            "{err}"
        );
    }

    #[test]
    fn io_ring_depth_out_of_bounds_is_invalid() {
        for depth in [0, 63, 32_769] {
            let (_, err) = load_edited(|v| {
                table(v, "frontend").insert("io_ring_depth".into(), depth.into());
            });
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == "frontend.io_ring_depth"),
                "{depth}: {err}"
            );
        }
        // Configs written before the key existed load with the default.
        let config = load_accepted(|v| {
            table(v, "frontend").remove("io_ring_depth");
        });
        assert_eq!(config.frontend.io_ring_depth, limits::DEFAULT_IO_RING_DEPTH);
    }

    // Goal: `frontend.file_work_nice` outside what a process may set itself (0–19) is
    // refused by name, and configs written before the key existed get the default.
    #[test]
    fn file_work_nice_is_checked_and_defaults() {
        for nice in [-1, 20] {
            let (_, err) = load_edited(|v| {
                table(v, "frontend").insert("file_work_nice".into(), nice.into());
            });
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == "frontend.file_work_nice"),
                "{nice}: {err}"
            );
        }
        let config = load_accepted(|v| {
            table(v, "frontend").remove("file_work_nice");
        });
        assert_eq!(
            config.frontend.file_work_nice,
            limits::DEFAULT_FILE_WORK_NICE
        );
    }

    // Goal: the disk-full Retry-After is a key with bounds agents honour, and configs
    // written before it existed get the 300 s default. Method: edit a generated config.
    #[test]
    fn disk_full_retry_after_is_checked_and_defaults() {
        for seconds in [0, limits::MAX_DISK_FULL_RETRY_AFTER.as_secs() as i64 + 1] {
            let (_, err) = load_edited(|v| {
                table(v, "limits").insert("disk_full_retry_after_s".into(), seconds.into());
            });
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == "limits.disk_full_retry_after_s"),
                "{seconds}: {err}"
            );
        }
        let (_dir, path, mut value) = generated();
        table(&mut value, "limits").insert("disk_full_retry_after_s".into(), 7.into());
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).expect("config with a short disk-full wait");
        assert_eq!(config.limits.disk_full_retry_after, Duration::from_secs(7));
        table(&mut value, "limits").remove("disk_full_retry_after_s");
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).expect("config without the key");
        assert_eq!(
            config.limits.disk_full_retry_after,
            limits::RETRY_AFTER_DISK_FULL
        );
    }

    #[test]
    fn session_timeouts_are_checked_and_default() {
        for (key, value) in [
            ("session_timeout_s", 0),
            ("session_timeout_s", 31 * 24 * 3600),
            ("session_idle_timeout_s", 0),
        ] {
            let (_, err) = load_edited(|v| {
                table(v, "gui").insert(key.into(), value.into());
            });
            assert_eq!(invalid_key(&err), format!("gui.{key}"), "{err}");
            assert!(err.to_string().contains("default"), "{err}");
        }
        // Configs written before the keys existed load with the defaults; an idle timeout
        // longer than the session's is cut to it.
        let (_dir, path, mut value) = generated();
        table(&mut value, "gui").remove("session_timeout_s");
        table(&mut value, "gui").remove("session_idle_timeout_s");
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).expect("config without session keys");
        assert_eq!(
            config.gui.sessions.absolute,
            limits::DEFAULT_SESSION_TIMEOUT
        );
        assert_eq!(
            config.gui.sessions.idle,
            limits::DEFAULT_SESSION_IDLE_TIMEOUT
        );
        table(&mut value, "gui").insert("session_timeout_s".into(), 5.into());
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).expect("config with a short session");
        assert_eq!(config.gui.sessions.idle, Duration::from_secs(5));
    }

    #[test]
    fn bad_password_hash_is_invalid() {
        let (_, err) = load_edited(|v| {
            let users = v
                .get_mut("users")
                .and_then(toml::Value::as_array_mut)
                .unwrap();
            let admin = users[0].as_table_mut().unwrap();
            admin.insert("password_hash".into(), "plaintext-password".into());
        });
        match &err {
            ConfigError::Invalid { key, message, .. } => {
                assert_eq!(key, "users[0].password_hash");
                assert!(message.contains("admin"), "{message}");
                assert!(
                    !message.contains("plaintext-password"),
                    "never echo the secret"
                );
            }
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn broken_certificate_is_invalid() {
        let (_, err) = load_edited(|v| {
            table(v, "frontend").insert("certificate".into(), "not pem".into());
        });
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "frontend.certificate"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_a_read_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = ServerConfig::load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { path: p, .. } if p == &path),
            "{err}"
        );
        assert!(err.to_string().contains("absent.toml"));
        assert!(matches!(
            ClientConfig::load(&path),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn syntax_error_is_a_parse_error_with_the_path() {
        let (_dir, path, _) = generated();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n[frontend\n")).unwrap();
        let err = ServerConfig::load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { path: p, .. } if p == &path),
            "{err}"
        );
    }

    #[test]
    fn absolute_datastore_location_is_kept() {
        let (_dir, path, mut value) = generated();
        table(&mut value, "datastore").insert("location".into(), "/srv/packhunt".into());
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(config.datastore.location, Path::new("/srv/packhunt"));
    }

    /// The key an `Invalid` error names, or a panic showing what came instead.
    fn invalid_key(err: &ConfigError) -> &str {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn strings_that_must_parse_name_their_key() {
        let cases: [(&str, &str, toml::Value, &str); 6] = [
            (
                "frontend",
                "bind_address",
                "all".into(),
                "frontend.bind_address",
            ),
            (
                "gui",
                "bind_address",
                "localhost:80".into(),
                "gui.bind_address",
            ),
            (
                "frontend",
                "public_host",
                "bad host".into(),
                "frontend.public_host",
            ),
            (
                "frontend",
                "private_key",
                "not pem".into(),
                "frontend.private_key",
            ),
            ("tls", "ca_certificate", "".into(), "tls.ca_certificate"),
            (
                "limits",
                "idle_timeout_ms",
                0.into(),
                "limits.idle_timeout_ms",
            ),
        ];
        for (section, key, value, named) in cases {
            let (path, err) = load_edited(|v| {
                table(v, section).insert(key.into(), value.clone());
            });
            assert_eq!(invalid_key(&err), named, "{err}");
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        }
    }

    #[test]
    fn minion_entries_are_parsed_and_checked() {
        let (_dir, path, mut value) = generated();
        let frontend = table(&mut value, "frontend").clone();
        let minion = |name: &str| {
            let mut m = toml::Table::new();
            m.insert("name".into(), name.into());
            m.insert("certificate".into(), frontend["certificate"].clone());
            m.insert("private_key".into(), frontend["private_key"].clone());
            toml::Value::Table(m)
        };
        let load_with = |minions: Vec<toml::Value>| {
            let mut value = value.clone();
            let root = value.as_table_mut().expect("a table");
            root.insert("minions".into(), toml::Value::Array(minions));
            std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
            ServerConfig::load(&path)
        };
        let err = load_with(vec![minion("no-port")]).unwrap_err();
        assert_eq!(invalid_key(&err), "minions[0].name", "{err}");
        let err = load_with(vec![minion("127.0.0.1:9100"), minion("127.0.0.1:9100")]).unwrap_err();
        assert_eq!(invalid_key(&err), "minions[1].name", "{err}");
        let err = load_with(vec![minion("127.0.0.1:8000")]).unwrap_err();
        assert!(
            err.to_string().contains("listed twice"),
            "the master's name: {err}"
        );

        let config = load_with(vec![minion("[::1]:9100")]).expect("a valid minion");
        assert_eq!(config.minions[0].name.port, 9100);
        let identity = config.identity(Some("[::1]:9100")).expect("the minion");
        assert_eq!(identity.role, FrontendRole::Minion);
        assert_eq!(identity.api_address, None, "no metrics port configured");
        let master = config.identity(None).expect("the master");
        assert_eq!(master.api_address, Some(config.gui.address));
        assert_eq!(master.name.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn typed_values_carry_the_units() {
        let (_dir, path, mut value) = generated();
        let limits = table(&mut value, "limits");
        limits.insert("request_timeout_ms".into(), 1500.into());
        limits.insert("concurrency_wait_ms".into(), 0.into());
        table(&mut value, "frontend").insert("shards".into(), 3.into());
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).expect("a valid config");
        assert_eq!(config.limits.request_timeout, Duration::from_millis(1500));
        assert_eq!(
            config.limits.concurrency_wait,
            Duration::ZERO,
            "0 = no wait"
        );
        assert_eq!(config.frontend.shards.map(NonZeroUsize::get), Some(3));
        assert_eq!(
            config.frontend.replication_address().ip(),
            IpAddr::from([0, 0, 0, 0])
        );
        assert!(!config.frontend.master_tls().unwrap().chain.is_empty());
    }

    #[test]
    fn client_config_urls_and_ca_are_parsed() {
        let (dir, _, _) = generated();
        let path = dir.path().join(generate::CLIENT_CONFIG_FILE);
        let mut file = ClientFile::load(&path).expect("the generated client config");
        let original = file.clone();
        file.client.server_urls.push("http://127.0.0.1:1/".into());
        write_toml(&path, &file).unwrap();
        let err = ClientConfig::load(&path).unwrap_err();
        assert_eq!(invalid_key(&err), "client.server_urls[1]", "{err}");

        let mut file = original.clone();
        file.client.server_urls.clear();
        write_toml(&path, &file).unwrap();
        let err = ClientConfig::load(&path).unwrap_err();
        assert_eq!(invalid_key(&err), "client.server_urls", "{err}");

        let mut file = original.clone();
        file.client.max_upload_bytes = 10;
        write_toml(&path, &file).unwrap();
        let err = ClientConfig::load(&path).unwrap_err();
        assert_eq!(invalid_key(&err), "client.max_upload_bytes", "{err}");

        write_toml(&path, &original).unwrap();
        file.client.max_upload_bytes = crate::limits::DEFAULT_MAX_UPLOAD_BYTES;
        file.client.max_event_buffer_bytes = 10;
        write_toml(&path, &file).unwrap();
        let err = ClientConfig::load(&path).unwrap_err();
        assert_eq!(invalid_key(&err), "client.max_event_buffer_bytes", "{err}");
        file.client.max_event_buffer_bytes = crate::limits::DEFAULT_MAX_EVENT_BUFFER_BYTES;
        file.client.event_buffer_dir = Some("spool/events".into());
        write_toml(&path, &file).unwrap();
        let config = ClientConfig::load(&path).expect("an event buffer folder of its own");
        assert_eq!(
            config.client.event_buffer_dir,
            dir.path().join("spool/events")
        );
        file.client.event_buffer_dir = None;
        write_toml(&path, &file).unwrap();
        let config = ClientConfig::load(&path).expect("the original loads again");
        assert_eq!(
            config.client.event_buffer_dir,
            config.client.writeback_path.with_extension("events"),
            "the event buffer sits beside the writeback file by default"
        );
        assert_eq!(
            config.client.server_urls[0].port,
            generate::DEFAULT_FRONTEND_PORT
        );
        assert!(!config.client.ca_certificate.is_empty());
    }
}
