//! Who an agent is, as the server sees it: the client id derives from the public key in
//! the certificate the agent presented in the handshake, never from anything it says, so
//! an agent cannot claim another's id (docs/architecture.md, "Agent protocol"). The agent derives its
//! own id through this same function, so both ends agree by construction.
//!
//! This module only derives; it does not check signatures, chains or validity (the
//! rustls verifier has done that before a certificate gets here).

use crate::ids::ClientId;

/// A presented certificate we cannot take an identity from. The agent's fault.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate is not valid X.509 DER: {0}")]
    Malformed(String),
    #[error("client certificate is followed by {0} unexpected bytes")]
    TrailingBytes(usize),
}

/// The client id of the agent holding `der`'s key: `ClientId::from_spki` over the
/// certificate's raw SubjectPublicKeyInfo DER, exactly as encoded (not re-serialised, so
/// the id cannot depend on a parser's idea of canonical form).
pub fn client_id_from_certificate(der: &[u8]) -> Result<ClientId, IdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    // rustls hands us exactly one certificate; bytes after it mean a confused or
    // hostile encoder, and accepting them would give one key two accepted encodings.
    if !rest.is_empty() {
        return Err(IdentityError::TrailingBytes(rest.len()));
    }
    Ok(ClientId::from_spki(cert.tbs_certificate.subject_pki.raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the id is a function of the key alone. Method: two certificates with different
    // names over one key give one id; a different key gives another.
    #[test]
    fn id_depends_on_the_key_only() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = |names: &[&str], key: &rcgen::KeyPair| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            rcgen::CertificateParams::new(names)
                .unwrap()
                .self_signed(key)
                .unwrap()
        };
        let a = client_id_from_certificate(cert(&["a.example"], &key).der()).unwrap();
        let b = client_id_from_certificate(cert(&["b.example"], &key).der()).unwrap();
        let c = client_id_from_certificate(cert(&["a.example"], &other).der()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        use rcgen::PublicKeyData;
        assert_eq!(a, ClientId::from_spki(&key.subject_public_key_info()));
    }

    // Goal: malformed input is an error, never a panic or an id.
    #[test]
    fn rejects_garbage_truncation_and_trailing_bytes() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec();
        assert!(matches!(
            client_id_from_certificate(b""),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            client_id_from_certificate(b"not a certificate"),
            Err(IdentityError::Malformed(_))
        ));
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert!(
                client_id_from_certificate(&der[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = der.clone();
        padded.extend_from_slice(&[0, 0]);
        assert!(matches!(
            client_id_from_certificate(&padded),
            Err(IdentityError::TrailingBytes(2))
        ));
    }
}
