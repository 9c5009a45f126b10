//! What a browser request must show besides its session cookie, and what every GUI/API
//! answer carries so a browser keeps it to itself.
//!
//! A cookie goes with every request the browser makes to this origin, including those a
//! hostile page triggers (cross-site request forgery). So a cookie-authenticated request
//! that is not GET/HEAD must also carry: the session's CSRF token in `X-CSRF-Token`
//! (another origin cannot read it), an `Origin` equal to the GUI's own (browsers send it
//! on every such request and a page cannot forge it), and, if it has a body, a JSON
//! `Content-Type` (which a cross-site form cannot send without a CORS preflight, and this
//! server grants none). Basic-authenticated requests (scripts) need none of this.

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use subtle::ConstantTimeEq;

use crate::api::session::{SessionToken, SessionView};
use crate::api::ApiResponse;
use crate::metrics::GuiRefusal;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "packhunt_session";

/// The header the GUI's fetches carry; a 401 without it gets `WWW-Authenticate: Basic`.
pub const FROM_APP_HEADER: &str = "x-requested-with";
pub const FROM_APP_VALUE: &str = "packhunt";

pub const CSRF_HEADER: &str = "x-csrf-token";

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// Why a browser request was refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing or wrong X-CSRF-Token: send the csrf_token of GET /api/v1/session")]
    CsrfToken,
    #[error("the request's Origin is not this GUI's")]
    Origin,
    #[error("a request body must be Content-Type: application/json")]
    ContentType,
}

impl Refusal {
    pub fn metric_reason(self) -> GuiRefusal {
        match self {
            Self::CsrfToken => GuiRefusal::CsrfToken,
            Self::Origin => GuiRefusal::Origin,
            Self::ContentType => GuiRefusal::ContentType,
        }
    }
}

/// The GUI's own origin(s): the one the request was addressed to (its `Host`, or
/// `:authority` over HTTP/2) and the configured `https://public_host:gui_port`.
pub struct OwnOrigin<'a> {
    pub authority: Option<&'a str>,
    pub configured_host: &'a str,
    pub configured_port: u16,
}

impl OwnOrigin<'_> {
    /// Whether `origin` (an `Origin` header value) is this GUI.
    pub fn matches(&self, origin: &str) -> bool {
        let Some(origin) = parse_https_origin(origin) else {
            return false;
        };
        let by_request = self
            .authority
            .and_then(|a| split_authority(a, 443))
            .is_some_and(|own| own == origin);
        let configured = (
            self.configured_host.to_ascii_lowercase(),
            self.configured_port,
        );
        by_request || configured == origin
    }
}

/// Whether the request came from the GUI's code rather than a person typing a URL or a
/// script: it says so (`X-Requested-With: packhunt`, what the app's fetches send), it is
/// a browser fetch or `EventSource` (`Sec-Fetch-Dest: empty`; an `EventSource` cannot
/// set headers), or it carries a session cookie (an expired one, say). A 401 to such a
/// request must not make the browser show its Basic prompt over the app.
pub fn from_app(headers: &HeaderMap) -> bool {
    let says_so = headers
        .get(FROM_APP_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(FROM_APP_VALUE.as_bytes()));
    let fetch = headers
        .get("sec-fetch-dest")
        .is_some_and(|v| v.as_bytes() == b"empty");
    says_so || fetch || session_cookies(headers).next().is_some()
}

/// Checks a cookie-authenticated request against its session (see the module doc).
pub fn check_cookie_request(
    method: &Method,
    headers: &HeaderMap,
    has_body: bool,
    session: &SessionView,
    own: &OwnOrigin<'_>,
) -> Result<(), Refusal> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let token = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
    let token_ok = token.is_some_and(|t| bool::from(t.ct_eq(session.csrf_token.as_bytes())));
    if !token_ok {
        return Err(Refusal::CsrfToken);
    }
    check_origin(headers, own, true)?;
    check_json_body(headers, has_body)
}

/// What every state-changing request must show, however it is authenticated (a browser
/// that once answered a Basic prompt replays the credentials on requests other sites make
/// it send): an `Origin`, if it carries one, equal to this GUI's (scripts send none), and
/// a body, if it has one, of `Content-Type: application/json` (a cross-site form cannot
/// send that without a preflight). Checked before the body is read.
pub fn check_state_change(
    method: &Method,
    headers: &HeaderMap,
    has_body: bool,
    own: &OwnOrigin<'_>,
) -> Result<(), Refusal> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    check_origin(headers, own, false)?;
    check_json_body(headers, has_body)
}

/// An `Origin` header, if any (or if `required`), must be this GUI's.
pub fn check_origin(
    headers: &HeaderMap,
    own: &OwnOrigin<'_>,
    required: bool,
) -> Result<(), Refusal> {
    match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        None if !required => Ok(()),
        Some(Ok(origin)) if own.matches(origin) => Ok(()),
        _ => Err(Refusal::Origin),
    }
}

