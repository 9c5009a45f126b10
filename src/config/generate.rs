//! `packhunt config generate`: a new deployment's CA, the master's certificate, both config
//! files and the first `admin` user. Also the pieces `config frontend` and the API reuse:
//! issuing a frontend certificate from the CA, hashing and verifying passwords.
//!
//! Writes only inside `out_dir`, and never over an existing `server.config.toml` or
//! `ca.key.pem`: the latter holds the only copy of the CA key, and replacing the CA
//! orphans every deployed agent. The CA key goes to its own file, which no frontend reads
//! (`config/secrets.rs`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, PKCS_ECDSA_P256_SHA256,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::{
    ApiSection, ClientFile, ClientSection, ConfigError, DatastoreSection, FrontendSection,
    GuiPriority, GuiSection, LimitsSection, Role, ServerFile, ServerTlsSection, UserEntry,
};
use crate::config::url::ServerUrl;

pub const SERVER_CONFIG_FILE: &str = "server.config.toml";
pub const CLIENT_CONFIG_FILE: &str = "client.config.toml";
/// Relative, so the agent keeps its key next to whichever copy of the client config it runs.
pub const CLIENT_WRITEBACK_FILE: &str = "client.writeback.toml";
/// Relative, so a generated folder can be moved as a whole (resolved on load).
pub const DATASTORE_DIR: &str = "datastore";
pub const ADMIN_USER: &str = "admin";

/// docs/architecture.md, "Processes and commands": defaults of `config generate`.
pub const DEFAULT_PUBLIC_HOST: &str = "127.0.0.1";
pub const DEFAULT_FRONTEND_PORT: u16 = 8000;
pub const DEFAULT_GUI_PORT: u16 = 8889;

/// 20 characters from 62 symbols is ~119 bits: beyond guessing, and short enough to type
/// from the terminal where it is printed once.
pub const GENERATED_PASSWORD_CHARS: usize = 20;
/// The CA outlives many frontend re-deployments; re-keying means re-deploying every agent.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// Certificates start a day in the past so that a peer whose clock runs behind ours does
/// not reject a certificate generated minutes ago as "not yet valid".
pub(super) const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(24 * 3600);
/// 128-bit salts, as RFC 9106 section 3.1 recommends for argon2.
const PASSWORD_SALT_BYTES: usize = 16;

/// What `packhunt config generate` was asked for. Build with [`GenerateOptions::new`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub out_dir: PathBuf,
    /// Host agents use to reach the master: goes into its certificate and the client URLs.
    pub public_host: String,
    pub frontend_port: u16,
    pub gui_port: u16,
    /// The master's replication port (used once minions are added).
    pub replication_port: u16,
    /// The master's gRPC API port (`[api]`).
    pub api_port: u16,
    /// `None`: generate one, which the caller must show to the operator exactly once.
    pub admin_password: Option<String>,
    /// Generate an enrolment secret that agents must present (both configs carry it).
    pub enrolment_secret: bool,
    /// Agents reach the frontends through a load balancer at this name (IP address or DNS
    /// name): it goes into every frontend certificate (the master's here, minions' in
    /// `config frontend`, from `frontend.balancer_names`) and the client config lists
    /// only the balancer.
    pub balancer_name: Option<String>,
    /// The balancer's agent port; `frontend_port` when not given.
    pub balancer_port: Option<u16>,
}

impl GenerateOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            public_host: DEFAULT_PUBLIC_HOST.to_string(),
            frontend_port: DEFAULT_FRONTEND_PORT,
            gui_port: DEFAULT_GUI_PORT,
            replication_port: super::DEFAULT_REPLICATION_PORT,
            api_port: crate::limits::DEFAULT_API_PORT,
            admin_password: None,
            enrolment_secret: false,
            balancer_name: None,
            balancer_port: None,
        }
    }

    /// The names besides `public_host` that the frontends' certificates carry.
    fn balancer_names(&self) -> Vec<String> {
        self.balancer_name.iter().cloned().collect()
    }
}

