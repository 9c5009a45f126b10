//! rustls server configs: the agent port (TLS 1.3, mutual auth, any agent key) and the
//! GUI/API port (TLS 1.3, no client certificate).
//!
//! Agents enrol with a key pair they make themselves, so there is no CA to check their
//! certificate against: what proves identity is the CertificateVerify signature (the
//! agent holds the private key of the SPKI it presents), and the client id is derived
//! from that SPKI. An agent therefore cannot claim another agent's id.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, ServerConfig, SignatureScheme};

use super::pem::{CertificateAndKey, PemError};

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("certificate: {0}")]
    Pem(#[from] PemError),
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider everything uses (ring: no C toolchain needs beyond cc), with
/// AES-128-GCM/SHA-256 preferred over ring's default AES-256-GCM/SHA-384: uploads are
/// decrypted faster, and the handshake's key schedule runs on SHA-256, which CPUs
/// accelerate, instead of SHA-512 (tuning.md, P3 and P6). All three TLS 1.3 suites stay
/// enabled, so any peer still negotiates.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Accepts any well-formed client certificate whose key signs the handshake.
#[derive(Debug)]
struct AgentKeyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AgentKeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Only the SPKI matters (it names the client); it must parse so the id derives.
        super::identity::client_id_from_certificate(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS config for the agent port: TLS 1.3 only, client certificate mandatory, ALPN h2,
/// session tickets on so a reconnecting agent resumes (docs/architecture.md: ~71 µs vs ~153 µs).
pub fn agent_server_config(own: &CertificateAndKey) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider();
    let verifier = Arc::new(AgentKeyVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(own.chain.clone(), own.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// TLS config for the GUI/API port: server auth only; h2 and http/1.1 so curl works.
pub fn gui_server_config(own: &CertificateAndKey) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(own.chain.clone(), own.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use rustls::{ClientConnection, ServerConnection};

    /// Moves TLS bytes both ways until neither side has anything left to say.
    fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
        for _ in 0..20 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let to_server = !wire.is_empty();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            let to_client = !wire.is_empty();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !to_server && !to_client {
                return;
            }
        }
    }

    #[test]
    fn agents_negotiate_aes_128_and_resume_with_the_ticket() {
        let configs = crate::tls::tests::agent_port_configs();
        let (server_config, client_config, name) = (configs.server, configs.client, configs.name);

        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut client = ClientConnection::new(client_config.clone(), name.clone()).unwrap();
            let mut server = ServerConnection::new(server_config.clone()).unwrap();
            pump(&mut client, &mut server);
            assert!(!server.is_handshaking());
            assert_eq!(
                server.negotiated_cipher_suite().map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
            assert!(
                server.peer_certificates().is_some_and(|c| !c.is_empty()),
                "mutual TLS"
            );
            kinds.push(server.handshake_kind());
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    }
}
