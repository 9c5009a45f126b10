//! Goal: the GUI's browser sessions work as docs/gui/sessions.md says: a login sets an
//! HttpOnly Secure SameSite=Strict cookie that reads the API until logout or expiry; a
//! wrong password is a 401 that invites a Basic prompt only outside the app; repeated
//! failures are throttled with 429; a cookie-authenticated change needs the CSRF token,
//! the GUI's Origin and a JSON body; a reader's session may not change anything; Basic
//! auth works as before without any of these; every answer carries the security
//! headers; the page loads without credentials.
//! Method: a real master on loopback, driven over HTTPS/1.1 with the headers a browser
//! would send (tests/common/gui_sessions.rs); the client event table's PUT is the change.

mod common;

use std::time::Duration;

use anyhow::{ensure, Result};
use common::gui_sessions::{origin, post_login, send, Answer, GuiSession};
use common::{Deployment, ADMIN_PASSWORD};
use packhunt::config::Role;
use serde_json::{json, Value};

const TABLE: &str = "/api/v1/events/client_table";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' \
    data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// What a forged request changes from the app's own headers, and what the 403 names.
type Refused<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

fn empty_table() -> Value {
    json!({"all": [], "by_label": {}})
}

fn error_of(answer: &Answer) -> String {
    answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn assert_security_headers(answer: &Answer, what: &str) {
    assert_eq!(
        answer.header("content-security-policy"),
        Some(CSP),
        "{what}"
    );
    assert_eq!(
        answer.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        answer.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
}

#[test]
fn a_login_opens_a_session_that_reads_the_api_until_logout() -> Result<()> {
    let deployment = Deployment::start()?;

    // The page loads without credentials (the login form is part of it).
    let page = send(&deployment, "GET", "/", &[], None)?;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert_security_headers(&page, "GET /");
    // Assets need no credentials either: an unknown one is 404, not 401.
    let asset = send(&deployment, "GET", "/assets/no-such.js", &[], None)?;
    assert_eq!(asset.status, 404);

    let session = GuiSession::login(&deployment, "admin", ADMIN_PASSWORD)?;
    let login = &session.login;
    let set_cookie = login.header("set-cookie").unwrap_or_default();
    let token = session
        .cookie
        .strip_prefix("packhunt_session=")
        .unwrap_or_default();
    assert_eq!(token.len(), 43, "{set_cookie}");
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(
            set_cookie.split("; ").any(|f| f == flag),
            "{flag} in {set_cookie}"
        );
    }
    let body = login.json();
    assert_eq!(body["user"], "admin");
    assert_eq!(body["role"], "administrator");
    assert_eq!(session.csrf_token.len(), 43);
    assert_ne!(session.csrf_token, token);
    let now_ms = packhunt::clock::now_ms();
    let expires_ms = body["expires_ms"].as_u64().unwrap_or_default();
    assert!(expires_ms > now_ms + 11 * 3600 * 1000, "{body}");
    assert!(expires_ms <= now_ms + 12 * 3600 * 1000, "{body}");
    assert_security_headers(login, "login");
    assert_eq!(login.header("cache-control"), Some("no-store"));

    // GET /api/v1/session answers the same for the cookie, 401 without it.
    let current = session.request(&deployment, "GET", "/api/v1/session", None)?;
    assert_eq!((current.status, current.json()), (200, body.clone()));
    let anonymous = send(&deployment, "GET", "/api/v1/session", &[], None)?;
    assert_eq!(anonymous.status, 401);

    // The cookie reads the API, /metrics included; nothing does without it.
    for path in ["/api/v1/clients", "/api/v1/frontends", TABLE, "/metrics"] {
        let answer = session.request(&deployment, "GET", path, None)?;
        assert_eq!(answer.status, 200, "{path}: {}", error_of(&answer));
        assert_security_headers(&answer, path);
        let anonymous = send(&deployment, "GET", path, &[], None)?;
        assert_eq!(anonymous.status, 401, "{path} without credentials");
    }
    let clients = session.request(&deployment, "GET", "/api/v1/clients", None)?;
    assert_eq!(clients.header("cache-control"), Some("no-store"));
    assert_eq!(deployment.metric("packhunt_gui_logins_total")?, 1);
    assert_eq!(deployment.metric("packhunt_gui_sessions_open")?, 1);

    // Logout: 204, the cookie cleared, the session forgotten.
    let logout = session.request(&deployment, "DELETE", "/api/v1/session", None)?;
    assert_eq!(logout.status, 204);
    let cleared = logout.header("set-cookie").unwrap_or_default();
    assert!(cleared.starts_with("packhunt_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    for path in ["/api/v1/session", "/api/v1/clients"] {
        let answer = session.request(&deployment, "GET", path, None)?;
        assert_eq!(answer.status, 401, "{path} after logout");
    }
    // Logging out again (no live session) is the same 204.
    let again = send(&deployment, "DELETE", "/api/v1/session", &[], None)?;
    assert_eq!(again.status, 204);
    Ok(())
}

#[test]
fn an_expired_session_answers_401_without_a_basic_prompt() -> Result<()> {
    let deployment = Deployment::start_with(|text| {
        common::set_keys(text, &[("session_timeout_s", "2")]);
    })?;
    let session = GuiSession::login(&deployment, "admin", ADMIN_PASSWORD)?;
    let set_cookie = session.login.header("set-cookie").unwrap_or_default();
    assert!(set_cookie.contains("Max-Age=2"), "{set_cookie}");
    common::wait_until(
        "the session expired",
        Duration::from_secs(30),
        || {
            Ok(session
                .request(&deployment, "GET", "/api/v1/session", None)?
                .status)
        },
        |status| *status == 401,
    )?;
    let answer = session.request(&deployment, "GET", "/api/v1/clients", None)?;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), None);
    // An EventSource cannot say X-Requested-With; its stale cookie says it is the app.
    let no_header = [("x-requested-with", "")];
    let path = "/api/v1/clients";
    let answer = session.request_with(&deployment, "GET", path, None, &no_header)?;
    assert_eq!(
        (answer.status, answer.header("www-authenticate")),
        (401, None)
    );
    // A new login works as ever.
    GuiSession::login(&deployment, "admin", ADMIN_PASSWORD)?;
    Ok(())
}

