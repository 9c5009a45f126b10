//! Browser sessions on the master: who logged in through the GUI's form, and until when.
//!
//! A session is found by its cookie, a token of `TOKEN_BYTES` random bytes that only the
//! browser holds. The map is keyed by SHA-256 of the token, so how long a lookup takes
//! says nothing about the tokens held, and a dump of this process's memory holds no token
//! a browser could present. Sessions live in memory on the API executor (single-threaded:
//! a `RefCell` suffices) and die with the process: a restarted master asks everyone to
//! log in again. Knows nothing of HTTP; `api/login.rs` and `api/auth.rs` speak it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::api::auth::Principal;
use crate::config::{Role, SessionTimeouts};
use crate::metrics::metrics;

/// Random bytes in a session token and in a CSRF token: 256 bits, beyond guessing
/// (OWASP asks for at least 64 bits of entropy).
const TOKEN_BYTES: usize = 32;

/// A session's cookie value as the browser holds it: `TOKEN_BYTES` random bytes,
/// base64url without padding. Shown to nobody but the browser that logged in.
pub struct SessionToken(String);

impl SessionToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a request learns about its live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub user: String,
    pub role: Role,
    /// What state-changing requests must echo in `X-CSRF-Token`.
    pub csrf_token: String,
    /// Wall-clock end of the session (ms since the epoch), however busy it is.
    pub expires_ms: u64,
    /// Time left until that end: the cookie's `Max-Age`.
    pub left: Duration,
}

impl SessionView {
    pub fn principal(&self) -> Principal {
        Principal {
            user: self.user.clone(),
            role: self.role,
        }
    }

    /// The session as the API shows it (`GET`/`POST /api/v1/session`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "user": self.user,
            "role": self.role,
            "csrf_token": self.csrf_token,
            "expires_ms": self.expires_ms,
        })
    }
}

struct Session {
    user: String,
    role: Role,
    csrf_token: String,
    opened: Instant,
    /// Invariant: `opened + timeouts.absolute`.
    ends: Instant,
    expires_ms: u64,
    last_used: Instant,
}

impl Session {
    fn is_live(&self, now: Instant, idle: Duration) -> bool {
        now < self.ends && now.saturating_duration_since(self.last_used) < idle
    }

    fn view(&self, now: Instant) -> SessionView {
        SessionView {
            user: self.user.clone(),
            role: self.role,
            csrf_token: self.csrf_token.clone(),
            expires_ms: self.expires_ms,
            left: self.ends.saturating_duration_since(now),
        }
    }
}

/// The sessions the master holds. Invariant: at most `max_count` entries.
pub struct Sessions {
    timeouts: SessionTimeouts,
    max_count: usize,
    by_digest: RefCell<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(timeouts: SessionTimeouts, max_count: usize) -> Self {
        assert!(max_count > 0, "a session store holds at least one session");
        Self {
            timeouts,
            max_count,
            by_digest: RefCell::new(HashMap::new()),
        }
    }

    /// Opens a session for `who`; when the store is full (after dropping expired
    /// sessions) the oldest session ends.
    pub fn open(&self, who: &Principal, now: Instant) -> (SessionToken, SessionView) {
        let mut sessions = self.by_digest.borrow_mut();
        let idle = self.timeouts.idle;
        sessions.retain(|_, s| s.is_live(now, idle));
        while sessions.len() >= self.max_count {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(digest, _)| *digest)
                .expect("a full store is not empty");
            sessions.remove(&oldest);
            metrics()
                .gui_sessions_evicted
                .fetch_add(1, Ordering::Relaxed);
        }
        let token = random_token();
        let session = Session {
            user: who.user.clone(),
            role: who.role,
            csrf_token: random_token(),
            opened: now,
            ends: now + self.timeouts.absolute,
            expires_ms: crate::clock::now_ms()
                .saturating_add(self.timeouts.absolute.as_millis() as u64),
            last_used: now,
        };
        let view = session.view(now);
        let digest = digest_of(&token).expect("a fresh token decodes");
        sessions.insert(digest, session);
        debug_assert!(sessions.len() <= self.max_count);
        metrics()
            .gui_sessions_open
            .store(sessions.len() as i64, Ordering::Relaxed);
        (SessionToken(token), view)
    }

    /// The live session a cookie value names, marked as used now; None for an unknown,
    /// malformed or expired token (an expired one is forgotten).
    pub fn find(&self, token: &str, now: Instant) -> Option<SessionView> {
        let digest = digest_of(token)?;
        let mut sessions = self.by_digest.borrow_mut();
        let session = sessions.get_mut(&digest)?;
        if !session.is_live(now, self.timeouts.idle) {
            sessions.remove(&digest);
            metrics()
                .gui_sessions_open
                .store(sessions.len() as i64, Ordering::Relaxed);
            return None;
        }
        session.last_used = now;
        Some(session.view(now))
    }

    /// Ends the session a cookie value names; whether there was one.
    pub fn close(&self, token: &str) -> bool {
        let Some(digest) = digest_of(token) else {
            return false;
        };
        let mut sessions = self.by_digest.borrow_mut();
        let closed = sessions.remove(&digest).is_some();
        metrics()
            .gui_sessions_open
            .store(sessions.len() as i64, Ordering::Relaxed);
        closed
    }

    /// Ends every session of `user` (removed, or given a new password or role); how many
    /// ended.
    pub fn end_user(&self, user: &str) -> usize {
        let mut sessions = self.by_digest.borrow_mut();
        let before = sessions.len();
        sessions.retain(|_, s| s.user != user);
        metrics()
            .gui_sessions_open
            .store(sessions.len() as i64, Ordering::Relaxed);
        before - sessions.len()
    }

    /// Sessions held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.by_digest.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token's bytes; None unless it is the base64url of `TOKEN_BYTES` bytes.
