//! Who a GUI/API request comes from: HTTP Basic credentials (scripts) or a browser
//! session's cookie (the GUI), checked against the configured users.
//!
//! argon2 verification costs tens of milliseconds by design, far too slow to run on the
//! priority executor: it runs on the blocking pool, at most
//! `MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT` at once (a bounded number of requests wait for
//! their turn, more get 429), and not at all for a user or address the throttle holds
//! back. The first successful check of a credential stores
//! SHA-256(user ":" password) with the user's role; later calls compare that digest in
//! constant time. Failed attempts are never cached.
//!
//! The users are re-read when the config file changes (`packhunt user ...` or the users
//! API edited it): at most every `USERS_RELOAD_INTERVAL`, a request first has the file's
//! identity, size and mtime looked at on the blocking pool; when they changed, `[[users]]`
//! is read and checked there too. Cached credentials and browser sessions of users who
//! were removed or got a new password or role end at once. A file that does not load
//! keeps the users as they were (logged and counted).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use http::header::{self, HeaderMap};
use http::Method;
use hyper::body::Incoming;

use crate::api::request_checks::{self, OwnOrigin, Refusal};
use crate::api::routes::ApiError;
use crate::api::session::{SessionView, Sessions};
use crate::api::throttle::LoginThrottle;
use crate::api::ApiCtx;
use crate::config::users::UserError;
use crate::config::{Role, SessionTimeouts, UserEntry};
use crate::limits::{
    MAX_CACHED_CREDENTIALS_COUNT, MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT,
    MAX_PASSWORD_CHECKS_WAITING_COUNT, MAX_SESSIONS_COUNT, PASSWORD_CHECKS_BUSY_RETRY_AFTER,
    USERS_RELOAD_INTERVAL,
};
use crate::metrics::metrics;
use crate::runtime::offload::offload;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

/// The remote address of a GUI/API connection, put in each request's extensions by
/// `api::serve` (failed logins are counted per address).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub IpAddr);

/// Why a user and password were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefusal {
    #[error("wrong user or password")]
    Wrong,
    /// Too many recent failures for this user or address: no check was made.
    #[error("too many failed logins; retry in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    /// `MAX_PASSWORD_CHECKS_WAITING_COUNT` requests wait for a check: no check was made.
    #[error("too many logins are being checked; retry in {} s", retry_after.as_secs().max(1))]
    Busy { retry_after: Duration },
}

pub struct Authenticator {
    /// Invariant: as the config file last held them when it loaded (names unique).
    users: RefCell<Vec<UserEntry>>,
    /// Where the users are re-read from; none: they never change (unit tests).
    source: Option<UsersSource>,
    verified: RefCell<HashMap<String, ([u8; 32], Role)>>,
    /// Browser sessions (the master's GUI).
    pub sessions: Sessions,
    throttle: LoginThrottle,
    /// Permits for argon2 runs: `MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT`.
    password_checks: glommio::sync::Semaphore,
    /// Invariant: at most `MAX_PASSWORD_CHECKS_WAITING_COUNT`.
    checks_waiting: Cell<usize>,
}

impl Authenticator {
    pub fn new(users: Vec<UserEntry>, sessions: SessionTimeouts) -> Self {
        Self {
            users: RefCell::new(users),
            source: None,
            verified: RefCell::new(HashMap::new()),
            sessions: Sessions::new(sessions, MAX_SESSIONS_COUNT),
            throttle: LoginThrottle::default(),
            password_checks: glommio::sync::Semaphore::new(
                MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT as u64,
            ),
            checks_waiting: Cell::new(0),
        }
    }

    /// Re-reads the users from `path` when it changes (see the module's doc). Takes the
    /// file's stamp now: call it at start, with the users just loaded from that file.
    pub fn reloading_from(mut self, path: PathBuf) -> Self {
        let stamp = FileStamp::of(&path).ok();
        self.source = Some(UsersSource {
            path,
            stamp: Cell::new(stamp),
            next_check: Cell::new(Instant::now() + USERS_RELOAD_INTERVAL),
            checking: Cell::new(false),
            looks_started: Cell::new(0),
            look_applied: Cell::new(0),
        });
        self
    }

