//! API clients: `packhunt config api-client` issues a client certificate from the
//! deployment CA for a script that uses the gRPC API, and the gRPC server reads who the
//! client is back from the certificate it verified. Both sides live here, so what is
//! written is exactly what is read.
//!
//! The identity is one URI in the certificate's subject alternative names,
//! `urn:packhunt:api-client:<role>:<name>` (role as `[[users]]` spell it, name 1-64 of
//! letters, digits and `._@-`); the common name repeats the name for people reading the
//! certificate, but only the URI counts. Extended key usage: clientAuth only.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
use serde::{Deserialize, Serialize};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::generate::{common_name, generate_error, sign_with_ca, write_private_file};
use super::url::HostPort;
use super::{ConfigError, Role, ServerFile};
use crate::limits::{API_CLIENT_CERTIFICATE_VALIDITY, MAX_API_CLIENT_NAME_CHARS};

/// What every API client's certificate URI starts with.
pub const API_CLIENT_URI_PREFIX: &str = "urn:packhunt:api-client:";

/// Said when the config has no CA key: the one message `config api-client` gives for it.
pub const CA_KEY_ABSENT: &str =
    "the CA key is needed to issue an API client certificate; run this where the CA key is";

/// Who an API client is: its name and role, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClientIdentity {
    pub name: String,
    pub role: Role,
}

/// Why a verified certificate does not name a usable API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate names no API client (no `{API_CLIENT_URI_PREFIX}` URI)")]
    Missing,
    #[error("the certificate names more than one API client")]
    Ambiguous,
    #[error("the certificate's API client URI is malformed: {0}")]
    Malformed(String),
    #[error("the certificate's role `{0}` is not a role of this server")]
    UnknownRole(String),
}

impl ApiClientIdentity {
    /// The URI that carries this identity in a certificate.
    pub fn uri(&self) -> String {
        format!(
            "{API_CLIENT_URI_PREFIX}{}:{}",
            self.role.as_str(),
            self.name
        )
    }

    /// Reads the identity from a certificate's DER (one TLS has verified against the CA).
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let mut found = None;
        for ext in cert.iter_extensions() {
            let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
                continue;
            };
            for name in &san.general_names {
                let GeneralName::URI(uri) = name else {
                    continue;
                };
                let Some(rest) = uri.strip_prefix(API_CLIENT_URI_PREFIX) else {
                    continue;
                };
                if found.replace(rest.to_string()).is_some() {
                    return Err(IdentityError::Ambiguous);
                }
            }
        }
        let rest = found.ok_or(IdentityError::Missing)?;
        let (role, name) = rest
            .split_once(':')
            .ok_or_else(|| IdentityError::Malformed("no `<role>:<name>`".into()))?;
        check_name(name).map_err(IdentityError::Malformed)?;
        let role = Role::parse(role).ok_or_else(|| IdentityError::UnknownRole(shown(role)))?;
        Ok(Self {
            name: name.to_string(),
            role,
        })
    }
}

/// 1-64 characters of letters, digits and `._@-`: safe in a URI, a log line and a path.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.chars().count() > MAX_API_CLIENT_NAME_CHARS {
        return Err(format!(
            "the name must be 1-{MAX_API_CLIENT_NAME_CHARS} characters"
        ));
    }
    if !name.chars().all(allowed) {
        return Err(format!(
            "name `{}`: only letters, digits and `._@-` are allowed",
            shown(name)
        ));
    }
    Ok(())
}

fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The file `config api-client` writes: everything a script needs to connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClientFile {
    /// HOST:PORT of the master's gRPC API; HOST is the name in the master's certificate.
    pub api_url: String,
    /// PEM of the deployment CA: the server's certificate is checked against it.
    pub ca_certificate: String,
    pub client_certificate: String,
    pub client_private_key: String,
}

/// What `issue_api_client` was asked for.
#[derive(Debug, Clone)]
pub struct ApiClientRequest {
    /// The deployment's server.config.toml.
    pub config: PathBuf,
    pub name: String,
    /// As `[[users]]` spell roles.
    pub role: String,
    pub out: PathBuf,
    /// Replace `out` if it exists.
    pub force: bool,
}

