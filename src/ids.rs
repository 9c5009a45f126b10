//! Identifiers that cross trust boundaries. Each is parsed once (from a certificate, an
//! API path or an agent upload) into a newtype whose invariant makes it safe to use as a
//! single path component: nothing past this module handles a raw id string.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{shown}`: expected {expected}")]
pub struct IdError {
    kind: &'static str,
    shown: String,
    expected: &'static str,
}

fn id_error(kind: &'static str, raw: &str, expected: &'static str) -> IdError {
    // Never echo an unbounded attacker string into logs or responses.
    let shown: String = raw.chars().take(64).collect();
    IdError {
        kind,
        shown,
        expected,
    }
}

/// `C.` + 16 lowercase hex digits: the first 8 bytes of SHA-256 over the agent's
/// SubjectPublicKeyInfo. Invariant: matches `^C\.[0-9a-f]{16}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

/// Server-minted ids: a one-letter prefix and 16 uppercase hex digits from a random `u64`.
/// Distinct types so a flow id can never be passed where a hunt id is expected.
macro_rules! random_upper_hex_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                if parse_prefixed(raw, $prefix, true) {
                    Ok(Self(raw.to_string()))
                } else {
                    Err(id_error(
                        $kind,
                        raw,
                        concat!($prefix, " and 16 uppercase hex digits"),
                    ))
                }
            }

            pub fn random() -> Self {
                Self(format!(concat!($prefix, "{:016X}"), rand::random::<u64>()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

random_upper_hex_id!(
    /// `F.` + 16 uppercase hex digits. Invariant: matches `^F\.[0-9A-F]{16}$`.
    FlowId,
    "F.",
    "flow id"
);

random_upper_hex_id!(
    /// `H.` + 16 uppercase hex digits. Invariant: matches `^H\.[0-9A-F]{16}$`.
    HuntId,
    "H.",
    "hunt id"
);

fn is_hex(s: &str, upper: bool) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_digit()
            || if upper {
                (b'A'..=b'F').contains(&b)
            } else {
                (b'a'..=b'f').contains(&b)
            }
    })
}

fn parse_prefixed(raw: &str, prefix: &str, upper: bool) -> bool {
    raw.len() == prefix.len() + 16 && raw.starts_with(prefix) && is_hex(&raw[prefix.len()..], upper)
}

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if parse_prefixed(raw, "C.", false) {
            Ok(Self(raw.to_string()))
        } else {
            Err(id_error("client id", raw, "C. and 16 lowercase hex digits"))
        }
    }

    /// Derives the id from a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(spki_der);
        Self(format!("C.{}", hex::encode(&digest[..8])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lookups by `&str` in maps keyed by `ClientId` (its hash and order are its string's).
impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(ClientId, FlowId, HuntId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_anything_that_could_be_a_path() {
        for raw in [
            "C.0123456789abcdef/..",
            "../C.0123456789abcdef",
            "C.0123456789ABCDEF",
            "",
            "C.",
        ] {
            assert!(ClientId::parse(raw).is_err(), "{raw}");
        }
        assert!(ClientId::parse("C.0123456789abcdef").is_ok());
        assert!(FlowId::parse("F.0123456789ABCDEF").is_ok());
        assert!(FlowId::parse("F.0123456789abcdef").is_err());
        let f = FlowId::random();
        assert_eq!(FlowId::parse(f.as_str()).unwrap(), f);
        assert!(HuntId::parse("H.0123456789ABCDEF").is_ok());
        assert!(HuntId::parse("H.0123456789abcdef").is_err());
        assert!(HuntId::parse("F.0123456789ABCDEF").is_err());
        let h = HuntId::random();
        assert_eq!(HuntId::parse(h.as_str()).unwrap(), h);
        assert_eq!(
            HuntId::parse("H.0123").unwrap_err().to_string(),
            "invalid hunt id `H.0123`: expected H. and 16 uppercase hex digits"
        );
    }

    #[test]
    fn client_id_is_stable_for_a_key() {
        let a = ClientId::from_spki(b"key-one");
        assert_eq!(a, ClientId::from_spki(b"key-one"));
        assert_ne!(a, ClientId::from_spki(b"key-two"));
        assert!(ClientId::parse(a.as_str()).is_ok());
    }
}
