//! PEM text (as stored inline in the configs) to rustls types, with errors that say
//! what was wrong so config loading can name the key.

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

pub fn check_certificate(pem: &str) -> Result<(), PemError> {
    certificates(pem).map(|_| ())
}

pub fn check_private_key(pem: &str) -> Result<(), PemError> {
    private_key(pem).map(|_| ())
}
