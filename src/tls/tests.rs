//! Test support shared by unit tests in several modules: a generated deployment's
//! agent-port configs, server and agent side.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::generate::{generate, GenerateOptions};
use crate::config::{ClientConfig as ClientFile, ServerConfig as ServerFile};
use crate::tls::agent_key::AgentIdentity;
use crate::tls::server::agent_server_config;
use rustls::pki_types::ServerName;

pub struct AgentPortConfigs {
    pub server: Arc<ServerConfig>,
    /// A fresh agent's config, client certificate included.
    pub client: Arc<rustls::ClientConfig>,
    pub name: ServerName<'static>,
    /// Holds the generated files.
    pub dir: tempfile::TempDir,
}

pub fn agent_port_configs() -> AgentPortConfigs {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GenerateOptions::new(dir.path());
    opts.admin_password = Some("pw".into());
    let generated = generate(&opts).unwrap();
    let server_file = ServerFile::load(&generated.server_config_path).unwrap();
    let client_file = ClientFile::load(&generated.client_config_path).unwrap();
    let server = agent_server_config(server_file.frontend.master_tls().unwrap()).unwrap();
    let agent = AgentIdentity::generate().unwrap();
    let client = crate::tls::client::agent_client_config(
        &client_file.client.ca_certificate,
        agent.rustls_cert_chain(),
        agent.rustls_private_key(),
    )
    .unwrap();
    let name = ServerName::try_from(server_file.frontend.master.host.clone()).unwrap();
    AgentPortConfigs {
        server,
        client,
        name,
        dir,
    }
}