/// What `generate` wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    pub server_config_path: PathBuf,
    pub client_config_path: PathBuf,
    /// The CA key's own file (mode 0600): keep it offline; `config frontend` needs it.
    pub ca_key_path: PathBuf,
    /// Plain text, only so the caller can print it; the config stores the argon2id hash.
    pub admin_password: String,
    pub password_was_generated: bool,
}

/// A deployment's CA as PEM text. Invariant: `key_pem` is the key of `cert_pem`.
struct CaPem {
    cert_pem: String,
    key_pem: String,
}

/// Writes a new deployment into `opts.out_dir`. See the module doc for what and why.
pub fn generate(opts: &GenerateOptions) -> Result<Generated, ConfigError> {
    let server_config_path = opts.out_dir.join(SERVER_CONFIG_FILE);
    let client_config_path = opts.out_dir.join(CLIENT_CONFIG_FILE);
    let ca_key_path = super::secrets::ca_key_path(&server_config_path);
    // Checked before any key is made: rerunning by mistake must cost nothing.
    if server_config_path.exists() {
        return Err(ConfigError::Generate(format!(
            "{}: already exists; refusing to overwrite it (it holds the deployment's settings, \
             beside the CA key every agent pins). Move it away or choose another --out folder",
            server_config_path.display()
        )));
    }
    if ca_key_path.exists() {
        return Err(ConfigError::Generate(format!(
            "{}: already exists; refusing to overwrite the deployment's CA key, which every \
             agent pins. Move it away or choose another --out folder",
            ca_key_path.display()
        )));
    }
    check_public_host(&opts.public_host)?;
    for name in opts.balancer_names() {
        check_host("balancer name", &name)?;
    }
    let (admin_password, password_was_generated) = match &opts.admin_password {
        Some(pw) if pw.is_empty() => {
            return Err(ConfigError::Generate(
                "the admin password must not be empty".into(),
            ))
        }
        Some(pw) => (pw.clone(), false),
        None => (random_password(), true),
    };
    let ca = new_ca()?;
    let (cert_pem, key_pem) = issue_frontend_certificate_for(
        &ca.cert_pem,
        &ca.key_pem,
        &opts.public_host,
        &opts.balancer_names(),
    )?;
    let secret = opts
        .enrolment_secret
        .then(|| super::EnrolmentSecret::random().as_str().to_string());
    let mut server = server_config(opts, &ca, cert_pem, key_pem, hash_password(&admin_password));
    server.frontend.enrolment_secret = secret.clone();
    let mut client = client_config(opts, &ca);
    client.client.enrolment_secret = secret;

    let datastore = opts.out_dir.join(DATASTORE_DIR);
    create_private_dir(&datastore)?;
    // The CA key and the server config go last: they are what makes a rerun refuse, so a
    // failure before them leaves a folder that a plain rerun repairs.
    super::write_toml(&client_config_path, &client)?;
    super::secrets::write_secret_file(&ca_key_path, &ca.key_pem)?;
    write_server_config(&server_config_path, &server)?;
    Ok(Generated {
        server_config_path,
        client_config_path,
        ca_key_path,
        admin_password,
        password_was_generated,
    })
}

/// Issues a certificate for a frontend reachable at `host` (IP address or DNS name), signed
/// by the deployment CA. Returns `(certificate PEM, private key PEM)` of a new P-256 key.
/// Used for the master by `generate` and for minions by `config frontend`.
pub fn issue_frontend_certificate(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    host: &str,
) -> Result<(String, String), ConfigError> {
    issue_frontend_certificate_for(ca_cert_pem, ca_key_pem, host, &[])
}

