//! The typed configuration: `server.config.toml` (frontends) and `client.config.toml`
//! (agents). Parsing happens here and only here: a broken file fails at start with the
//! file, the key and what is wrong; nothing past this module sees raw strings for
//! durations, roles or paths.

pub mod generate;
pub mod minion;
pub mod url;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits;

/// The master's replication port when `config generate` is not told otherwise.
pub const DEFAULT_REPLICATION_PORT: u16 = 8001;

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

/// `server.config.toml`: one file shared by the master and every minion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub frontend: FrontendSection,
    pub gui: GuiSection,
    pub tls: ServerTlsSection,
    pub datastore: DatastoreSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// Minion frontends added with `packhunt config frontend`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minions: Vec<MinionEntry>,
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
    /// Open files this process may use (production raises `LimitNOFILE`).
    #[serde(default = "default_max_open_files")]
    pub max_open_files: u64,
    /// Transparent huge pages for this process. Off by default: the allocator's huge
    /// pages are only partly used by 19k small idle connections, which costs ~7-13 KiB of
    /// RSS per agent (tuning.md); turn on only for heaps that fill them.
    #[serde(default)]
    pub transparent_huge_pages: bool,
    /// PEM certificate + key the agent port presents (the master's).
    pub certificate: String,
    pub private_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuiSection {
    pub bind_address: String,
    pub port: u16,
    /// Where GUI/API work runs relative to agent work.
    #[serde(default)]
    pub priority: GuiPriority,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSection {
    /// PEM of the deployment CA; agents pin it.
    pub ca_certificate: String,
    /// PEM of the CA key: needed to sign minion certificates (`config frontend`).
    pub ca_private_key: String,
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
    /// Threads per executor that do datastore file work (mostly waiting on the disk or
    /// NFS, so more threads than cores: fsyncs and NFS round trips then overlap).
    #[serde(default = "default_io_threads")]
    pub io_threads_per_executor: usize,
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
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            concurrency: limits::default_concurrency(),
            concurrency_wait_ms: limits::DEFAULT_CONCURRENCY_WAIT.as_millis() as u64,
            max_connections_per_second: limits::DEFAULT_MAX_CONNECTIONS_PER_SECOND,
            hunt_recruitment_per_second: limits::DEFAULT_HUNT_RECRUITMENT_PER_SECOND,
            max_upload_bytes: limits::DEFAULT_MAX_UPLOAD_BYTES,
            handshake_timeout_ms: limits::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
            handshakes_in_flight_per_shard: limits::DEFAULT_HANDSHAKES_IN_FLIGHT_PER_SHARD,
            idle_timeout_ms: limits::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            request_timeout_ms: limits::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64,
        }
    }
}

impl LimitsSection {
    pub fn concurrency_wait(&self) -> Duration {
        Duration::from_millis(self.concurrency_wait_ms)
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Administrator,
    Reader,
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
    /// agents on the agent port and to the master on the replication link.
    pub certificate: String,
    pub private_key: String,
    /// Port on `gui.bind_address` where the minion serves `/metrics` (a minion has no
    /// GUI); none if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
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
    /// HOST:PORT, as agents and the replication stream name this frontend.
    pub name: String,
    pub agent_port: u16,
    pub certificate: String,
    pub private_key: String,
    pub role: FrontendRole,
    /// Where the GUI/API (master) or `/metrics` (minion) listens on `gui.bind_address`;
    /// none for a minion configured without a metrics port.
    pub api_port: Option<u16>,
}

impl FrontendIdentity {
    pub fn is_master(&self) -> bool {
        self.role == FrontendRole::Master
    }
}

/// `client.config.toml`: what every agent (and loadgen) needs to find the frontends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
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
}

fn default_true() -> bool {
    true
}
fn default_io_threads() -> usize {
    limits::DEFAULT_IO_THREADS_PER_EXECUTOR
}
fn default_io_ring_depth() -> usize {
    limits::DEFAULT_IO_RING_DEPTH
}

fn default_io_memory_bytes() -> usize {
    limits::DEFAULT_IO_MEMORY_BYTES
}
fn default_max_open_files() -> u64 {
    limits::DEFAULT_MAX_OPEN_FILES
}
fn default_replication_port() -> u16 {
    DEFAULT_REPLICATION_PORT
}
fn default_max_upload_bytes() -> u64 {
    limits::DEFAULT_MAX_UPLOAD_BYTES
}