/// A body, if there is one, must be JSON.
pub fn check_json_body(headers: &HeaderMap, has_body: bool) -> Result<(), Refusal> {
    if !has_body || is_json(headers) {
        Ok(())
    } else {
        Err(Refusal::ContentType)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(Ok(value)) = headers.get(header::CONTENT_TYPE).map(HeaderValue::to_str) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// Every `packhunt_session` cookie value the request carries (a browser may send one
/// per `Cookie` header over HTTP/2, and several cookies in each).
pub fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then_some(value.trim())
        })
}

/// `Set-Cookie` for a new session, living as long as it does.
pub fn session_cookie(token: &SessionToken, session: &SessionView) -> HeaderValue {
    let max_age_s = session.left.as_secs();
    let value = format!(
        "{COOKIE_NAME}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}",
        token.as_str()
    );
    HeaderValue::from_str(&value).expect("a base64url token is a valid header value")
}

/// `Set-Cookie` that makes the browser forget the session cookie.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "packhunt_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
    )
}

/// Adds the headers every GUI/API answer carries (a handler's own, e.g. a download's
/// `Cache-Control`, are kept).
pub fn add_security_headers(response: &mut ApiResponse) {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if json {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
}

/// `https://host[:port]` -> (lowercase host, port); None for anything else (`null`, a
/// path, another scheme).
fn parse_https_origin(origin: &str) -> Option<(String, u16)> {
    let rest = origin.strip_prefix("https://")?;
    split_authority(rest, 443)
}

/// `host[:port]` or `[v6]:port` -> (lowercase host without brackets, port).
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        match rest {
            "" => (host, default_port),
            _ => (host, rest.strip_prefix(':')?.parse().ok()?),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, default_port),
        }
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    //! Goal: only the GUI's own origin passes, however a browser spells it; cookies and
    //! content types are read as browsers send them.
    use super::*;

    fn own(authority: Option<&str>) -> OwnOrigin<'_> {
        OwnOrigin {
            authority,
            configured_host: "Hunt.example.org",
            configured_port: 8889,
        }
    }

    #[test]
    fn origins() {
        let by_host = own(Some("127.0.0.1:8889"));
        assert!(by_host.matches("https://127.0.0.1:8889"));
        assert!(by_host.matches("https://hunt.example.org:8889"));
        for foreign in [
            "https://127.0.0.1:8890",
            "http://127.0.0.1:8889",
            "https://evil.example:8889",
            "https://127.0.0.1:8889.evil.example",
            "https://127.0.0.1:8889/",
            "null",
            "",
        ] {
            assert!(!by_host.matches(foreign), "{foreign}");
        }
        assert!(own(Some("gui.example")).matches("https://GUI.example"));
        assert!(own(Some("gui.example:443")).matches("https://gui.example"));
        assert!(own(Some("[::1]:8889")).matches("https://[::1]:8889"));
        assert!(!own(None).matches("https://gui.example"));
    }

    #[test]
    fn the_app_is_told_apart_from_a_person_or_a_script() {
        let mut headers = HeaderMap::new();
        assert!(!from_app(&headers));
        headers.insert("x-requested-with", HeaderValue::from_static("packhunt"));
        assert!(from_app(&headers));
        let mut headers = HeaderMap::new();
        headers.insert("sec-fetch-dest", HeaderValue::from_static("document"));
        assert!(!from_app(&headers));
        headers.insert("sec-fetch-dest", HeaderValue::from_static("empty"));
        assert!(from_app(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("packhunt_session=old"),
        );
        assert!(from_app(&headers));
    }

    #[test]
    fn security_headers_keep_a_handlers_own() {
        let mut json = crate::api::routes::json_response(http::StatusCode::OK, &"x".into());
        add_security_headers(&mut json);
        assert_eq!(json.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(json.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let mut download = hyper::Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "private, max-age=60")
            .body(crate::api::ApiBody::whole(bytes::Bytes::new()))
            .unwrap();
        add_security_headers(&mut download);
        assert_eq!(
            download.headers()[header::CACHE_CONTROL],
            "private, max-age=60"
        );
        assert!(download
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn every_state_change_is_json_from_no_other_origin() {
        let own = own(Some("127.0.0.1:8889"));
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_state_change(&Method::GET, &headers, true, &own),
            Ok(())
        );
        assert_eq!(
            check_state_change(&Method::POST, &headers, false, &own),
            Ok(())
        );
        assert_eq!(
            check_state_change(&Method::POST, &headers, true, &own),
            Err(Refusal::ContentType)
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(
            check_state_change(&Method::PUT, &headers, true, &own),
            Ok(())
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(
            check_state_change(&Method::DELETE, &headers, false, &own),
            Err(Refusal::Origin)
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:8889"),
        );
        assert_eq!(
            check_state_change(&Method::POST, &headers, true, &own),
            Ok(())
        );
    }

    #[test]
    fn cookies_and_content_types() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; packhunt_session=abc"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("packhunt_session=def"),
        );
        let found: Vec<&str> = session_cookies(&headers).collect();
        assert_eq!(found, ["abc", "def"]);
        assert_eq!(check_json_body(&headers, false), Ok(()));
        assert_eq!(check_json_body(&headers, true), Err(Refusal::ContentType));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("application/jsonx", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(check_json_body(&headers, true).is_ok(), ok, "{value}");
        }
    }
}
