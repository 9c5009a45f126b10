//! PEM text (as stored inline in the configs) to rustls types, with errors that say
//! what was wrong so config loading can name the key. Config parses every PEM once with
//! these; the TLS configs take the parsed values.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("no PEM private key found")]
    NoPrivateKey,
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| PemError::Malformed(e.to_string()))?
        .ok_or(PemError::NoPrivateKey)
}

/// A certificate chain and the private key of its first certificate, parsed once from the
/// config's PEM. What a frontend presents: to agents, to the GUI, on the replication link.
pub struct CertificateAndKey {
    /// Invariant: not empty; the first entry certifies `key`'s public half (rustls checks
    /// the pair when it builds a config).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// `PrivateKeyDer` is deliberately not `Clone`; a copy here is made once per config built.
impl Clone for CertificateAndKey {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Shows the certificate count only: the key must not reach logs.
impl std::fmt::Debug for CertificateAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAndKey")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}
