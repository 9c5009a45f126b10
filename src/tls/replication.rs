//! rustls configs of the replication link between frontends: TLS 1.3, mutual, both ends
//! holding a certificate signed by the deployment CA. Agents' self-made certificates
//! (and anything else the CA did not sign) are refused in the handshake; which minion a
//! CA-signed peer is gets decided after it, by comparing its certificate with the one the
//! config lists for the name it claims (`replication::master`).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use super::client::pinned_roots;
use super::pem::CertificateAndKey;
use super::server::{provider, TlsConfigError};

/// The master's side: its frontend certificate, client certificates checked against the CA.
pub fn link_server_config(
    ca: &[CertificateDer<'static>],
    own: &CertificateAndKey,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(pinned_roots(ca)?), provider())
            .build()
            .map_err(|e| TlsConfigError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(own.chain.clone(), own.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A minion's side: the master's certificate checked against the CA, its own presented.
pub fn link_client_config(
    ca: &[CertificateDer<'static>],
    own: &CertificateAndKey,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pinned_roots(ca)?)
        .with_client_auth_cert(own.chain.clone(), own.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
