//! Helpers for the secrets tests: where a minion's own config is (configs written before
//! the keys moved out of the shared config still work), and raw GUI-port peers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The config minion `name` runs from: its own `minion-<name>.config.toml` when
/// `config frontend` wrote one, else the shared server.config.toml (older deployments).
pub fn minion_config(deployment_dir: &Path, name: &str) -> PathBuf {
    let shared = deployment_dir.join("server.config.toml");
    match packhunt::config::url::HostPort::parse(name) {
        Ok(host_port) => {
            let own = packhunt::config::secrets::minion_config_path(&shared, &host_port);
            if own.exists() {
                own
            } else {
                shared
            }
        }
        Err(_) => shared,
    }
}

/// Minion `name`'s `[[minions]]` entry with its key, from the config it runs from.
pub fn minion_entry(deployment_dir: &Path, name: &str) -> Result<toml::Value> {
    let path = minion_config(deployment_dir, name);
    let config: toml::Value = toml::from_str(&std::fs::read_to_string(&path)?)?;
    config["minions"]
        .as_array()
        .context("minions")?
        .iter()
        .find(|m| m["name"].as_str() == Some(name))
        .cloned()
        .with_context(|| format!("{name} in {}", path.display()))
}

/// A TLS client for the GUI port pinned to `ca_pem`, speaking HTTP/1.1 only.
pub fn gui_tls_http1(ca_pem: &str) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    let mut config =
        (*packhunt::tls::client::api_client_config(&packhunt::tls::pem::certificates(ca_pem)?)?)
            .clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}