/// What `issue_api_client` wrote.
#[derive(Debug, Clone)]
pub struct IssuedApiClient {
    pub identity: ApiClientIdentity,
    pub api_url: String,
    /// False when `[api]` is there but disabled: the certificate works once it is enabled.
    pub api_enabled: bool,
}

/// The CA key, read through `secrets::load_ca_signing_key` (the CA key file beside the
/// config, or an older config that still embeds it); a clear error where it is absent.
/// The one place `config api-client` reads it.
pub fn ca_private_key_for_issuing(config_path: &Path) -> Result<String, ConfigError> {
    let key = super::secrets::load_ca_signing_key(config_path).map_err(|e| match e {
        ConfigError::Generate(detail) => {
            ConfigError::Generate(format!("{CA_KEY_ABSENT}: {detail}"))
        }
        other => other,
    })?;
    if key.key_pem.trim().is_empty() {
        return Err(ConfigError::Generate(format!(
            "{CA_KEY_ABSENT}: {} is empty",
            key.source.display()
        )));
    }
    Ok(key.key_pem)
}

/// Issues an API client certificate and writes the client's file (mode 0600).
pub fn issue_api_client(request: &ApiClientRequest) -> Result<IssuedApiClient, ConfigError> {
    // Checked before anything is signed: a rerun by mistake costs nothing.
    if !request.force && request.out.exists() {
        return Err(ConfigError::Generate(format!(
            "{}: already exists; refusing to overwrite it (use --force to replace it)",
            request.out.display()
        )));
    }
    check_name(&request.name).map_err(ConfigError::Generate)?;
    let role = Role::parse(&request.role).ok_or_else(|| {
        ConfigError::Generate(format!(
            "unknown role `{}`; roles are spelled as in [[users]] (e.g. administrator, reader)",
            shown(&request.role)
        ))
    })?;
    let file = ServerFile::load(&request.config)?;
    // The whole file must be valid: a client of a broken deployment is of no use.
    file.clone().parse(&request.config)?;
    let api = file.api.as_ref().ok_or_else(|| {
        ConfigError::Generate(format!(
            "{}: no [api] section, so the master serves no gRPC API; add one \
             (enabled = true, bind_address, port) first",
            request.config.display()
        ))
    })?;
    let identity = ApiClientIdentity {
        name: request.name.clone(),
        role,
    };
    let ca_key = ca_private_key_for_issuing(&request.config)?;
    let now = SystemTime::now();
    let (client_certificate, client_private_key) = sign_api_client_certificate(
        &file.tls.ca_certificate,
        &ca_key,
        &identity.name,
        role.as_str(),
        (
            now - super::generate::CLOCK_SKEW_ALLOWANCE,
            now + API_CLIENT_CERTIFICATE_VALIDITY,
        ),
    )?;
    let api_url = HostPort {
        host: file.frontend.public_host.clone(),
        port: api.port,
    }
    .to_string();
    let out = ApiClientFile {
        api_url: api_url.clone(),
        ca_certificate: file.tls.ca_certificate.clone(),
        client_certificate,
        client_private_key,
    };
    let body = toml::to_string_pretty(&out).map_err(|e| generate_error("API client file", e))?;
    let text = format!(
        "# packhunt API client `{}` ({}), written by `packhunt config api-client`.\n\
         # Holds the client's private key: keep it mode 0600 (docs/security/grpc-api.md).\n\n\
         {body}",
        identity.name,
        role.as_str()
    );
    write_private_file(&request.out, &text)?;
    Ok(IssuedApiClient {
        identity,
        api_url,
        api_enabled: api.enabled,
    })
}