#[test]
fn many_scripts_starting_at_once_with_basic_credentials_all_get_in() -> Result<()> {
    // Password checks run a few at a time; the rest wait their turn and then pass from
    // the cache the first check filled.
    let deployment = Deployment::start()?;
    let api = deployment.api();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..24)
            .map(|_| scope.spawn(|| api.request("GET", "/api/v1/frontends", None)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("request thread").map(|(status, _)| status))
            .collect::<Result<_>>()
    })?;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(deployment.metric("packhunt_gui_logins_throttled_total")?, 0);
    Ok(())
}

#[test]
fn wrong_passwords_are_401_and_repeated_ones_are_throttled() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user("victim", "victim-pw", Role::Reader)?;
    deployment.start_frontend()?;

    // From the app: 401 with the contract's message and no Basic prompt.
    let wrong = post_login(&deployment, "admin", "not-the-password")?;
    assert_eq!(wrong.status, 401);
    assert_eq!(error_of(&wrong), "wrong user or password");
    assert_eq!(wrong.header("www-authenticate"), None);
    assert!(wrong.header("set-cookie").is_none());
    let unknown = post_login(&deployment, "nobody", "whatever")?;
    assert_eq!(
        (unknown.status, error_of(&unknown)),
        (401, error_of(&wrong))
    );
    // Not from the app: the Basic prompt is offered.
    let body = serde_json::to_vec(&json!({"user": "admin", "password": "nope"}))?;
    let headers = [("content-type", "application/json")];
    let plain = send(&deployment, "POST", "/api/v1/session", &headers, Some(body))?;
    assert_eq!(plain.status, 401);
    assert!(plain
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    // A browser fetch (Sec-Fetch-Dest: empty) is the app too.
    let body = serde_json::to_vec(&json!({"user": "admin", "password": "nope"}))?;
    let headers = [
        ("content-type", "application/json"),
        ("sec-fetch-dest", "empty"),
    ];
    let fetch = send(&deployment, "POST", "/api/v1/session", &headers, Some(body))?;
    assert_eq!(
        (fetch.status, fetch.header("www-authenticate")),
        (401, None)
    );
    // A login that is not JSON, or is malformed, is refused before any password check.
    let form = b"user=admin&password=x".to_vec();
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let as_form = send(&deployment, "POST", "/api/v1/session", &headers, Some(form))?;
    assert_eq!(as_form.status, 403, "{}", error_of(&as_form));
    let headers = [("content-type", "application/json")];
    let malformed = send(
        &deployment,
        "POST",
        "/api/v1/session",
        &headers,
        Some(b"{".to_vec()),
    )?;
    assert_eq!(malformed.status, 400);
    assert_eq!(deployment.metric("packhunt_gui_login_failures_total")?, 4);

    // `victim` fails until throttled; then even the right password waits.
    let limit = packhunt::limits::MAX_LOGIN_FAILURES_PER_USER_COUNT;
    for i in 0..limit {
        let answer = post_login(&deployment, "victim", "guess")?;
        ensure!(answer.status == 401, "failure {i}: {}", answer.status);
    }
    let throttled = post_login(&deployment, "victim", "guess")?;
    assert_eq!(throttled.status, 429, "{}", error_of(&throttled));
    let retry_after: u64 = throttled
        .header("retry-after")
        .unwrap_or_default()
        .parse()?;
    assert!(retry_after > 0 && retry_after <= 300, "{retry_after}");
    let right = post_login(&deployment, "victim", "victim-pw")?;
    assert_eq!(right.status, 429, "{}", error_of(&right));
    let basic = deployment.api().with_auth("victim", "victim-pw");
    assert_eq!(basic.request("GET", "/api/v1/clients", None)?.0, 429);
    assert!(deployment.metric("packhunt_gui_logins_throttled_total")? >= 3);
    // Other users are not held back by victim's failures.
    GuiSession::login(&deployment, "admin", ADMIN_PASSWORD)?;
    Ok(())
}