/// `issue_frontend_certificate` for a frontend that agents also reach through load
/// balancers at `balancer_names`: agents check the name they dialled, which behind a
/// balancer is the balancer's, so the certificate carries those names too.
pub fn issue_frontend_certificate_for(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    host: &str,
    balancer_names: &[String],
) -> Result<(String, String), ConfigError> {
    check_public_host(host)?;
    let mut names = frontend_subject_alt_names(host);
    for name in balancer_names {
        check_host("balancer name", name)?;
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut params =
        CertificateParams::new(names).map_err(|e| generate_error("frontend certificate", e))?;
    params.distinguished_name = common_name(host);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // ClientAuth too: a minion presents the same certificate to the master's replication
    // service as a client.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity_from_now(&mut params, CA_VALIDITY);
    // A frontend certificate is useless once the CA expires, so it lives exactly as long.
    sign_with_ca(ca_cert_pem, ca_key_pem, params, "frontend certificate")
}

/// The names of `names` that the certificate `cert_der` is not valid for, as an agent's
/// check of the name it dialled would see it (subject alternative names: DNS names, a
/// leading `*.` standing for one label, and IP addresses). An unparsable certificate
/// lacks them all.
pub fn names_missing_from_certificate(cert_der: &[u8], names: &[String]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return names.to_vec();
    };
    let mut dns: Vec<String> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    for ext in cert.extensions() {
        let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let covers = |name: &str| match name.parse::<IpAddr>() {
        Ok(ip) => ips.contains(&ip),
        Err(_) => {
            let name = name.to_ascii_lowercase();
            dns.iter().any(|d| match d.strip_prefix("*.") {
                Some(parent) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *d == name,
            })
        }
    };
    names.iter().filter(|n| !covers(n)).cloned().collect()
}

/// Signs `params` (with a new P-256 key) by the deployment CA; its validity ends no later
/// than the CA's. Returns `(certificate PEM, private key PEM)`.
pub(super) fn sign_with_ca(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    mut params: CertificateParams,
    what: &str,
) -> Result<(String, String), ConfigError> {
    let ca_der = crate::tls::pem::certificates(ca_cert_pem)
        .map_err(|e| generate_error("tls.ca_certificate", e))?
        .swap_remove(0);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| generate_error("tls.ca_certificate", e))?;
    let ca_key =
        KeyPair::from_pem(ca_key_pem).map_err(|e| generate_error("tls.ca_private_key", e))?;
    // A mismatched pair would sign certificates that no agent can verify; say so here.
    if ca.tbs_certificate.subject_pki.raw != ca_key.subject_public_key_info().as_slice() {
        return Err(ConfigError::Generate(
            "tls.ca_private_key is not the key of tls.ca_certificate".into(),
        ));
    }
    let issuer = Issuer::new(issuer_params(&ca)?, ca_key);
    let ca_not_after = ca.validity().not_after.to_datetime();
    if params.not_after > ca_not_after {
        params.not_after = ca_not_after;
    }
    params.use_authority_key_identifier_extension = has_subject_key_id(&ca);
    let key = new_p256_key()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| generate_error(what, e))?;
    check_issued_by(cert.der(), &ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// An argon2id PHC string (`$argon2id$v=19$...`) with a fresh random salt and the argon2
/// crate's default cost (OWASP's minimum: m=19 MiB, t=2, p=1).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; PASSWORD_SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is within argon2's salt limits");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("default argon2 parameters accept any password length we can hold")
        .to_string()
}