    /// Picks up user changes if the config file changed since it was last looked at, at
    /// most every `USERS_RELOAD_INTERVAL` and never two looks at once.
    pub async fn refresh_users(&self) {
        let Some(source) = &self.source else { return };
        let now = Instant::now();
        if source.checking.get() || now < source.next_check.get() {
            return;
        }
        source.next_check.set(now + USERS_RELOAD_INTERVAL);
        source.checking.set(true);
        let _checked = ClearOnDrop(&source.checking);
        self.look(source).await;
    }

    /// Looks at the config file now, whether or not a look is due or running: after this
    /// process changed the users, so the change holds from its answer on.
    pub async fn reload_users_now(&self) {
        if let Some(source) = &self.source {
            self.look(source).await;
        }
    }

    async fn look(&self, source: &UsersSource) {
        let seq = source.looks_started.get() + 1;
        source.looks_started.set(seq);
        let (path, known) = (source.path.clone(), source.stamp.get());
        let look = offload(move || Look::at(&path, known)).await;
        // A look that started before one already applied would put older users back.
        if seq <= source.look_applied.get() {
            return;
        }
        source.look_applied.set(seq);
        let m = metrics();
        match look {
            Look::Unchanged => {}
            Look::Missing(e) => {
                if source.stamp.take().is_some() {
                    m.users_reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "cannot look at {} for user changes ({e}); the users stay as they were",
                        source.path.display()
                    );
                }
            }
            Look::Changed(stamp, Err(e)) => {
                source.stamp.set(Some(stamp));
                m.users_reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("user changes not taken: {e}; the users stay as they were");
            }
            Look::Changed(stamp, Ok(users)) => {
                source.stamp.set(Some(stamp));
                m.users_reloads.fetch_add(1, Ordering::Relaxed);
                self.install(users);
            }
        }
    }

    /// Replaces the users; forgets what was verified for, and ends the sessions of, every
    /// user removed or given another password or role.
    fn install(&self, users: Vec<UserEntry>) {
        let old = self.users.replace(users);
        let new = self.users.borrow();
        let (mut changed, mut ended) = (Vec::new(), 0);
        for before in &old {
            let same = new.iter().any(|u| {
                u.name == before.name
                    && u.role == before.role
                    && u.password_hash == before.password_hash
            });
            if !same {
                self.verified.borrow_mut().remove(&before.name);
                ended += self.sessions.end_user(&before.name);
                changed.push(before.name.as_str());
            }
        }
        metrics()
            .users_sessions_ended
            .fetch_add(ended as u64, Ordering::Relaxed);
        let added = new.iter().filter(|u| !old.iter().any(|o| o.name == u.name));
        let added: Vec<&str> = added.map(|u| u.name.as_str()).collect();
        tracing::info!(
            "users reloaded: {} users; added {added:?}; removed or changed {changed:?}              ({ended} sessions ended)",
            new.len()
        );
    }

    /// The configured user `name`, if there is one.
    fn user(&self, name: &str) -> Option<UserEntry> {
        self.users.borrow().iter().find(|u| u.name == name).cloned()
    }

    /// Checks an `Authorization: Basic` header value; None (no or malformed header) is
    /// a plain 401.
    pub async fn check_basic(
        &self,
        header: &str,
        from: Option<IpAddr>,
    ) -> Option<Result<Principal, PasswordRefusal>> {
        let (user, password) = parse_basic(header)?;
        Some(self.verify(&user, &password, from).await)
    }

    /// Checks a user's password: from the cache of verified credentials when it is
    /// there, else with argon2 on the blocking pool, unless throttled or busy.
    pub async fn verify(
        &self,
        user: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<Principal, PasswordRefusal> {
        let digest: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        if let Some(principal) = self.cached(user, &digest) {
            return Ok(principal);
        }
        let entry = self.user(user);
        let known_user = entry.as_ref().map(|e| e.name.as_str());
        self.not_throttled(known_user, from)?;
        let _check = self.check_slot().await?;
        // While this waited, another request may have verified the same credentials, or
        // failures may have reached the throttle's limit.
        if let Some(principal) = self.cached(user, &digest) {
            return Ok(principal);
        }
        self.not_throttled(known_user, from)?;
        let hash = entry.as_ref().map(|e| e.password_hash.clone());
        let (checked, password) = (hash.clone(), password.to_string());
        // An unknown user costs the same argon2 run as a known one: how long a refusal
        // takes does not tell which users exist.
        let right = offload(move || match checked {
            Some(hash) => crate::config::generate::verify_password(&hash, &password),
            None => {
                crate::config::generate::verify_password(unknown_user_hash(), &password);
                false
            }
        })
        .await;
        // The users may have been reloaded meanwhile: only the password the user has now
        // lets them in.
        let entry = self
            .user(user)
            .filter(|now| Some(&now.password_hash) == hash.as_ref());
        let (Some(entry), true) = (entry, right) else {
            if self.throttle.failed(known_user, from, Instant::now()) {
                let window = crate::limits::LOGIN_FAILURE_WINDOW;
                let from = from.map_or("an unknown address".to_string(), |a| a.to_string());
                let user = known_user.unwrap_or("(not a user)");
                tracing::warn!(
                    "failed logins: user `{user}` or {from} reached its limit; \
                     further attempts get 429 for up to {window:?}"
                );
            }
            metrics().gui_login_failures.fetch_add(1, Ordering::Relaxed);
            return Err(PasswordRefusal::Wrong);
        };
        self.throttle.succeeded(&entry.name);
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= MAX_CACHED_CREDENTIALS_COUNT {
            verified.clear();
        }
        verified.insert(user.to_string(), (digest, entry.role));
        Ok(Principal {
            user: user.to_string(),
            role: entry.role,
        })
    }

    fn cached(&self, user: &str, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self.verified.borrow();
        let (known, role) = verified.get(user)?;
        bool::from(known.ct_eq(digest)).then(|| Principal {
            user: user.to_string(),
            role: *role,
        })
    }

    fn not_throttled(
        &self,
        known_user: Option<&str>,
        from: Option<IpAddr>,
    ) -> Result<(), PasswordRefusal> {
        match self.throttle.retry_after(known_user, from, Instant::now()) {
            None => Ok(()),
            Some(retry_after) => {
                metrics()
                    .gui_logins_throttled
                    .fetch_add(1, Ordering::Relaxed);
                Err(PasswordRefusal::Throttled { retry_after })
            }
        }
    }

    /// Waits for one of the `MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT` password checks; with
    /// `MAX_PASSWORD_CHECKS_WAITING_COUNT` already waiting, refuses at once.
    async fn check_slot(&self) -> Result<glommio::sync::Permit<'_>, PasswordRefusal> {
        let busy = || {
            metrics()
                .gui_logins_throttled
                .fetch_add(1, Ordering::Relaxed);
            PasswordRefusal::Busy {
                retry_after: PASSWORD_CHECKS_BUSY_RETRY_AFTER,
            }
        };
        let Some(_waiting) = Waiting::enter(&self.checks_waiting) else {
            return Err(busy());
        };
        self.password_checks
            .acquire_permit(1)
            .await
            .map_err(|_| busy())
    }
}

