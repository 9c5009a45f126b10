//! Helpers for the fleet-trust tests: a replication client that links to the master with
//! a configured minion's real certificate and sends whatever the test says (a compromised
//! minion), and agents started from a copy of another agent's writeback (a clone).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use packhunt::replication::pb::envelope::Kind;
use packhunt::replication::pb::replication_client::ReplicationClient;
use packhunt::replication::pb::{self, Envelope};
use tokio_stream::wrappers::ReceiverStream;

use super::{packhunt_bin, Deployment, Minion, Proc};

/// A link to the master made with `minion`'s certificate and Hello, driven by the test.
pub struct ForgedMinion {
    pub rt: tokio::runtime::Runtime,
    tx: tokio::sync::mpsc::Sender<Envelope>,
    /// Kept so the link stays open for as long as the test holds it.
    _incoming: tonic::Streaming<Envelope>,
}

impl ForgedMinion {
    /// Links as `minion` (which must be in the config); waits for the master's Hello.
    pub fn link(deployment: &Deployment, minion: &Minion) -> Result<Self> {
        Self::link_as(deployment, minion, &minion.name)
    }

    /// Links with `minion`'s certificate, its Hello naming `claimed`.
    pub fn link_as(deployment: &Deployment, minion: &Minion, claimed: &str) -> Result<Self> {
        // The minion's own config: the only one holding its key.
        let config = packhunt::config::ServerConfig::load(&super::secrets::minion_config(
            deployment.path(),
            &minion.name,
        ))?;
        let identity = config.identity(Some(&minion.name))?;
        let tls = packhunt::tls::replication::link_client_config(
            &config.tls.ca_certificate,
            &identity.tls,
        )?;
        let address = format!("127.0.0.1:{}", config.frontend.replication_port);
        let server_name = config.frontend.master_tls_name.clone();
        // A worker thread drives the link between the test's calls.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (tx, incoming) = rt.block_on(async {
            let connector = {
                let address = address.clone();
                tower::service_fn(move |_uri: http::Uri| {
                    let (address, name) = (address.clone(), server_name.clone());
                    let tls = tokio_rustls::TlsConnector::from(tls.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(&address).await?;
                        let stream = tls.connect(name, tcp).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                })
            };
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
                .connect_with_connector(connector)
                .await?;
            let mut client = ReplicationClient::new(channel);
            let (tx, rx) = tokio::sync::mpsc::channel::<Envelope>(64);
            let hello = pb::Hello {
                frontend: claimed.to_string(),
                version: "forged".into(),
            };
            tx.send(envelope(Kind::Hello(hello))).await?;
            let response = client.link(ReceiverStream::new(rx)).await?;
            let mut incoming = response.into_inner();
            let first = tokio::time::timeout(Duration::from_secs(10), incoming.message())
                .await
                .context("no Hello from the master within 10 s")??;
            match first.and_then(|e| e.kind) {
                Some(Kind::Hello(_)) => {}
                other => bail!("expected the master's Hello, got {other:?}"),
            }
            anyhow::Ok((tx, incoming))
        })?;
        Ok(Self {
            rt,
            tx,
            _incoming: incoming,
        })
    }

    /// Sends one message on the link.
    pub fn send(&self, kind: Kind) -> Result<()> {
        self.rt.block_on(self.tx.send(envelope(kind)))?;
        Ok(())
    }
}

fn envelope(kind: Kind) -> Envelope {
    Envelope { kind: Some(kind) }
}

/// A client config of its own (its own writeback, event buffer and outbox beside it,
/// under `dir`) listing only the agent ports `ports`.
pub fn agent_config(deployment: &Deployment, dir: &Path, ports: &[u16]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = packhunt::config::ClientFile::load(&deployment.client_config())?;
    cfg.client.server_urls = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}/"))
        .collect();
    cfg.client.writeback_path = dir.join("client.writeback.toml");
    // Beside the writeback: each agent its own event buffer and outbox.
    cfg.client.event_buffer_dir = None;
    cfg.client.outbox_dir = None;
    let path = dir.join("client.config.toml");
    packhunt::config::write_toml(&path, &cfg)?;
    Ok(path)
}

/// The writeback file a config made by `agent_config` in `dir` uses.
pub fn writeback_in(dir: &Path) -> PathBuf {
    dir.join("client.writeback.toml")
}

/// The client id in a writeback file.
pub fn client_id_in(writeback: &Path) -> Result<String> {
    let text = std::fs::read_to_string(writeback)?;
    let value: toml::Value = toml::from_str(&text)?;
    Ok(value["client_id"]
        .as_str()
        .context("writeback without client_id")?
        .to_string())
}

/// Starts a real `packhunt client` from the config at `config`; killed on drop.
pub fn start_agent_with(config: &Path) -> Result<Proc> {
    let child = Command::new(packhunt_bin())
        .args(["client", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}
