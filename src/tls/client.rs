//! rustls client config for agents (and loadgen): pin the deployment CA, present the
//! agent's own certificate, TLS 1.3 only, ALPN h2, resumption on.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::server::{provider, TlsConfigError};

pub fn agent_client_config(
    ca: &[CertificateDer<'static>],
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pinned_roots(ca)?)
        .with_client_auth_cert(cert_chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// TLS config for scripts and tools calling the GUI/API port (loadgen's driver and
/// probe, the tests): the deployment CA pinned, no client certificate.
pub fn api_client_config(
    ca: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pinned_roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The deployment CA as the only trusted root.
pub(super) fn pinned_roots(
    ca: &[CertificateDer<'static>],
) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    Ok(roots)
}