/// Signs an API client certificate for `name` with role label `role` (written as given,
/// so tests can make certificates with roles the server does not know), valid from
/// `validity.0` to `validity.1` (capped at the CA's end). Returns `(certificate PEM,
/// private key PEM)`.
pub fn sign_api_client_certificate(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    name: &str,
    role: &str,
    validity: (SystemTime, SystemTime),
) -> Result<(String, String), ConfigError> {
    let uri = format!("{API_CLIENT_URI_PREFIX}{role}:{name}");
    let uri = uri
        .try_into()
        .map_err(|e| generate_error("API client URI", e))?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.distinguished_name = common_name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(validity.0);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(validity.1);
    sign_with_ca(ca_cert_pem, ca_key_pem, params, "API client certificate")
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Reads a file `config api-client` wrote.
pub fn load_api_client_file(path: &Path) -> Result<ApiClientFile, ConfigError> {
    super::load_toml(path)
}

#[cfg(test)]
mod tests {
    //! Goal: what `config api-client` writes is what the server reads back, and nothing
    //! it should refuse gets signed. Method: a generated deployment in a temp folder.
    use super::*;

    fn deployment() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = super::super::generate::GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        let path = super::super::generate::generate(&opts)
            .unwrap()
            .server_config_path;
        (dir, path)
    }

    fn request(config: &Path, out: &Path, name: &str, role: &str) -> ApiClientRequest {
        ApiClientRequest {
            config: config.to_path_buf(),
            name: name.into(),
            role: role.into(),
            out: out.to_path_buf(),
            force: false,
        }
    }

    #[test]
    fn issued_certificate_names_the_client_and_role() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, config) = deployment();
        let out = dir.path().join("ana.api.toml");
        let issued = issue_api_client(&request(&config, &out, "ana", "reader")).unwrap();
        assert_eq!(
            issued.api_url,
            format!("127.0.0.1:{}", crate::limits::DEFAULT_API_PORT)
        );
        assert!(issued.api_enabled);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let file = load_api_client_file(&out).unwrap();
        let der = crate::tls::pem::certificates(&file.client_certificate)
            .unwrap()
            .remove(0);
        let identity = ApiClientIdentity::from_certificate(&der).unwrap();
        assert_eq!(
            identity,
            ApiClientIdentity {
                name: "ana".into(),
                role: Role::Reader
            }
        );
        assert_eq!(identity.uri(), "urn:packhunt:api-client:reader:ana");
        crate::tls::pem::private_key(&file.client_private_key).unwrap();

        let err = issue_api_client(&request(&config, &out, "ana", "reader")).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        let mut forced = request(&config, &out, "ana", "administrator");
        forced.force = true;
        issue_api_client(&forced).unwrap();
    }

    #[test]
    fn bad_names_roles_and_a_missing_ca_key_are_refused() {
        let (dir, config) = deployment();
        let out = dir.path().join("x.toml");
        for name in ["", "a:b", "a b", &"n".repeat(65)] {
            let err = issue_api_client(&request(&config, &out, name, "reader")).unwrap_err();
            assert!(err.to_string().contains("name"), "{name}: {err}");
        }
        let err = issue_api_client(&request(&config, &out, "x", "root")).unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
        // The CA key kept offline: neither its file nor the config has it.
        std::fs::remove_file(super::super::secrets::ca_key_path(&config)).unwrap();
        let err = issue_api_client(&request(&config, &out, "x", "reader")).unwrap_err();
        assert!(err.to_string().starts_with(CA_KEY_ABSENT), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn unknown_roles_and_foreign_uris_are_not_identities() {
        let (_dir, config) = deployment();
        let file = ServerFile::load(&config).unwrap();
        let ca_key = ca_private_key_for_issuing(&config).unwrap();
        let now = SystemTime::now();
        let validity = (now, now + Duration::from_secs(60));
        let der_of = |name: &str, role: &str| {
            let (pem, _) = sign_api_client_certificate(
                &file.tls.ca_certificate,
                &ca_key,
                name,
                role,
                validity,
            )
            .unwrap();
            crate::tls::pem::certificates(&pem).unwrap().remove(0)
        };
        assert_eq!(
            ApiClientIdentity::from_certificate(&der_of("x", "superuser")),
            Err(IdentityError::UnknownRole("superuser".into()))
        );
        assert!(matches!(
            ApiClientIdentity::from_certificate(&der_of("a b", "reader")),
            Err(IdentityError::Malformed(_))
        ));
        let frontend = crate::tls::pem::certificates(&file.frontend.certificate)
            .unwrap()
            .remove(0);
        assert_eq!(
            ApiClientIdentity::from_certificate(&frontend),
            Err(IdentityError::Missing)
        );
    }
}
