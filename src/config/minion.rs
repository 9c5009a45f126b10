//! `packhunt config frontend`: adds a minion frontend to a deployment. Issues its
//! certificate from the deployment CA (its key read from `ca.key.pem`, see
//! `config/secrets.rs`), appends a `[[minions]]` entry with the certificate to
//! server.config.toml (keeping the operator's comments and edits: the file is edited, not
//! re-serialised), writes the minion its own config (`minion-<name>.config.toml`, the
//! only file with its key) and lists the minion's URL in client.config.toml next to it,
//! so agents configured from then on spread over every frontend.
//!
//! Behind a load balancer (`frontend.balancer_names`, or `--balancer-name`) the minion's
//! certificate also carries the balancer's names, since agents check the name they dialled,
//! and the client config is left listing the balancer only.

use std::path::{Path, PathBuf};

use super::generate::{issue_frontend_certificate_for, write_private_file, CLIENT_CONFIG_FILE};
use super::secrets::{
    load_ca_signing_key, minion_config_path, minion_config_text, write_secret_file,
};
use super::url::{HostPort, ServerUrl};
use super::{ClientConfig, ConfigError, ServerFile};

/// What `add_minion` wrote.
#[derive(Debug, Clone)]
pub struct AddedMinion {
    pub name: String,
    /// The minion's own config: copy it to the minion's machine and run it from there.
    pub minion_config_path: PathBuf,
    /// The client config whose URL list now names the minion, if there was one (none
    /// behind a balancer: agents reach the minion through it).
    pub client_config_path: Option<PathBuf>,
    /// The balancer names the minion's certificate carries besides its own host.
    pub balancer_names: Vec<String>,
}

/// Adds minion `name` (HOST:PORT) to the server config at `path`.
pub fn add_minion(
    path: &Path,
    name: &str,
    metrics_port: Option<u16>,
) -> Result<AddedMinion, ConfigError> {
    add_minion_behind(path, name, metrics_port, &[])
}

/// `add_minion` for a minion agents also reach through load balancers: its certificate
/// carries `balancer_names` and the config's `frontend.balancer_names`.
pub fn add_minion_behind(
    path: &Path,
    name: &str,
    metrics_port: Option<u16>,
    balancer_names: &[String],
) -> Result<AddedMinion, ConfigError> {
    // Load first: a broken config is reported as such, not as an edit failure.
    let config = ServerFile::load(path)?.parse(path)?;
    let mut balancers = config.frontend.balancer_names.clone();
    for extra in balancer_names {
        if !balancers.contains(extra) {
            balancers.push(extra.clone());
        }
    }
    let name = HostPort::parse(name).map_err(ConfigError::Generate)?;
    if config.frontend_names().contains(&name) {
        return Err(ConfigError::Generate(format!(
            "frontend `{name}` is already in {}",
            path.display()
        )));
    }
    let ca = load_ca_signing_key(path)?;
    let (certificate, private_key) =
        issue_frontend_certificate_for(&ca.certificate_pem, &ca.key_pem, &name.host, &balancers)?;

    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    let mut entry = toml_edit::Table::new();
    entry["name"] = toml_edit::value(name.to_string());
    entry["certificate"] = toml_edit::value(certificate);
    if let Some(port) = metrics_port {
        entry["metrics_port"] = toml_edit::value(i64::from(port));
    }
    // An empty inline `minions = []` (as older files have) becomes [[minions]] tables.
    if doc
        .get("minions")
        .and_then(|m| m.as_array())
        .is_some_and(|a| a.is_empty())
    {
        doc.remove("minions");
    }
    let minions = doc
        .entry("minions")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "minions".into(),
            message: "must be an array of [[minions]] tables".into(),
        })?;
    minions.push(entry);
    let edited = doc.to_string();
    // Check the edited text loads before it replaces the file.
    let check: ServerFile = toml::from_str(&edited).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check.parse(path)?;
    // The minion's config first: if it cannot be written, the master's is unchanged.
    let minion_config_path = minion_config_path(path, &name);
    write_secret_file(
        &minion_config_path,
        &minion_config_text(&edited, path, &name, &private_key)?,
    )?;
    write_private_file(path, &edited)?;

    let client_path = path.with_file_name(CLIENT_CONFIG_FILE);
    let client_config_path = if client_path.exists() && balancers.is_empty() {
        add_client_url(&client_path, &name.url())?;
        Some(client_path)
    } else {
        None
    };
    Ok(AddedMinion {
        name: name.to_string(),
        minion_config_path,
        client_config_path,
        balancer_names: balancers,
    })
}

/// Appends `url` to the client config's server_urls unless it is listed already.
fn add_client_url(path: &Path, url: &ServerUrl) -> Result<(), ConfigError> {
    // Validate as the agent would, then edit the text.
    ClientConfig::load(path)?;
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    let urls = doc["client"]["server_urls"]
        .as_array_mut()
        .ok_or_else(|| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "client.server_urls".into(),
            message: "must be an array".into(),
        })?;
    let url = url.to_string();
    if !urls.iter().any(|u| u.as_str() == Some(url.as_str())) {
        urls.push(url);
    }
    super::write_text(path, &doc.to_string())
}

#[cfg(test)]
mod tests {
    //! Goal: `config frontend` adds a minion whose certificate chains to the deployment
    //! CA, which the same config can then run, and which agents learn about.
    use super::*;
    use crate::config::generate::{generate, GenerateOptions};
    use crate::config::ServerConfig;

