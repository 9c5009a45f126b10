//! Where a deployment's secrets live, so that each machine holds only what it runs:
//! the CA key in its own file (`ca.key.pem` beside server.config.toml, mode 0600) that no
//! frontend reads — only the tools that issue certificates do, and it may live offline
//! between uses; each minion's key only in that minion's own config
//! (`minion-<name>.config.toml`). Configs written before this split still load; they
//! are told (a warning) how to split them.

use std::path::{Path, PathBuf};

use super::url::HostPort;
use super::{ConfigError, ServerFile};

/// The CA key's file, beside the server config.
pub const CA_KEY_FILE: &str = "ca.key.pem";

/// The deployment CA with its private key: what issuing a certificate needs. `Debug`
/// does not show the key.
pub struct CaSigningKey {
    pub certificate_pem: String,
    pub key_pem: String,
    /// Where the key was read from (the CA key file, or the config that embeds it).
    pub source: PathBuf,
}

impl std::fmt::Debug for CaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigningKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// `ca.key.pem` beside the server config at `config_path`.
pub fn ca_key_path(config_path: &Path) -> PathBuf {
    config_path.with_file_name(CA_KEY_FILE)
}

/// The CA certificate (from the server config at `config_path`) and its key: from the CA
/// key file beside it, else from the config itself if it still embeds the key (older
/// configs). The one way tools that issue certificates get the key.
pub fn load_ca_signing_key(config_path: &Path) -> Result<CaSigningKey, ConfigError> {
    let file = ServerFile::load(config_path)?;
    let key_path = ca_key_path(config_path);
    match std::fs::read_to_string(&key_path) {
        Ok(key_pem) => Ok(CaSigningKey {
            certificate_pem: file.tls.ca_certificate,
            key_pem,
            source: key_path,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match file.tls.ca_private_key {
            Some(key_pem) => Ok(CaSigningKey {
                certificate_pem: file.tls.ca_certificate,
                key_pem,
                source: config_path.to_path_buf(),
            }),
            None => Err(ConfigError::Generate(format!(
                "{}: the CA key is needed to issue certificates and is not there (nor in {}); \
                 bring back the ca.key.pem that `config generate` wrote",
                key_path.display(),
                config_path.display()
            ))),
        },
        Err(error) => Err(ConfigError::Read {
            path: key_path,
            error,
        }),
    }
}

/// `minion-<name>.config.toml` beside the server config: the minion's own config. The
/// name's `:` and brackets become `_` so the file name is one shell word.
pub fn minion_config_path(config_path: &Path, name: &HostPort) -> PathBuf {
    let safe: String = name
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    config_path.with_file_name(format!("minion-{safe}.config.toml"))
}

/// What a server config still embeds that belongs elsewhere, as a warning to show at
/// load; None for a config that is split already.
pub fn embedded_secrets_warning(file: &ServerFile, path: &Path) -> Option<String> {
    let ca_key = file.tls.ca_private_key.is_some();
    let minion_keys = file
        .minions
        .iter()
        .filter(|m| m.private_key.is_some())
        .count();
    if !ca_key && minion_keys < 2 {
        // One minion key alone is what a minion's own config holds.
        return None;
    }
    let mut what = Vec::new();
    if ca_key {
        what.push("the CA key".to_string());
    }
    if minion_keys >= 2 {
        what.push(format!("{minion_keys} minions' keys"));
    }
    Some(format!(
        "{} holds {}: every machine with this file can impersonate the deployment; run \
         `packhunt config split-secrets --config {}` to move the CA key to {CA_KEY_FILE} \
         and each minion's key to its own minion config",
        path.display(),
        what.join(" and "),
        path.display()
    ))
}

/// Writes a private file (mode 0600 from creation), atomically: temp + fsync + rename.
pub(super) fn write_secret_file(path: &Path, text: &str) -> Result<(), ConfigError> {
    super::private_file::replace(path, text)
}

/// The text of minion `name`'s own config, made from the master's config text: the same
/// settings, no CA key, and of the minions' keys only its own (`key_pem`).
pub fn minion_config_text(
    master_text: &str,
    master_path: &Path,
    name: &HostPort,
    key_pem: &str,
) -> Result<String, ConfigError> {
    let mut doc = parse_doc(master_text, master_path)?;
    if let Some(tls) = doc.get_mut("tls").and_then(|t| t.as_table_like_mut()) {
        tls.remove("ca_private_key");
    }
    // The master's key stays the master's: a minion that held it could pose as the master
    // to agents and to other minions.
    if let Some(frontend) = doc.get_mut("frontend").and_then(|t| t.as_table_like_mut()) {
        frontend.remove("private_key");
    }
    let mut found = false;
    if let Some(minions) = doc
        .get_mut("minions")
        .and_then(|m| m.as_array_of_tables_mut())
    {
        for entry in minions.iter_mut() {
            let own = entry
                .get("name")
                .and_then(|n| n.as_str())
                .and_then(|n| HostPort::parse(n).ok())
                .is_some_and(|n| &n == name);
            if own {
                entry["private_key"] = toml_edit::value(key_pem);
                found = true;
            } else {
                entry.remove("private_key");
            }
        }
    }
    if !found {
        return Err(ConfigError::Generate(format!(
            "minion `{name}` is not in {}",
            master_path.display()
        )));
    }
    let header = format!(
        "# packhunt config of minion {name}, written by `packhunt config frontend`: the\n\
         # deployment's settings as they were then, with this minion's key and no other.\n\
         # Keep it mode 0600 on the minion's machine only.\n\n"
    );
    let body = doc.to_string();
    Ok(format!("{header}{}", strip_leading_comments(&body)))
}

/// What `split_secrets` wrote.
#[derive(Debug, Default)]
pub struct Split {
    /// The CA key file written, if the config embedded the key.
    pub ca_key_path: Option<PathBuf>,
    /// Each minion's own config written.
    pub minion_configs: Vec<PathBuf>,
}

/// Moves what an older server config embeds out of it: the CA key to `ca.key.pem`, each
/// minion's key to its own `minion-<name>.config.toml`. Files are written before the
/// keys leave the config, so a failure midway loses no key.
pub fn split_secrets(config_path: &Path) -> Result<Split, ConfigError> {
    let file = ServerFile::load(config_path)?;
    file.clone().parse(config_path)?;
    let text = std::fs::read_to_string(config_path).map_err(|error| ConfigError::Read {
        path: config_path.to_path_buf(),
        error,
    })?;
    let mut split = Split::default();
    if let Some(key_pem) = &file.tls.ca_private_key {
        let key_path = ca_key_path(config_path);
        if key_path.exists() {
            let on_disk =
                std::fs::read_to_string(&key_path).map_err(|error| ConfigError::Read {
                    path: key_path.clone(),
                    error,
                })?;
            if on_disk.trim() != key_pem.trim() {
                return Err(ConfigError::Generate(format!(
                    "{} exists and holds another key than {}; move one of them away first",
                    key_path.display(),
                    config_path.display()
                )));
            }
        } else {
            write_secret_file(&key_path, key_pem)?;
        }
        split.ca_key_path = Some(key_path);
    }
    for minion in &file.minions {
        let Some(key_pem) = &minion.private_key else {
            continue;
        };
        let name = HostPort::parse(&minion.name).map_err(ConfigError::Generate)?;
        let path = minion_config_path(config_path, &name);
        write_secret_file(
            &path,
            &minion_config_text(&text, config_path, &name, key_pem)?,
        )?;
        split.minion_configs.push(path);
    }
    let mut doc = parse_doc(&text, config_path)?;
    if let Some(tls) = doc.get_mut("tls").and_then(|t| t.as_table_like_mut()) {
        tls.remove("ca_private_key");
    }
    if let Some(minions) = doc
        .get_mut("minions")
        .and_then(|m| m.as_array_of_tables_mut())
    {
        for entry in minions.iter_mut() {
            entry.remove("private_key");
        }
    }
    let edited = doc.to_string();
    let check: ServerFile = toml::from_str(&edited).map_err(|e| ConfigError::Parse {
        path: config_path.to_path_buf(),
        message: e.to_string(),
    })?;
    check.parse(config_path)?;
    write_secret_file(config_path, &edited)?;
    Ok(split)
}

pub(super) fn parse_doc(text: &str, path: &Path) -> Result<toml_edit::DocumentMut, ConfigError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// The master's header comment speaks of the master's file; the minion's has its own.
fn strip_leading_comments(text: &str) -> &str {
    let mut rest = text;
    while let Some(line_end) = rest.find('\n') {
        let line = rest[..line_end].trim();
        if line.starts_with('#') || line.is_empty() {
            rest = &rest[line_end + 1..];
        } else {
            break;
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    //! Goal: a new deployment keeps the CA key out of the config and each minion's key in
    //! that minion's config only; an old config is split without losing a key.
    use super::*;
    use crate::config::generate::{generate, GenerateOptions};
    use crate::config::minion::add_minion;
    use crate::config::ServerConfig;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn minion_file_names_are_one_word() {
        let config = Path::new("/d/server.config.toml");
        let name = HostPort::parse("[::1]:9100").unwrap();
        assert_eq!(
            minion_config_path(config, &name),
            Path::new("/d/minion-___1__9100.config.toml")
        );
        let name = HostPort::parse("fe-2.example:8000").unwrap();
        assert_eq!(
            minion_config_path(config, &name),
            Path::new("/d/minion-fe-2.example_8000.config.toml")
        );
    }

    #[test]
    fn a_generated_enrolment_secret_is_in_both_configs_and_the_ca_key_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        opts.enrolment_secret = true;
        let generated = generate(&opts).unwrap();
        let server = ServerConfig::load(&generated.server_config_path).unwrap();
        let client = crate::config::ClientConfig::load(&generated.client_config_path).unwrap();
        let secret = server.frontend.enrolment_secret.expect("a secret");
        assert_eq!(client.client.enrolment_secret, Some(secret));
        assert_eq!(mode(&generated.ca_key_path), 0o600);
        let text = std::fs::read_to_string(&generated.server_config_path).unwrap();
        assert!(!text.contains("ca_private_key"));
        let ca = load_ca_signing_key(&generated.server_config_path).unwrap();
        assert_eq!(ca.source, generated.ca_key_path);
        assert!(
            !format!("{ca:?}").contains("PRIVATE"),
            "Debug hides the key"
        );
        // Offline: tools that need it say where it should be.
        std::fs::remove_file(&generated.ca_key_path).unwrap();
        let err = load_ca_signing_key(&generated.server_config_path).unwrap_err();
        assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
    }

    #[test]
    fn an_old_config_with_embedded_keys_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        let path = generate(&opts).unwrap().server_config_path;
        add_minion(&path, "127.0.0.1:9100", None).unwrap();
        add_minion(&path, "127.0.0.1:9200", None).unwrap();
        // Make it look like an old config: the CA key and both minion keys embedded.
        let ca_key = std::fs::read_to_string(ca_key_path(&path)).unwrap();
        let mut doc = parse_doc(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        doc["tls"]["ca_private_key"] = toml_edit::value(ca_key.clone());
        let mut keys = Vec::new();
        for (i, name) in ["127.0.0.1:9100", "127.0.0.1:9200"].iter().enumerate() {
            let own = minion_config_path(&path, &HostPort::parse(name).unwrap());
            let file = ServerFile::load(&own).unwrap();
            let key = file.minions[i].private_key.clone().unwrap();
            doc["minions"][i]["private_key"] = toml_edit::value(key.clone());
            keys.push(key);
            std::fs::remove_file(own).unwrap();
        }
        std::fs::remove_file(ca_key_path(&path)).unwrap();
        std::fs::write(&path, doc.to_string()).unwrap();
        let old = ServerFile::load(&path).unwrap();
        assert!(embedded_secrets_warning(&old, &path).is_some());
        ServerConfig::load(&path).expect("an old config still loads");
        assert_eq!(load_ca_signing_key(&path).unwrap().key_pem, ca_key);

        let split = split_secrets(&path).unwrap();
        assert_eq!(split.minion_configs.len(), 2);
        assert_eq!(std::fs::read_to_string(ca_key_path(&path)).unwrap(), ca_key);
        assert_eq!(mode(&ca_key_path(&path)), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(ca_key.trim()), "the CA key left the config");
        for key in &keys {
            assert!(!text.contains(key.trim()), "the master keeps no minion key");
        }
        let master = ServerFile::load(&path).unwrap();
        assert!(embedded_secrets_warning(&master, &path).is_none());
        for (i, own) in split.minion_configs.iter().enumerate() {
            assert_eq!(mode(own), 0o600);
            let text = std::fs::read_to_string(own).unwrap();
            assert!(text.contains(keys[i].trim()));
            assert!(!text.contains(keys[1 - i].trim()), "no other minion's key");
            assert!(!text.contains(ca_key.trim()), "no CA key");
            let name = ["127.0.0.1:9100", "127.0.0.1:9200"][i];
            ServerConfig::load(own)
                .unwrap()
                .identity(Some(name))
                .unwrap();
        }
        assert_eq!(load_ca_signing_key(&path).unwrap().key_pem, ca_key);
    }
}
