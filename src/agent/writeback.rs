//! The agent's writeback file: its private key (and so its client id), made on first
//! run and kept, owner-only, so the agent is the same client across restarts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tls::agent_key::AgentIdentity;

#[derive(Debug, thiserror::Error)]
pub enum WritebackError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Writeback {
    client_id: String,
    private_key: String,
}

/// Loads the identity from `path`, or makes one and writes it there.
pub fn load_or_create(path: &Path) -> Result<AgentIdentity, WritebackError> {
    let err = |message: String| WritebackError::File {
        path: path.display().to_string(),
        message,
    };
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let wb: Writeback = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let identity =
            AgentIdentity::from_key_pem(&wb.private_key).map_err(|e| err(e.to_string()))?;
        return Ok(identity);
    }
    renew(path)
}

/// Makes a new identity and writes it to `path` in place of whatever was there (the
/// server asked this agent to re-key: its key is held by a clone too).
pub fn renew(path: &Path) -> Result<AgentIdentity, WritebackError> {
    let err = |message: String| WritebackError::File {
        path: path.display().to_string(),
        message,
    };
    let identity = AgentIdentity::generate().map_err(|e| err(e.to_string()))?;
    let wb = Writeback {
        client_id: identity.client_id().to_string(),
        private_key: identity.key_pem().to_string(),
    };
    let text = toml::to_string(&wb).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = path.with_extension("tmp");
    write_private(&tmp, &text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| err(e.to_string()))?;
    Ok(identity)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wb.toml");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.client_id(), second.client_id());
        std::fs::write(&path, "garbage = [").unwrap();
        assert!(load_or_create(&path)
            .unwrap_err()
            .to_string()
            .contains("wb.toml"));
    }

    // Goal: a renewed identity is a new client id, and it is the one the next start loads.
    #[test]
    fn a_renewed_identity_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wb.toml");
        let first = load_or_create(&path).unwrap();
        let renewed = renew(&path).unwrap();
        assert_ne!(first.client_id(), renewed.client_id());
        assert_eq!(
            load_or_create(&path).unwrap().client_id(),
            renewed.client_id()
        );
    }
}