    fn deployment() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        let path = generate(&opts).unwrap().server_config_path;
        (dir, path)
    }

    #[test]
    fn adds_a_minion_that_loads_and_is_listed_for_agents() {
        let (dir, path) = deployment();
        let before = std::fs::read_to_string(&path).unwrap();
        let added = add_minion(&path, "127.0.0.1:9100", Some(9101)).unwrap();
        assert_eq!(
            added.client_config_path.as_deref(),
            Some(dir.path().join("client.config.toml").as_path())
        );
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(
            after.starts_with(before.lines().next().unwrap()),
            "the header comment is kept"
        );

        let master = ServerConfig::load(&path).unwrap();
        assert!(
            master.identity(Some("127.0.0.1:9100")).is_err(),
            "the master's config holds no minion key"
        );
        let config = ServerConfig::load(&added.minion_config_path).unwrap();
        let identity = config.identity(Some("127.0.0.1:9100")).unwrap();
        assert_eq!(identity.agent_port, 9100);
        assert!(!identity.is_master());
        assert_eq!(config.minions[0].metrics_port, Some(9101));
        assert_eq!(identity.tls.chain, config.minions[0].tls.chain);
        assert_eq!(master.minions[0].tls.chain, config.minions[0].tls.chain);
        // The minion's certificate is for its host and chains to the CA the agents pin.
        let file = ServerFile::load(&path).unwrap();
        crate::config::generate::test_support::verify_server(
            &file.tls.ca_certificate,
            &file.minions[0].certificate,
            "127.0.0.1",
        )
        .expect("an agent accepts the minion's certificate");

        let client = ClientConfig::load(&dir.path().join("client.config.toml")).unwrap();
        let urls: Vec<String> = client
            .client
            .server_urls
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(urls, ["https://127.0.0.1:8000/", "https://127.0.0.1:9100/"]);
    }

    #[test]
    fn behind_a_balancer_every_certificate_carries_its_name_and_agents_dial_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        opts.public_host = "master.internal".into();
        opts.balancer_name = Some("agents.example.org".into());
        opts.balancer_port = Some(443);
        let path = generate(&opts).unwrap().server_config_path;
        let client_path = dir.path().join("client.config.toml");
        let urls = |path: &Path| -> Vec<String> {
            let client = ClientConfig::load(path).unwrap();
            client
                .client
                .server_urls
                .iter()
                .map(|u| u.to_string())
                .collect()
        };
        assert_eq!(urls(&client_path), ["https://agents.example.org:443/"]);
        let file = ServerFile::load(&path).unwrap();
        assert_eq!(file.frontend.balancer_names, ["agents.example.org"]);
        let verify = crate::config::generate::test_support::verify_server;
        let ca = &file.tls.ca_certificate;
        for name in ["master.internal", "agents.example.org"] {
            verify(ca, &file.frontend.certificate, name).expect("the master's certificate");
        }

        // From the config alone, and with one more balancer named on the command line.
        let added = add_minion(&path, "minion-1.internal:8000", None).unwrap();
        assert!(
            added.client_config_path.is_none(),
            "agents keep dialling the balancer"
        );
        assert_eq!(added.balancer_names, ["agents.example.org"]);
        add_minion_behind(&path, "minion-2.internal:8000", None, &["10.0.0.9".into()]).unwrap();
        let file = ServerFile::load(&path).unwrap();
        for (minion, names) in file.minions.iter().zip([
            &["minion-1.internal", "agents.example.org"][..],
            &["minion-2.internal", "agents.example.org", "10.0.0.9"][..],
        ]) {
            for name in names {
                verify(ca, &minion.certificate, name).expect("the minion's certificate");
            }
        }
        assert!(verify(ca, &file.minions[0].certificate, "10.0.0.9").is_err());
        // What a frontend warns about at start: the names its certificate lacks.
        let first = crate::tls::pem::certificates(&file.minions[0].certificate).unwrap();
        let wanted = [
            "AGENTS.example.org".to_string(),
            "10.0.0.9".into(),
            "x.y".into(),
        ];
        let missing = crate::config::generate::names_missing_from_certificate(&first[0], &wanted);
        assert_eq!(missing, ["10.0.0.9", "x.y"]);
        assert_eq!(urls(&client_path), ["https://agents.example.org:443/"]);
        ServerConfig::load(&path).expect("the edited config loads");
    }

    #[test]
    fn a_balancer_name_that_is_no_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path());
        opts.balancer_name = Some("not a host".into());
        let err = generate(&opts).unwrap_err().to_string();
        assert!(err.contains("balancer name `not a host`"), "{err}");
        let (_dir, path) = deployment();
        let err = add_minion_behind(&path, "127.0.0.1:9100", None, &["a b".into()]).unwrap_err();
        assert!(err.to_string().contains("balancer name `a b`"), "{err}");
    }

    #[test]
    fn refuses_a_second_minion_of_the_same_name_and_the_master_name() {
        let (_dir, path) = deployment();
        add_minion(&path, "127.0.0.1:9100", None).unwrap();
        let err = add_minion(&path, "127.0.0.1:9100", None).unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
        let err = add_minion(&path, "127.0.0.1:8000", None).unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
        let err = add_minion(&path, "no-port", None).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        assert_eq!(
            ServerConfig::load(&path).unwrap().minions.len(),
            1,
            "failed adds change nothing"
        );
    }

    #[test]
    fn an_unknown_node_is_a_clear_error() {
        let (_dir, path) = deployment();
        add_minion(&path, "127.0.0.1:9100", None).unwrap();
        let err = ServerConfig::load(&path)
            .unwrap()
            .identity(Some("127.0.0.1:9200"))
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("127.0.0.1:9200") && message.contains("127.0.0.1:9100"),
            "{message}"
        );
    }
}
