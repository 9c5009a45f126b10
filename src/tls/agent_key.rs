//! The agent's own TLS identity: a P-256 key made on first run and kept in the writeback
//! file, and a self-signed client certificate rebuilt from that key at every start, so the
//! key is the only thing to persist (docs/architecture.md, "Agent protocol"). The certificate carries
//! no authority: the server takes the client id from its public key, and the agent computes
//! its own id through the same function (`tls::identity`).
//!
//! This module does not read or write the writeback file, and knows nothing of the server.

use std::fmt;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::identity::{client_id_from_certificate, IdentityError};
use crate::ids::ClientId;

#[derive(Debug, thiserror::Error)]
pub enum AgentKeyError {
    /// Our fault or the system RNG's.
    #[error("cannot build the agent key or certificate: {0}")]
    Build(#[from] rcgen::Error),
    /// The stored key is unusable: the writeback file was damaged or edited.
    #[error("stored agent key is not a PEM private key: {0}")]
    KeyPem(rcgen::Error),
    #[error("stored agent key is not an ECDSA P-256 key")]
    WrongKeyType,
    /// Our bug: the certificate we just built does not carry the key we built it for.
    #[error("agent certificate does not yield the key's client id: {0}")]
    Identity(#[from] IdentityError),
    #[error("agent certificate names client id {in_certificate}, its key gives {from_key}")]
    IdMismatch {
        in_certificate: ClientId,
        from_key: ClientId,
    },
}

/// An agent's key, its self-signed certificate and the client id both ends derive from it.
/// Invariant: `cert_pem`/`cert_der` certify the public half of `key_pem`/`key_der`, and
/// `client_id == client_id_from_certificate(cert_der)`.
#[derive(Clone)]
pub struct AgentIdentity {
    key_pem: String,
    cert_pem: String,
    client_id: ClientId,
    cert_der: CertificateDer<'static>,
    /// PKCS#8, as rustls takes it.
    key_der: Vec<u8>,
}

impl AgentIdentity {
    /// A new identity with a fresh P-256 key: what an agent does on its first run.
    pub fn generate() -> Result<Self, AgentKeyError> {
        Self::from_key(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
    }

    /// The identity of a stored key, with a freshly built certificate. The same key always
    /// gives the same client id, so an agent keeps its id across restarts.
    pub fn from_key_pem(key_pem: &str) -> Result<Self, AgentKeyError> {
        let key = KeyPair::from_pem(key_pem).map_err(AgentKeyError::KeyPem)?;
        // One key type fleet-wide keeps the server's accepted signature schemes small; a
        // key of another type was not written by a packhunt agent.
        if !key.is_compatible(&PKCS_ECDSA_P256_SHA256) {
            return Err(AgentKeyError::WrongKeyType);
        }
        Self::from_key(key)
    }

    fn from_key(key: KeyPair) -> Result<Self, AgentKeyError> {
        let from_key = ClientId::from_spki(&key.subject_public_key_info());
        let cert = certificate_params(&from_key).self_signed(&key)?;
        let in_certificate = client_id_from_certificate(cert.der())?;
        if in_certificate != from_key {
            return Err(AgentKeyError::IdMismatch {
                in_certificate,
                from_key,
            });
        }
        Ok(Self {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            client_id: from_key,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// The PEM to persist in the writeback file; everything else is rebuilt from it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// For `rustls::ClientConfig::with_client_auth_cert`: the certificate alone, since it
    /// is self-signed and the server trusts keys, not chains.
    pub fn rustls_cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }

    pub fn rustls_private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Shows the id only: this value holds a private key, and Debug output ends up in logs.
impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Validity is fixed, not relative to now: the certificate is rebuilt at every start, so
/// expiry protects nothing, and endpoint clocks are often wrong (dead CMOS batteries, VMs
/// restored from snapshots). The end is RFC 5280 section 4.1.2.5's "no well-defined
/// expiration date", 99991231235959Z.
fn certificate_params(client_id: &ClientId) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, client_id.as_str());
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31) + Duration::from_secs(24 * 3600 - 1);
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // Goal: only the key needs persisting. Method: rebuild from the stored PEM and compare
    // ids, and check the server-side derivation on the rebuilt certificate agrees.
    #[test]
    fn same_key_same_client_id() {
        let first = AgentIdentity::generate().unwrap();
        let again = AgentIdentity::from_key_pem(first.key_pem()).unwrap();
        assert_eq!(first.client_id(), again.client_id());
        assert_eq!(again.key_pem(), first.key_pem());
        let der = &again.rustls_cert_chain()[0];
        assert_eq!(&client_id_from_certificate(der).unwrap(), first.client_id());
        assert!(ClientId::parse(first.client_id().as_str()).is_ok());
        let other = AgentIdentity::generate().unwrap();
        assert_ne!(other.client_id(), first.client_id());
    }

    // Goal: a damaged or foreign writeback key is refused with a reason, not a panic.
    #[test]
    fn rejects_bad_stored_keys() {
        let err = AgentIdentity::from_key_pem("not a key").unwrap_err();
        assert!(matches!(err, AgentKeyError::KeyPem(_)), "{err}");
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let err = AgentIdentity::from_key_pem(&p384.serialize_pem()).unwrap_err();
        assert!(matches!(err, AgentKeyError::WrongKeyType), "{err}");
        let id = AgentIdentity::generate().unwrap();
        assert!(!format!("{id:?}").contains("PRIVATE KEY"));
    }

    // Goal: rustls takes the identity, and a webpki verifier that trusts the certificate
    // accepts it today (validity dates, client-auth EKU and key usage all pass).
    #[test]
    fn rustls_accepts_the_identity() {
        let id = AgentIdentity::generate().unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(id.rustls_cert_chain()[0].clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&id.rustls_cert_chain()[0], &[], now)
            .unwrap();
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_client_auth_cert(id.rustls_cert_chain(), id.rustls_private_key())
            .unwrap();
    }
}
