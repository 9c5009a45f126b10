//! HTTP Basic authentication against the configured users.
//!
//! argon2 verification costs tens of milliseconds by design, far too slow to run on every
//! API call from the priority executor. The first successful check of a credential
//! stores SHA-256(user ":" password) with the user's role; later calls compare that
//! digest in constant time. Failed attempts are never cached.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Role, UserEntry};
use crate::limits::MAX_CACHED_CREDENTIALS_COUNT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

pub struct Authenticator {
    users: Vec<UserEntry>,
    verified: RefCell<HashMap<String, ([u8; 32], Role)>>,
}

impl Authenticator {
    pub fn new(users: Vec<UserEntry>) -> Self {
        Self {
            users,
            verified: RefCell::new(HashMap::new()),
        }
    }

    /// Checks an `Authorization` header value; None means 401.
    pub fn check(&self, header: Option<&str>) -> Option<Principal> {
        let (user, password) = parse_basic(header?)?;
        let digest: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        if let Some((known, role)) = self.verified.borrow().get(&user) {
            if bool::from(known.ct_eq(&digest)) {
                return Some(Principal { user, role: *role });
            }
        }
        let entry = self.users.iter().find(|u| u.name == user)?;
        if !crate::config::generate::verify_password(&entry.password_hash, &password) {
            return None;
        }
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= MAX_CACHED_CREDENTIALS_COUNT {
            verified.clear();
        }
        verified.insert(user.clone(), (digest, entry.role));
        Some(Principal {
            user,
            role: entry.role,
        })
    }
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[test]
    fn right_password_passes_wrong_one_fails_even_after_caching() {
        let hash = crate::config::generate::hash_password("s3cret");
        let auth = Authenticator::new(vec![UserEntry {
            name: "admin".into(),
            password_hash: hash,
            role: Role::Administrator,
        }]);
        assert!(auth.check(None).is_none());
        assert!(auth.check(Some("Bearer x")).is_none());
        assert!(auth.check(Some(&header("admin", "wrong"))).is_none());
        assert_eq!(
            auth.check(Some(&header("admin", "s3cret"))).unwrap().role,
            Role::Administrator
        );
        // cached path
        assert!(auth.check(Some(&header("admin", "s3cret"))).is_some());
        assert!(auth.check(Some(&header("admin", "s3cret2"))).is_none());
        assert!(auth.check(Some(&header("nobody", "s3cret"))).is_none());
    }
}