fn digest_of(token: &str) -> Option<[u8; 32]> {
    // Anything longer than a token's 43 characters is refused before decoding.
    if token.len() > TOKEN_BYTES * 2 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    (bytes.len() == TOKEN_BYTES).then(|| Sha256::digest(&bytes).into())
}

#[cfg(test)]
mod tests {
    //! Goal: sessions end at their absolute and idle expiry, the store stays bounded by
    //! evicting the oldest, and only the exact token finds a session.
    //! Method: a store with short timeouts, driven by an explicit clock.
    use super::*;

    fn store(absolute_s: u64, idle_s: u64, max: usize) -> Sessions {
        Sessions::new(
            SessionTimeouts {
                absolute: Duration::from_secs(absolute_s),
                idle: Duration::from_secs(idle_s),
            },
            max,
        )
    }

    fn who(user: &str) -> Principal {
        Principal {
            user: user.into(),
            role: Role::Reader,
        }
    }

    #[test]
    fn a_session_is_found_by_its_token_only() {
        let sessions = store(100, 10, 4);
        let now = Instant::now();
        let (token, view) = sessions.open(&who("ana"), now);
        assert_eq!(token.as_str().len(), 43);
        assert_eq!(view.left, Duration::from_secs(100));
        assert_ne!(view.csrf_token, token.as_str());
        let found = sessions.find(token.as_str(), now).expect("live session");
        assert_eq!((found.user.as_str(), found.role), ("ana", Role::Reader));
        assert_eq!(found.csrf_token, view.csrf_token);
        let mut other = token.as_str().to_string();
        let last = if other.ends_with('A') { "B" } else { "A" };
        other.replace_range(42.., last);
        for bad in [other.as_str(), "", "not a token", &"A".repeat(10_000)] {
            assert!(sessions.find(bad, now).is_none(), "{bad:.50}");
        }
        assert!(sessions.close(token.as_str()));
        assert!(sessions.find(token.as_str(), now).is_none());
        assert!(!sessions.close(token.as_str()));
    }

    #[test]
    fn idle_expiry_ends_an_unused_session_and_use_keeps_it() {
        let sessions = store(100, 10, 4);
        let t0 = Instant::now();
        let (token, _) = sessions.open(&who("ana"), t0);
        // Used every 9 s, it outlives several idle periods.
        for step in 1..=5 {
            let at = t0 + Duration::from_secs(9 * step);
            assert!(sessions.find(token.as_str(), at).is_some(), "step {step}");
        }
        let last_use = t0 + Duration::from_secs(45);
        assert!(sessions
            .find(token.as_str(), last_use + Duration::from_secs(10))
            .is_none());
        assert!(sessions.is_empty(), "an expired session is forgotten");
    }

    #[test]
    fn absolute_expiry_ends_even_a_busy_session() {
        let sessions = store(30, 10, 4);
        let t0 = Instant::now();
        let (token, _) = sessions.open(&who("ana"), t0);
        for s in (5..30).step_by(5) {
            let view = sessions
                .find(token.as_str(), t0 + Duration::from_secs(s))
                .expect("busy and young");
            assert_eq!(view.left, Duration::from_secs(30 - s));
        }
        assert!(sessions
            .find(token.as_str(), t0 + Duration::from_secs(30))
            .is_none());
    }

    #[test]
    fn a_full_store_evicts_the_oldest_session() {
        let sessions = store(100, 100, 3);
        let t0 = Instant::now();
        let tokens: Vec<SessionToken> = (0..3)
            .map(|i| {
                let at = t0 + Duration::from_secs(i);
                sessions.open(&who(&format!("user{i}")), at).0
            })
            .collect();
        // The oldest one was used last: eviction goes by age, not by use.
        let at = t0 + Duration::from_secs(5);
        assert!(sessions.find(tokens[0].as_str(), at).is_some());
        let (newest, _) = sessions.open(&who("late"), at);
        assert_eq!(sessions.len(), 3);
        assert!(sessions.find(tokens[0].as_str(), at).is_none());
        assert!(sessions.find(tokens[1].as_str(), at).is_some());
        assert!(sessions.find(tokens[2].as_str(), at).is_some());
        assert!(sessions.find(newest.as_str(), at).is_some());
    }

    #[test]
    fn ending_a_user_ends_only_their_sessions() {
        let sessions = store(100, 100, 8);
        let now = Instant::now();
        let (a1, _) = sessions.open(&who("ana"), now);
        let (a2, _) = sessions.open(&who("ana"), now);
        let (b, _) = sessions.open(&who("bo"), now);
        assert_eq!(sessions.end_user("ana"), 2);
        assert!(sessions.find(a1.as_str(), now).is_none());
        assert!(sessions.find(a2.as_str(), now).is_none());
        assert!(sessions.find(b.as_str(), now).is_some());
        assert_eq!(sessions.end_user("nobody"), 0);
    }

    #[test]
    fn expired_sessions_make_room_before_a_live_one_is_evicted() {
        let sessions = store(100, 10, 2);
        let t0 = Instant::now();
        let (stale, _) = sessions.open(&who("a"), t0);
        let (kept, _) = sessions.open(&who("b"), t0 + Duration::from_secs(8));
        // At 12 s the first is idle past its 10 s; the second is not.
        let at = t0 + Duration::from_secs(12);
        sessions.open(&who("c"), at);
        assert!(sessions.find(stale.as_str(), at).is_none());
        assert!(sessions.find(kept.as_str(), at).is_some());
    }
}
