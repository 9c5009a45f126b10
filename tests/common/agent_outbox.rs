//! Helpers for the agent outbox tests: a real `packhunt client` with its own config
//! (small uploads, a known outbox folder) that a test can kill -9 and start again, a
//! generated file tree to glob, and a look into the outbox's folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{packhunt_bin, Deployment, Proc};

/// A real agent's config and outbox; every start is the same agent (same writeback).
pub struct OutboxAgent {
    pub config: PathBuf,
    pub outbox: PathBuf,
    log: PathBuf,
}

impl OutboxAgent {
    /// A client config with `max_upload_bytes` and an outbox in the deployment's folder.
    pub fn new(deployment: &Deployment, max_upload_bytes: u64) -> Result<Self> {
        let outbox = deployment.path().join("agent.outbox");
        let dir = outbox.clone();
        let config = deployment.client_config_with("outbox-client.config.toml", |c| {
            c.client.max_upload_bytes = max_upload_bytes;
            c.client.outbox_dir = Some(dir);
        })?;
        Ok(Self {
            config,
            outbox,
            log: deployment.path().join("agent.log"),
        })
    }

    /// A client config with `max_upload_bytes`, an outbox in the deployment's folder and
    /// only these frontends' agent ports, in this order (`name`: the config file's name).
    pub fn on_ports(
        deployment: &Deployment,
        name: &str,
        ports: &[u16],
        max_upload_bytes: u64,
    ) -> Result<Self> {
        let outbox = deployment.path().join(format!("{name}.outbox"));
        let dir = outbox.clone();
        let config = deployment.client_config_with(name, |c| {
            c.client.server_urls = ports
                .iter()
                .map(|p| format!("https://127.0.0.1:{p}/"))
                .collect();
            c.client.max_upload_bytes = max_upload_bytes;
            c.client.outbox_dir = Some(dir);
        })?;
        Ok(Self {
            config,
            outbox,
            log: deployment.path().join(format!("{name}.log")),
        })
    }

    /// Starts the agent; its log goes to `agent.log` (appended across starts).
    pub fn start(&self) -> Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(packhunt_bin())
            .args(["client", "--config"])
            .arg(&self.config)
            .env("PACKHUNT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Proc(child))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The flow's folder in the outbox, if the agent holds it.
    pub fn flow_dir(&self, flow: &str) -> Option<PathBuf> {
        let suffix = format!("-{flow}");
        std::fs::read_dir(&self.outbox)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&suffix))
            })
    }
}

/// kill -9, and reap.
pub fn kill9(mut agent: Proc) -> Result<()> {
    agent.0.kill()?;
    agent.0.wait()?;
    Ok(())
}

/// `count` empty files with long names under `dir/tree` (rows of ~200 bytes each).
pub fn make_tree(dir: &Path, prefix: &str, count: usize) -> Result<PathBuf> {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    for i in 0..count {
        std::fs::write(
            tree.join(format!("{prefix}-{i:06}-{}", "n".repeat(60))),
            b"",
        )?;
    }
    Ok(tree)
}

/// Schedules `Generic.Files.Glob` over `pattern`; returns the flow id.
pub fn collect_glob(
    deployment: &Deployment,
    client: &str,
    pattern: &str,
    hash: bool,
) -> Result<String> {
    let (status, body) = deployment.api().post(
        &format!("/api/v1/clients/{client}/collections"),
        &json!({
            "artifacts": ["Generic.Files.Glob"],
            "parameters": {"Generic.Files.Glob": {
                "pattern": pattern, "hash": hash, "max_results": 1_000_000
            }},
        }),
    )?;
    anyhow::ensure!(status == 200, "collection refused: {status} {body}");
    Ok(body["flow_id"].as_str().context("flow_id")?.to_string())
}

/// The flow's rows as stored, in order.
pub fn stored_rows(
    deployment: &Deployment,
    client: &str,
    flow: &str,
    artifact: &str,
) -> Result<Vec<Value>> {
    let path = super::flow_results(&deployment.datastore(), client, flow, artifact);
    std::fs::read_to_string(&path)
        .with_context(|| path.display().to_string())?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