/// True only if `hash` is a well-formed PHC string and `password` matches it. The cost
/// parameters are taken from the hash, so older hashes keep verifying after a cost change.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn server_config(
    opts: &GenerateOptions,
    ca: &CaPem,
    certificate: String,
    private_key: String,
    password_hash: String,
) -> ServerFile {
    ServerFile {
        frontend: FrontendSection {
            public_host: opts.public_host.clone(),
            bind_address: "0.0.0.0".into(),
            agent_port: opts.frontend_port,
            replication_port: opts.replication_port,
            shards: 0,
            io_memory_bytes: crate::limits::DEFAULT_IO_MEMORY_BYTES,
            io_ring_depth: crate::limits::DEFAULT_IO_RING_DEPTH,
            file_work_nice: crate::limits::DEFAULT_FILE_WORK_NICE,
            max_open_files: crate::limits::DEFAULT_MAX_OPEN_FILES,
            transparent_huge_pages: false,
            drain_timeout_ms: crate::limits::DEFAULT_DRAIN_TIMEOUT.as_millis() as u64,
            certificate,
            private_key: Some(private_key),
            enrolment_secret: None,
            balancer_names: opts.balancer_names(),
        },
        // Loopback only: the GUI is exposed deliberately (proxy, tunnel), never by default.
        gui: GuiSection {
            bind_address: "127.0.0.1".into(),
            port: opts.gui_port,
            priority: GuiPriority::Executor,
            session_timeout_s: crate::limits::DEFAULT_SESSION_TIMEOUT.as_secs(),
            session_idle_timeout_s: crate::limits::DEFAULT_SESSION_IDLE_TIMEOUT.as_secs(),
            tls_accept_timeout_ms: crate::limits::DEFAULT_GUI_TLS_ACCEPT_TIMEOUT.as_millis() as u64,
            header_timeout_ms: crate::limits::DEFAULT_GUI_HEADER_TIMEOUT.as_millis() as u64,
            connection_idle_timeout_ms: crate::limits::DEFAULT_GUI_IDLE_TIMEOUT.as_millis() as u64,
            max_connections: crate::limits::DEFAULT_MAX_GUI_CONNECTIONS_COUNT,
        },
        // Loopback only, like the GUI; only certificates the CA issued get in.
        api: Some(ApiSection {
            enabled: true,
            bind_address: "127.0.0.1".into(),
            port: opts.api_port,
        }),
        tls: ServerTlsSection {
            ca_certificate: ca.cert_pem.clone(),
            ca_private_key: None,
        },
        datastore: DatastoreSection {
            location: DATASTORE_DIR.into(),
            fsync_documents: true,
            fsync_events: false,
            io_threads_per_executor: crate::limits::DEFAULT_IO_THREADS_PER_EXECUTOR,
            min_free_bytes: crate::limits::DEFAULT_MIN_FREE_BYTES,
        },
        limits: LimitsSection::default(),
        users: vec![UserEntry {
            name: ADMIN_USER.into(),
            password_hash,
            role: Role::Administrator,
        }],
        minions: Vec::new(),
        sinks: Vec::new(),
    }
}

fn client_config(opts: &GenerateOptions, ca: &CaPem) -> ClientFile {
    // Behind a balancer agents know only the balancer: it spreads them and moves them.
    let url = match &opts.balancer_name {
        Some(host) => ServerUrl {
            host: host.clone(),
            port: opts.balancer_port.unwrap_or(opts.frontend_port),
        },
        None => ServerUrl {
            host: opts.public_host.clone(),
            port: opts.frontend_port,
        },
    };
    ClientFile {
        client: ClientSection {
            server_urls: vec![url.to_string()],
            ca_certificate: ca.cert_pem.clone(),
            writeback_path: CLIENT_WRITEBACK_FILE.into(),
            max_upload_bytes: crate::limits::DEFAULT_MAX_UPLOAD_BYTES,
            event_buffer_dir: None,
            max_event_buffer_bytes: crate::limits::DEFAULT_MAX_EVENT_BUFFER_BYTES,
            outbox_dir: None,
            max_outbox_bytes: crate::limits::DEFAULT_MAX_OUTBOX_BYTES,
            enrolment_secret: None,
        },
    }
}

/// Writes the server config readable by its owner only, atomically (temp + fsync + rename).
/// `limits.concurrency` is left out so each frontend derives it from its own core count at
/// load instead of inheriting the generating machine's.
fn write_server_config(path: &Path, config: &ServerFile) -> Result<(), ConfigError> {
    // Serialised from the struct, not a toml::Value, to keep [frontend] first for the
    // operator. Only LimitsSection has a `concurrency` key, and PEM lines never match.
    let body: String = toml::to_string_pretty(config)
        .map_err(|e| generate_error("server config", e))?
        .lines()
        .filter(|line| !line.starts_with("concurrency = "))
        .flat_map(|line| [line, "\n"])
        .collect();
    let text = format!(
        "# packhunt server config, written by `packhunt config generate`.\n\
         # Holds the master's key (the CA key is in ca.key.pem beside it): keep it mode 0600\n\
         # and out of backups you would not trust with the master. limits.concurrency\n\
         # defaults to 2 x cores x 8.\n\n\
         {body}"
    );
    write_private_file(path, &text)
}