#[test]
fn a_cookie_change_needs_the_csrf_token_the_origin_and_json() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user("analyst", "analyst-pw", Role::Reader)?;
    deployment.start_frontend()?;
    let session = GuiSession::login(&deployment, "admin", ADMIN_PASSWORD)?;
    let table = empty_table();
    let put = |headers: &[(&str, &str)]| {
        session.request_with(&deployment, "PUT", TABLE, Some(&table), headers)
    };
    let foreign = "https://evil.example";
    let other_port = format!("https://{}:{}", deployment.host, deployment.gui_port + 1);
    let cases: [Refused; 7] = [
        ("no token", vec![("x-csrf-token", "")], "X-CSRF-Token"),
        ("wrong token", vec![("x-csrf-token", "x")], "X-CSRF-Token"),
        ("foreign origin", vec![("origin", foreign)], "Origin"),
        ("other port", vec![("origin", &other_port)], "Origin"),
        ("null origin", vec![("origin", "null")], "Origin"),
        ("no origin", vec![("origin", "")], "Origin"),
        (
            "text body",
            vec![("content-type", "text/plain")],
            "application/json",
        ),
    ];
    for (what, headers, reason) in cases {
        let answer = put(&headers)?;
        assert_eq!(answer.status, 403, "{what}: {}", error_of(&answer));
        assert!(
            error_of(&answer).contains(reason),
            "{what}: {}",
            error_of(&answer)
        );
        assert_security_headers(&answer, what);
    }
    assert_eq!(
        session.request(&deployment, "GET", TABLE, None)?.json()["version"],
        0
    );
    for (reason, count) in [("csrf_token", 2), ("origin", 4), ("content_type", 1)] {
        let series = format!("packhunt_gui_requests_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(deployment.metric(&series)?, count, "{series}");
    }

    // All three right: the change happens.
    let done = put(&[])?;
    assert_eq!((done.status, done.json()), (200, json!({"version": 1})));
    let read = session.request(&deployment, "GET", TABLE, None)?;
    assert_eq!(read.json()["version"], 1);

    // A reader's session reads but may not change anything, checks passed or not.
    let reader = GuiSession::login(&deployment, "analyst", "analyst-pw")?;
    assert_eq!(reader.login.json()["role"], "reader");
    assert_eq!(reader.request(&deployment, "GET", TABLE, None)?.status, 200);
    let refused = reader.request(&deployment, "PUT", TABLE, Some(&table))?;
    assert_eq!(refused.status, 403);
    assert!(
        error_of(&refused).contains("may only read"),
        "{}",
        error_of(&refused)
    );
    let forged = reader.request_with(
        &deployment,
        "PUT",
        TABLE,
        Some(&table),
        &[("x-csrf-token", "")],
    )?;
    assert_eq!(forged.status, 403);

    // Basic auth (scripts) changes things with none of the browser's headers ...
    let (status, body) = deployment.api().put(TABLE, &table)?;
    assert_eq!((status, body), (200, json!({"version": 2})));
    // ... but not when a browser replays it for another site.
    let api = deployment.api();
    let (user, password) = api.auth.clone().unwrap_or_default();
    let basic = format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    );
    let body = serde_json::to_vec(&table)?;
    let replayed = send(
        &deployment,
        "PUT",
        TABLE,
        &[("authorization", &basic), ("origin", foreign)],
        Some(body.clone()),
    )?;
    assert_eq!(replayed.status, 403, "{}", error_of(&replayed));
    let own = origin(&deployment);
    let same_site = send(
        &deployment,
        "PUT",
        TABLE,
        &[
            ("authorization", &basic),
            ("origin", &own),
            ("content-type", "application/json"),
        ],
        Some(body),
    )?;
    assert_eq!(same_site.status, 200, "{}", error_of(&same_site));
    Ok(())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn over_http2_the_authority_is_the_origin_and_cookie_crumbs_are_read() -> Result<()> {
    // Browsers speak HTTP/2 to the GUI: no Host header, and each cookie may arrive in a
    // header of its own.
    let deployment = Deployment::start()?;
    let own = origin(&deployment);
    let login_body = serde_json::to_vec(&json!({"user": "admin", "password": ADMIN_PASSWORD}))?;
    let login = common::gui_sessions::send_h2(
        &deployment,
        "POST",
        "/api/v1/session",
        &[("content-type", "application/json"), ("origin", &own)],
        Some(login_body),
    )?;
    assert_eq!(login.status, 200, "{}", error_of(&login));
    let set_cookie = login.header("set-cookie").unwrap_or_default();
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
    let csrf = login.json()["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let table = serde_json::to_vec(&empty_table())?;
    let put = |origin: &str| {
        common::gui_sessions::send_h2(
            &deployment,
            "PUT",
            TABLE,
            &[
                ("cookie", "theme=dark"),
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", origin),
                ("content-type", "application/json"),
            ],
            Some(table.clone()),
        )
    };
    let foreign = put("https://evil.example")?;
    assert_eq!(foreign.status, 403, "{}", error_of(&foreign));
    let done = put(&own)?;
    assert_eq!((done.status, done.json()), (200, json!({"version": 1})));
    assert_security_headers(&done, "PUT over HTTP/2");
    Ok(())
}