/// Where the users come from and what the file looked like when they were read.
struct UsersSource {
    path: PathBuf,
    /// The file's stamp when `users` were last read from it; none if it was missing at
    /// the last look.
    stamp: Cell<Option<FileStamp>>,
    next_check: Cell<Instant>,
    /// Whether a periodic look is running (forced looks do not wait for it).
    checking: Cell<bool>,
    /// Looks started and the latest whose outcome was applied. Invariant:
    /// `look_applied <= looks_started`.
    looks_started: Cell<u64>,
    look_applied: Cell<u64>,
}

/// What tells that a file changed without reading it: a rename gives a new inode, an
/// edit in place a new size or mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            device: m.dev(),
            inode: m.ino(),
            len: m.len(),
            modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// What a look at the config file found (on the blocking pool).
enum Look {
    Unchanged,
    Missing(std::io::Error),
    Changed(FileStamp, Result<Vec<UserEntry>, UserError>),
}

impl Look {
    fn at(path: &Path, known: Option<FileStamp>) -> Look {
        match FileStamp::of(path) {
            Err(e) => Look::Missing(e),
            Ok(stamp) if Some(stamp) == known => Look::Unchanged,
            Ok(stamp) => Look::Changed(stamp, crate::config::users::load_users(path)),
        }
    }
}