/// The datastore root: not readable by other users (owner rwx, group rx).
fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(crate::limits::DATASTORE_DIR_MODE)
        .create(dir)
        .map_err(|source| ConfigError::Write {
            path: dir.to_path_buf(),
            error: source,
        })
}

pub(super) fn write_private_file(path: &Path, text: &str) -> Result<(), ConfigError> {
    super::private_file::replace(path, text)
}

/// The host ends up in a certificate SAN, a TLS server name and a URL: accept only what
/// all three can carry (an IP address or a DNS name, as rustls parses them).
fn check_public_host(host: &str) -> Result<(), ConfigError> {
    check_host("public host", host)
}

fn check_host(what: &str, host: &str) -> Result<(), ConfigError> {
    rustls::pki_types::ServerName::try_from(host)
        .map(|_| ())
        .map_err(|_| {
            let shown: String = host.chars().take(100).collect();
            ConfigError::Generate(format!(
                "{what} `{shown}` is neither an IP address nor a DNS name"
            ))
        })
}

/// The host itself; for a loopback host also the other loopback spellings, so that local
/// tools may use either `localhost` or `127.0.0.1` against the same frontend.
fn frontend_subject_alt_names(host: &str) -> Vec<String> {
    let is_loopback =
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let mut names = vec![host.to_string()];
    if is_loopback {
        for extra in ["localhost", "127.0.0.1"] {
            if !names.iter().any(|n| n == extra) {
                names.push(extra.to_string());
            }
        }
    }
    names
}

fn new_ca() -> Result<CaPem, ConfigError> {
    let key = new_p256_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("packhunt CA");
    // Path length 0: the CA signs frontend certificates directly, never intermediates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity_from_now(&mut params, CA_VALIDITY);
    let cert = params
        .self_signed(&key)
        .map_err(|e| generate_error("CA certificate", e))?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// rcgen signs with an `Issuer` built from parameters; rebuild them from the stored CA
/// certificate (its subject and key identifier), since only the PEM is kept.
fn issuer_params(ca: &X509Certificate<'_>) -> Result<CertificateParams, ConfigError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for attribute in ca.subject().iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or_else(|| ConfigError::Generate("CA subject has an oversized OID".into()))?
            .collect();
        let value = attribute
            .as_str()
            .map_err(|e| generate_error("CA subject attribute", e))?;
        params
            .distinguished_name
            .push(DnType::from_oid(&oid), value);
    }
    if let Some(key_id) = subject_key_id(ca) {
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id);
    }
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    Ok(params)
}

fn subject_key_id(ca: &X509Certificate<'_>) -> Option<Vec<u8>> {
    ca.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn has_subject_key_id(ca: &X509Certificate<'_>) -> bool {
    subject_key_id(ca).is_some()
}

/// Chain building compares the issuer and subject names byte for byte. The issuer name was
/// re-encoded from the CA's subject above; check it came out identical rather than ship a
/// certificate no agent will accept.
fn check_issued_by(cert_der: &[u8], ca: &X509Certificate<'_>) -> Result<(), ConfigError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| generate_error("frontend certificate", e))?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(ConfigError::Generate(
            "the CA's subject name uses an encoding packhunt cannot reproduce; \
             issue the frontend certificate with another tool"
                .into(),
        ));
    }
    Ok(())
}

pub(super) fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn new_p256_key() -> Result<KeyPair, ConfigError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| generate_error("P-256 key", e))
}

fn random_password() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, GENERATED_PASSWORD_CHARS)
}

/// Valid from a day ago (see CLOCK_SKEW_ALLOWANCE) until `lifetime` from now. Built from
/// rcgen's own date helper so that `time` need not be a direct dependency.
fn set_validity_from_now(params: &mut CertificateParams, lifetime: Duration) {
    let now = rcgen::date_time_ymd(1970, 1, 1) + crate::clock::since_epoch();
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + lifetime;
}

pub(super) fn generate_error(what: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Generate(format!("{what}: {e}"))
}