impl ServerConfig {
    /// Reads, parses and validates `path`; relative datastore paths are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: ServerConfig = load_toml(path)?;
        config.datastore.location = resolve(path, &config.datastore.location);
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let l = &self.limits;
        if l.max_upload_bytes == 0 || l.max_upload_bytes > limits::MAX_MAX_UPLOAD_BYTES {
            return Err(invalid(
                "limits.max_upload_bytes",
                format!("must be 1..={}", limits::MAX_MAX_UPLOAD_BYTES),
            ));
        }
        for (key, value) in [
            ("limits.concurrency", l.concurrency as u64),
            (
                "limits.max_connections_per_second",
                l.max_connections_per_second as u64,
            ),
            (
                "limits.hunt_recruitment_per_second",
                l.hunt_recruitment_per_second as u64,
            ),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            (
                "limits.handshakes_in_flight_per_shard",
                l.handshakes_in_flight_per_shard as u64,
            ),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.request_timeout_ms", l.request_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if !(limits::MIN_IO_RING_DEPTH..=limits::MAX_IO_RING_DEPTH)
            .contains(&self.frontend.io_ring_depth)
        {
            return Err(invalid(
                "frontend.io_ring_depth",
                format!(
                    "must be between {} and {}",
                    limits::MIN_IO_RING_DEPTH,
                    limits::MAX_IO_RING_DEPTH
                ),
            ));
        }
        if self.frontend.io_memory_bytes < limits::MIN_IO_MEMORY_BYTES {
            return Err(invalid(
                "frontend.io_memory_bytes",
                format!(
                    "glommio needs at least {} bytes",
                    limits::MIN_IO_MEMORY_BYTES
                ),
            ));
        }
        if self.frontend.max_open_files <= limits::RESERVED_FILES {
            return Err(invalid(
                "frontend.max_open_files",
                format!(
                    "must exceed the {} files kept in reserve",
                    limits::RESERVED_FILES
                ),
            ));
        }
        let io_threads = self.datastore.io_threads_per_executor;
        if io_threads == 0 || io_threads > limits::MAX_IO_THREADS_PER_EXECUTOR {
            return Err(invalid(
                "datastore.io_threads_per_executor",
                format!("must be 1..={}", limits::MAX_IO_THREADS_PER_EXECUTOR),
            ));
        }
        if self.users.is_empty() {
            return Err(invalid(
                "users",
                "at least one user is needed for the API".into(),
            ));
        }
        for (i, user) in self.users.iter().enumerate() {
            if argon2::PasswordHash::new(&user.password_hash).is_err() {
                return Err(invalid(
                    &format!("users[{i}].password_hash"),
                    format!("user `{}`: not an argon2 PHC string", user.name),
                ));
            }
        }
        crate::tls::pem::check_certificate(&self.tls.ca_certificate)
            .map_err(|e| invalid("tls.ca_certificate", e.to_string()))?;
        crate::tls::pem::check_certificate(&self.frontend.certificate)
            .map_err(|e| invalid("frontend.certificate", e.to_string()))?;
        crate::tls::pem::check_private_key(&self.frontend.private_key)
            .map_err(|e| invalid("frontend.private_key", e.to_string()))?;
        let mut names = std::collections::HashSet::from([self.master_name()]);
        for (i, minion) in self.minions.iter().enumerate() {
            parse_node(&minion.name).map_err(|e| invalid(&format!("minions[{i}].name"), e))?;
            if !names.insert(minion.name.clone()) {
                return Err(invalid(
                    &format!("minions[{i}].name"),
                    format!("`{}` is listed twice", minion.name),
                ));
            }
            crate::tls::pem::check_certificate(&minion.certificate)
                .map_err(|e| invalid(&format!("minions[{i}].certificate"), e.to_string()))?;
            crate::tls::pem::check_private_key(&minion.private_key)
                .map_err(|e| invalid(&format!("minions[{i}].private_key"), e.to_string()))?;
        }
        Ok(())
    }

    /// The identity of the frontend to run: the master, or (`node` = HOST:PORT) the
    /// minion of that name.
    pub fn identity(&self, node: Option<&str>) -> Result<FrontendIdentity, ConfigError> {
        let Some(node) = node else {
            return Ok(FrontendIdentity {
                name: self.master_name(),
                agent_port: self.frontend.agent_port,
                certificate: self.frontend.certificate.clone(),
                private_key: self.frontend.private_key.clone(),
                role: FrontendRole::Master,
                api_port: Some(self.gui.port),
            });
        };
        let Some(minion) = self.minions.iter().find(|m| m.name == node) else {
            let known: Vec<&str> = self.minions.iter().map(|m| m.name.as_str()).collect();
            return Err(ConfigError::Generate(format!(
                "no minion `{node}` in the config (known: {}); add it with `packhunt config frontend --name {node}`",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let (_, agent_port) = parse_node(node).map_err(ConfigError::Generate)?;
        Ok(FrontendIdentity {
            name: minion.name.clone(),
            agent_port,
            certificate: minion.certificate.clone(),
            private_key: minion.private_key.clone(),
            role: FrontendRole::Minion,
            api_port: minion.metrics_port,
        })
    }

    /// Every frontend's name, the master first.
    pub fn frontend_names(&self) -> Vec<String> {
        std::iter::once(self.master_name())
            .chain(self.minions.iter().map(|m| m.name.clone()))
            .collect()
    }

    /// This frontend's name: `public_host:agent_port`.
    pub fn master_name(&self) -> String {
        format!("{}:{}", self.frontend.public_host, self.frontend.agent_port)
    }
}

/// Splits a frontend name `HOST:PORT` (IPv6 hosts in brackets).
pub fn parse_node(name: &str) -> Result<(String, u16), String> {
    let url = crate::config::url::ServerUrl::parse(&format!("https://{name}/"))
        .map_err(|e| format!("`{name}` is not HOST:PORT: {e}"))?;
    Ok((url.host, url.port))
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: ClientConfig = load_toml(path)?;
        config.client.writeback_path = resolve(path, &config.client.writeback_path);
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if config.client.server_urls.is_empty() {
            return Err(invalid(
                "client.server_urls",
                "needs at least one URL".into(),
            ));
        }
        for (i, url) in config.client.server_urls.iter().enumerate() {
            if let Err(e) = crate::config::url::ServerUrl::parse(url) {
                return Err(invalid(&format!("client.server_urls[{i}]"), e.to_string()));
            }
        }
        crate::tls::pem::check_certificate(&config.client.ca_certificate)
            .map_err(|e| invalid("client.ca_certificate", e.to_string()))?;
        if config.client.max_upload_bytes < 1024 {
            return Err(invalid(
                "client.max_upload_bytes",
                "must be at least 1024".into(),
            ));
        }
        Ok(config)
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
        let (_dir, path, mut value) = generated();
        table(&mut value, "frontend").remove("io_ring_depth");
        std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
        let config = ServerConfig::load(&path).expect("config without io_ring_depth");
        assert_eq!(config.frontend.io_ring_depth, limits::DEFAULT_IO_RING_DEPTH);
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
}