/// Clears a flag when dropped (also when the future holding it is).
struct ClearOnDrop<'a>(&'a Cell<bool>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Who sent `req`: its Basic credentials if it has an `Authorization` header (exactly
/// as before sessions existed), else its session cookie, with the checks a
/// cookie-authenticated change must pass (`api/request_checks.rs`).
pub async fn authenticate(
    ctx: &ApiCtx,
    req: &hyper::Request<Incoming>,
) -> Result<Principal, ApiError> {
    let headers = req.headers();
    let own = own_origin(ctx, req);
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        // A browser that once answered a Basic prompt replays the credentials on requests
        // other sites make it send; those carry the other site's Origin. Scripts send none.
        if !is_read(req.method()) {
            request_checks::check_origin(headers, &own, false).map_err(refused)?;
        }
        let value = value.to_str().map_err(|_| ApiError::Unauthorized)?;
        let from = req.extensions().get::<PeerAddress>().map(|p| p.0);
        let checked = ctx.auth.check_basic(value, from).await;
        if let Some(Err(refusal)) = &checked {
            crate::api::audit::basic_failed(ctx, value, from, refusal);
        }
        return match checked {
            Some(Ok(principal)) => Ok(principal),
            None | Some(Err(PasswordRefusal::Wrong)) => Err(ApiError::Unauthorized),
            Some(Err(other)) => Err(other.into()),
        };
    }
    let (_, session) = session_of(ctx, headers).ok_or(ApiError::Unauthorized)?;
    request_checks::check_cookie_request(req.method(), headers, has_body(req), &session, &own)
        .map_err(refused)?;
    Ok(session.principal())
}

/// The live session a request's cookie names, with that cookie's token.
pub fn session_of<'h>(ctx: &ApiCtx, headers: &'h HeaderMap) -> Option<(&'h str, SessionView)> {
    let now = Instant::now();
    request_checks::session_cookies(headers)
        .find_map(|token| Some((token, ctx.auth.sessions.find(token, now)?)))
}

/// The origin the GUI is reached at, as this request and the config name it.
pub fn own_origin<'a>(ctx: &'a ApiCtx, req: &'a hyper::Request<Incoming>) -> OwnOrigin<'a> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    OwnOrigin {
        authority,
        configured_host: &ctx.config.frontend.master.host,
        configured_port: ctx.config.gui.address.port(),
    }
}

/// Whether the request has a body to read (one of length 0 is none).
pub fn has_body(req: &hyper::Request<Incoming>) -> bool {
    use hyper::body::Body;
    let empty_by_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    !req.body().is_end_stream() && !empty_by_length
}

pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// A refused browser request: counted, then 403 saying why.
pub fn refused(refusal: Refusal) -> ApiError {
    metrics().gui_request_refused(refusal.metric_reason());
    ApiError::Forbidden(refusal.to_string())
}

/// A request waiting for a password check; leaves the count on drop (also when the
/// request is dropped while waiting).
struct Waiting<'a>(&'a Cell<usize>);

impl<'a> Waiting<'a> {
    fn enter(waiting: &'a Cell<usize>) -> Option<Self> {
        let n = waiting.get();
        (n < MAX_PASSWORD_CHECKS_WAITING_COUNT).then(|| {
            waiting.set(n + 1);
            Waiting(waiting)
        })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// An argon2 hash of a random password nobody knows, made once (on the blocking pool).
fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        crate::config::generate::hash_password(&hex::encode(secret))
    })
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

    fn authenticator() -> Authenticator {
        let hash = crate::config::generate::hash_password("s3cret");
        let timeouts = SessionTimeouts {
            absolute: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        };
        let users = vec![UserEntry {
            name: "admin".into(),
            password_hash: hash,
            role: Role::Administrator,
        }];
        Authenticator::new(users, timeouts)
    }

    fn check(auth: &Authenticator, header: &str) -> Option<Result<Principal, PasswordRefusal>> {
        let ex = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("test executor");
        ex.run(auth.check_basic(header, None))
    }

    #[test]
    fn right_password_passes_wrong_one_fails_even_after_caching() {
        let auth = authenticator();
        assert!(check(&auth, "Bearer x").is_none());
        let wrong = Some(Err(PasswordRefusal::Wrong));
        assert_eq!(check(&auth, &header("admin", "wrong")), wrong);
        let right = check(&auth, &header("admin", "s3cret"));
        assert_eq!(right.unwrap().unwrap().role, Role::Administrator);
        // cached path
        assert!(matches!(
            check(&auth, &header("admin", "s3cret")),
            Some(Ok(_))
        ));
        assert_eq!(check(&auth, &header("admin", "s3cret2")), wrong);
        assert_eq!(check(&auth, &header("nobody", "s3cret")), wrong);
    }
}