/// Test helper: checks a frontend certificate as an agent would.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    pub(crate) fn verify_server(
        ca_pem: &str,
        cert_pem: &str,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in crate::tls::pem::certificates(ca_pem).unwrap() {
            roots.add(ca).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let cert = crate::tls::pem::certificates(cert_pem).unwrap().remove(0);
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::verify_server;
    use super::*;
    use crate::config::{ClientConfig, ServerConfig};

    fn generate_into(dir: &Path, password: Option<&str>) -> Generated {
        let mut opts = GenerateOptions::new(dir);
        opts.admin_password = password.map(str::to_string);
        generate(&opts).unwrap()
    }

    // Goal: what generate writes is what load accepts. Method: generate into a temp folder,
    // load both files through the normal loaders and check the values that matter.
    #[test]
    fn generated_configs_load() {
        let dir = tempfile::tempdir().unwrap();
        let out = generate_into(dir.path(), None);
        let server = ServerConfig::load(&out.server_config_path).unwrap();
        assert_eq!(server.datastore.location, dir.path().join(DATASTORE_DIR));
        assert!(server.datastore.location.is_dir());
        assert!(server.datastore.fsync_documents);
        assert_eq!(server.frontend.master.port, DEFAULT_FRONTEND_PORT);
        assert_eq!(server.gui.address.port(), DEFAULT_GUI_PORT);
        assert_eq!(server.gui.address.ip(), IpAddr::from([127, 0, 0, 1]));
        // Left out of the file so each frontend sizes it for its own cores.
        assert_eq!(
            server.limits.concurrency.get(),
            crate::limits::default_concurrency()
        );
        let text = std::fs::read_to_string(&out.server_config_path).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("concurrency =")),
            "{text}"
        );
        assert!(
            text.find("[frontend]") < text.find("[datastore]"),
            "struct order kept"
        );
        assert_eq!(server.frontend.master.to_string(), "127.0.0.1:8000");
        let client = ClientConfig::load(&out.client_config_path).unwrap();
        assert_eq!(
            client.client.server_urls,
            vec![ServerUrl::parse("https://127.0.0.1:8000/").unwrap()]
        );
        assert_eq!(client.client.ca_certificate, server.tls.ca_certificate);
        assert_eq!(
            client.client.writeback_path,
            dir.path().join(CLIENT_WRITEBACK_FILE)
        );
        assert!(out.password_was_generated);
        assert_eq!(out.admin_password.len(), GENERATED_PASSWORD_CHARS);
        assert!(out
            .admin_password
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
    }

    // Goal: the server config, which holds the CA key, is private to its owner.
    #[test]
    fn server_config_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = generate_into(dir.path(), Some("pw"));
        let mode = std::fs::metadata(&out.server_config_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, super::super::private_file::PRIVATE_FILE_MODE);
        assert!(!dir.path().join("server.config.toml.tmp").exists());
    }

    // Goal: the stored hash verifies the admin password and nothing else.
    #[test]
    fn admin_password_verifies_against_stored_hash() {
        let dir = tempfile::tempdir().unwrap();
        let out = generate_into(dir.path(), Some("correct horse"));
        assert_eq!(out.admin_password, "correct horse");
        assert!(!out.password_was_generated);
        let server = ServerConfig::load(&out.server_config_path).unwrap();
        let admin = &server.users[0];
        assert_eq!(
            (admin.name.as_str(), admin.role),
            (ADMIN_USER, Role::Administrator)
        );
        assert!(admin.password_hash.starts_with("$argon2id$"));
        assert!(verify_password(&admin.password_hash, "correct horse"));
        assert!(!verify_password(&admin.password_hash, "correct horse "));
        assert!(!verify_password(&admin.password_hash, ""));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(hash_password("x"), hash_password("x"), "salts must differ");
    }

    // Goal: an agent pinning the CA accepts the master's certificate. Method: run rustls's
    // own webpki server verifier (chain, signature, SAN, EKU, validity) for each name.
    #[test]
    fn frontend_certificate_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        // The PEM as written: what `config frontend` and agents work from.
        let server = ServerFile::load(&generate_into(dir.path(), None).server_config_path).unwrap();
        let verify = |name: &str| {
            verify_server(
                &server.tls.ca_certificate,
                &server.frontend.certificate,
                name,
            )
        };
        for name in ["127.0.0.1", "localhost"] {
            verify(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(verify("10.0.0.1").is_err());

        let ca = crate::config::secrets::load_ca_signing_key(&dir.path().join(SERVER_CONFIG_FILE))
            .unwrap();
        let (cert, _key) = issue_frontend_certificate(
            &server.tls.ca_certificate,
            &ca.key_pem,
            "minion-1.example.net",
        )
        .unwrap();
        verify_server(&server.tls.ca_certificate, &cert, "minion-1.example.net").unwrap();
        assert!(verify_server(&server.tls.ca_certificate, &cert, "localhost").is_err());
        let (cert, _key) =
            issue_frontend_certificate(&server.tls.ca_certificate, &ca.key_pem, "10.1.2.3")
                .unwrap();
        verify_server(&server.tls.ca_certificate, &cert, "10.1.2.3").unwrap();
    }

    // Goal: the certificate names the CA as issuer and carries its signature, checked
    // independently of rustls with x509-parser's view of the DER.
    #[test]
    fn frontend_certificate_issuer_is_the_ca_subject() {
        let ca = new_ca().unwrap();
        let (cert, key) =
            issue_frontend_certificate(&ca.cert_pem, &ca.key_pem, "h.example").unwrap();
        let ca_der = crate::tls::pem::certificates(&ca.cert_pem)
            .unwrap()
            .remove(0);
        let cert_der = crate::tls::pem::certificates(&cert).unwrap().remove(0);
        let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, cert_x509) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        assert_eq!(cert_x509.issuer().as_raw(), ca_x509.subject().as_raw());
        assert!(ca_x509.is_ca());
        assert!(!cert_x509.is_ca());
        assert_eq!(cert_x509.validity().not_after, ca_x509.validity().not_after);
        crate::tls::pem::private_key(&key).unwrap();
    }

    // Goal: a mismatched CA key or a bad host is refused before anything is signed.
    #[test]
    fn issue_refuses_bad_inputs() {
        let ca = new_ca().unwrap();
        let other = new_ca().unwrap();
        let err = issue_frontend_certificate(&ca.cert_pem, &other.key_pem, "h").unwrap_err();
        assert!(
            err.to_string()
                .contains("not the key of tls.ca_certificate"),
            "{err}"
        );
        for host in ["", "bad host", "h/x", "h:80"] {
            let err = issue_frontend_certificate(&ca.cert_pem, &ca.key_pem, host).unwrap_err();
            assert!(err.to_string().contains("public host"), "{host}: {err}");
        }
        assert!(issue_frontend_certificate("junk", &ca.key_pem, "h").is_err());
    }

    // Goal: a rerun never replaces the CA. Method: generate twice into one folder; the
    // second fails naming the file, and the first file is untouched.
    #[test]
    fn refuses_to_overwrite_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let out = generate_into(dir.path(), None);
        let before = std::fs::read(&out.server_config_path).unwrap();
        let err = generate(&GenerateOptions::new(dir.path())).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("refusing to overwrite"), "{message}");
        assert!(message.contains(SERVER_CONFIG_FILE), "{message}");
        assert_eq!(std::fs::read(&out.server_config_path).unwrap(), before);
    }

    #[test]
    fn public_host_shapes_urls_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path().join("nested"));
        opts.public_host = "::1".into();
        opts.frontend_port = 9443;
        let out = generate(&opts).unwrap();
        let client = ClientConfig::load(&out.client_config_path).unwrap();
        let urls: Vec<String> = client
            .client
            .server_urls
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(urls, ["https://[::1]:9443/"]);
        assert_eq!(
            frontend_subject_alt_names("::1"),
            ["::1", "localhost", "127.0.0.1"]
        );
        assert_eq!(
            frontend_subject_alt_names("localhost"),
            ["localhost", "127.0.0.1"]
        );
        assert_eq!(frontend_subject_alt_names("fe.example"), ["fe.example"]);
        opts.out_dir = dir.path().join("empty-password");
        opts.admin_password = Some(String::new());
        assert!(generate(&opts).is_err());
        assert!(!opts.out_dir.join(SERVER_CONFIG_FILE).exists());
    }
}
