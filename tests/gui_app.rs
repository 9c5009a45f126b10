//! The browser app in a real headless Chromium (tests/common/browser.rs) against a real
//! master and a real agent: log in (a wrong password stays on the form), find the agent,
//! label it, collect from it with a parameter through the form, watch the collection
//! finish and page through its results, download an upload, what a reader is offered, a
//! forged POST, an expired session. Every view visited is saved under
//! target/gui-screenshots/<test>-<view>.png.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::agent_outbox::OutboxAgent;
use common::browser::Browser;
use common::{Deployment, Proc, ADMIN_PASSWORD};
use serde_json::{json, Value};

const READER: &str = "analyst";
const READER_PASSWORD: &str = "reader-pw-123";

/// A deployment (with `edit` applied to its config and a reader user), one real agent
/// connected to it, and its client id and hostname.
struct Setup {
    deployment: Deployment,
    _agent: Proc,
    client: String,
    hostname: String,
}

fn setup(edit: impl FnOnce(&mut String)) -> Result<Setup> {
    let mut deployment = Deployment::generate_with(edit)?;
    deployment.add_user(READER, READER_PASSWORD, packhunt::config::Role::Reader)?;
    deployment.start_frontend()?;
    let agent = OutboxAgent::new(&deployment, 1024 * 1024)?.start()?;
    let client = deployment.wait_connected(1, Duration::from_secs(30))?[0].clone();
    let api = deployment.api();
    // The hostname arrives with the agent's first ClientInfo, just after it connects.
    let hostname = common::wait_until(
        "the agent's hostname known",
        Duration::from_secs(30),
        || {
            let (_, found) = api.get(&format!("/api/v1/clients?search={client}&limit=1"))?;
            Ok(found["items"][0]["hostname"]
                .as_str()
                .unwrap_or("")
                .to_string())
        },
        |hostname| !hostname.is_empty(),
    )?;
    Ok(Setup {
        deployment,
        _agent: agent,
        client,
        hostname,
    })
}

/// Goal: the app's files are served without credentials, with their content types, and
/// nothing else is. Method: plain GETs without credentials.
#[test]
fn assets_are_served_without_credentials() -> Result<()> {
    let deployment = Deployment::start()?;
    let anonymous = deployment.api().without_auth();
    let (status, page) = anonymous.get_text("/")?;
    assert_eq!(status, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    assert!(!page.contains("<style"), "no inline style: {page}");
    let (status, script) = anonymous.get_text("/assets/app.js")?;
    assert_eq!(status, 200);
    assert!(script.contains("export const app"));
    assert_eq!(anonymous.get_text("/assets/views/clients.js")?.0, 200);
    assert_eq!(anonymous.get_text("/assets/nope.js")?.0, 404);
    assert_eq!(anonymous.get_text("/assets/../Cargo.toml")?.0, 404);
    // The API itself still wants a user.
    assert_eq!(anonymous.get_text("/api/v1/clients")?.0, 401);
    let answer = common::gui_sessions::send(&deployment, "GET", "/assets/style.css", &[], None)?;
    assert_eq!(
        answer.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    let etag = answer.header("etag").context("an ETag")?.to_string();
    let again = common::gui_sessions::send(
        &deployment,
        "GET",
        "/assets/style.css",
        &[("if-none-match", &etag)],
        None,
    )?;
    assert_eq!(again.status, 304);
    Ok(())
}

/// Goal: a wrong password stays on the login form with an error; the right one lands
/// on the dashboard with the user and role shown. Method: the form, filled in.
#[test]
fn login_wrong_then_right_password() -> Result<()> {
    let deployment = Deployment::start()?;
    let Some(browser) = Browser::start("login", &deployment)? else {
        return Ok(());
    };
    browser.goto("#/clients")?;
    browser.wait_for("[data-test=login-form]")?;
    browser.screenshot("login")?;
    browser.type_into("[data-test=login-user]", "admin")?;
    browser.type_into("[data-test=login-password]", "not-the-password")?;
    browser.click("[data-test=login-submit]")?;
    let error = browser.text("[data-test=login-error]")?;
    assert!(error.contains("Wrong user or password"), "{error}");
    assert!(browser.hash()?.starts_with("/login"));
    let top = browser.find("[data-test=topbar]")?.context("top bar")?;
    assert!(!browser.displayed(&top)?, "no navigation before login");
    browser.screenshot("login-error")?;

    browser.type_into("[data-test=login-password]", ADMIN_PASSWORD)?;
    browser.click("[data-test=login-submit]")?;
    // Where the user wanted to go before the form came up.
    browser.wait_for_hash("/clients")?;
    browser.wait_for("[data-test=clients-form]")?;
    assert_eq!(browser.text("[data-test=session-role]")?, "administrator");
    browser.screenshot("clients")?;
    browser.click("[data-test=logout]")?;
    browser.wait_for("[data-test=login-form]")?;
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.wait_for_hash("/dashboard")?;
    browser.screenshot("dashboard")?;
    Ok(())
}

/// Goal: an analyst finds the agent by hostname, labels it, collects a glob with a
/// pattern typed into the form, sees the collection finish without reloading and pages
/// through its results, which are the API's. Method: a real agent globbing 120 files.
#[test]
fn find_label_collect_and_page_through_results() -> Result<()> {
    let s = setup(|_| {})?;
    let Some(browser) = Browser::start("collect", &s.deployment)? else {
        return Ok(());
    };
    let files = tempfile::tempdir()?;
    for i in 0..120 {
        std::fs::write(files.path().join(format!("file-{i:03}.txt")), b"x")?;
    }
    let pattern = format!("{}/*.txt", files.path().display());
    // Client stats every second, for the monitoring tab.
    let table = json!({"all": [{"name": "Generic.Client.Stats", "parameters": {"period_s": 1}}],
                       "by_label": {}});
    let (status, _) = s
        .deployment
        .api()
        .put("/api/v1/events/client_table", &table)?;
    assert_eq!(status, 200);

    browser.login("admin", ADMIN_PASSWORD)?;
    browser.screenshot("dashboard")?;
    browser.click("[data-test=nav-clients]")?;
    browser.type_into("[data-test=clients-search]", &s.hostname)?;
    browser.click("[data-test=clients-submit]")?;
    let row = format!("[data-test=client-row][data-client-id=\"{}\"]", s.client);
    browser.wait_for(&row)?;
    browser.screenshot("clients")?;

    // Label it from the list, then find it by the label.
    browser.click(&format!("{row} [data-test=client-select]"))?;
    browser.type_into("[data-test=labels-input]", "gui-test")?;
    browser.click("[data-test=labels-add]")?;
    browser.wait_for_text(&format!("{row} [data-test=client-labels]"), "gui-test")?;
    browser.type_into("[data-test=clients-search]", "label:gui-test")?;
    browser.click("[data-test=clients-submit]")?;
    browser.wait_for_hash("/clients?q=label")?;
    browser.wait_for(&row)?;
    browser.screenshot("clients-by-label")?;

    browser.click(&format!("{row} [data-test=client-link]"))?;
    browser.wait_for_text("[data-test=client-hostname]", &s.hostname)?;
    browser.screenshot("client")?;

    browser.click("[data-test=tab-new]")?;
    browser.type_into("[data-test=artifact-search]", "glob")?;
    browser.click("[data-test=artifact-option][data-artifact=\"Generic.Files.Glob\"]")?;
    browser.type_into("[data-test=\"param-Generic.Files.Glob-pattern\"]", &pattern)?;
    browser.screenshot("new-collection")?;
    browser.click("[data-test=collect-submit]")?;
    let hash = browser.wait_for_hash(&format!("/clients/{}/collections/F.", s.client))?;
    let flow = hash.rsplit('/').next().context("flow id")?.to_string();
    browser
        .wait_for("[data-test=collection-status] [data-test=state-badge][data-state=finished]")?;
    let section = "[data-test=artifact-results][data-artifact=\"Generic.Files.Glob\"]";
    browser.wait_for_text(
        &format!("{section} [data-test=results-pager-info]"),
        "1–50 of 120",
    )?;
    browser.screenshot("collection")?;

    // The request carried the typed pattern.
    let api = s.deployment.api();
    let base = format!("/api/v1/clients/{}/collections/{flow}", s.client);
    let (_, status) = api.get(&base)?;
    assert_eq!(status["total_rows"], 120, "{status}");

    browser.click(&format!("{section} [data-test=results-pager-next]"))?;
    browser.wait_for_text(
        &format!("{section} [data-test=results-pager-info]"),
        "51–100 of 120",
    )?;
    let (_, page) = api.get(&format!(
        "{base}/results?artifact=Generic.Files.Glob&start_row=50&rows=50"
    ))?;
    let rows = browser.find_all(&format!("{section} [data-test=result-row]"))?;
    assert_eq!(rows.len(), 50);
    let first = browser.element_text(&rows[0])?;
    let path = page["rows"][0]["path"].as_str().context("a path column")?;
    assert!(first.contains(path), "page 2 starts with {path}: {first}");
    browser.screenshot("results-page-2")?;

    // The client's collections list it, finished.
    browser.click("[data-test=collection-client]")?;
    let listed =
        format!("[data-test=collection-row][data-flow-id=\"{flow}\"] [data-state=finished]");
    browser.wait_for(&listed)?;
    browser.screenshot("client-collections")?;
    common::wait_until(
        "client stats stored",
        Duration::from_secs(60),
        || {
            let (_, page) = api.get(&format!(
                "/api/v1/clients/{}/monitoring/Generic.Client.Stats?rows=1",
                s.client
            ))?;
            Ok(page["total_rows"].as_u64().unwrap_or(0))
        },
        |rows| *rows > 0,
    )?;
    browser.click("[data-test=tab-monitoring]")?;
    browser.wait_for("[data-test=monitoring-rows-row]")?;
    browser.screenshot("client-monitoring")?;
    assert_clean_console(&browser)?;
    Ok(())
}

/// Goal: a file collected with Generic.Collectors.File downloads from the collection's
/// link with exactly its bytes; the CSV export link answers. Method: the globs typed
/// into the form's list field, the link fetched by the page (the session cookie rides
/// on it as on a click).
#[test]
fn an_upload_downloads_byte_for_byte() -> Result<()> {
    let s = setup(|_| {})?;
    let Some(browser) = Browser::start("upload", &s.deployment)? else {
        return Ok(());
    };
    let files = tempfile::tempdir()?;
    let path = files.path().join("evidence.bin");
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &bytes)?;

    browser.login("admin", ADMIN_PASSWORD)?;
    browser.screenshot("dashboard")?;
    browser.goto(&format!("#/clients/{}?tab=new", s.client))?;
    browser.click("[data-test=artifact-option][data-artifact=\"Generic.Collectors.File\"]")?;
    browser.type_into(
        "[data-test=\"param-Generic.Collectors.File-globs\"]",
        &path.display().to_string(),
    )?;
    browser.screenshot("new-collection")?;
    browser.click("[data-test=collect-submit]")?;
    browser.wait_for_hash(&format!("/clients/{}/collections/F.", s.client))?;
    browser.wait_for("[data-test=collection-status] [data-state=finished]")?;
    let link = browser.wait_for("[data-test=upload-download]")?;
    browser.screenshot("collection")?;
    let href = browser
        .attribute(&link, "href")?
        .context("a download link")?;
    let downloaded = fetch_bytes(&browser, &href)?;
    assert_eq!(downloaded.len(), bytes.len());
    assert!(downloaded == bytes, "the download is the file");
    // The API (Basic auth) serves the same bytes.
    let relative = href
        .split_once("/api/")
        .map(|(_, p)| format!("/api/{p}"))
        .context("API link")?;
    let (status, via_api) = s.deployment.api().request("GET", &relative, None)?;
    assert_eq!(status, 200);
    assert!(via_api == bytes);

    let csv = browser.wait_for("[data-test=export-csv]")?;
    let csv_href = browser.attribute(&csv, "href")?.context("a CSV link")?;
    let text = String::from_utf8(fetch_bytes(&browser, &csv_href)?)?;
    assert!(text.contains("evidence.bin"), "{text}");
    let zip = browser.attribute(&browser.wait_for("[data-test=export-zip]")?, "href")?;
    assert!(zip.is_some_and(|z| z.ends_with("/export.zip")));
    assert_clean_console(&browser)?;
    Ok(())
}

/// Goal: a reader is offered no change (no labels, no new collection, no cancel), and a
/// POST made from the page without the CSRF token is refused even for an administrator.
/// Method: the reader logs in through the form; `fetch` runs in the page.
#[test]
fn a_reader_sees_no_change_buttons_and_a_forged_post_is_refused() -> Result<()> {
    let s = setup(|_| {})?;
    let Some(browser) = Browser::start("reader", &s.deployment)? else {
        return Ok(());
    };
    let api = s.deployment.api();
    let flow = api.collect(&s.client, &["Generic.Client.Info"])?;
    s.deployment
        .wait_flows(&[(s.client.clone(), flow.clone())], Duration::from_secs(60))?;

    browser.login(READER, READER_PASSWORD)?;
    assert_eq!(browser.text("[data-test=session-role]")?, "reader");
    browser.screenshot("dashboard")?;
    browser.click("[data-test=nav-clients]")?;
    browser.wait_for(&format!(
        "[data-test=client-row][data-client-id=\"{}\"]",
        s.client
    ))?;
    assert!(browser.find("[data-test=labels-toolbar]")?.is_none());
    assert!(browser.find("[data-test=client-select]")?.is_none());
    browser.screenshot("clients")?;
    browser.goto(&format!("#/clients/{}", s.client))?;
    browser.wait_for(&format!(
        "[data-test=collection-row][data-flow-id=\"{flow}\"]"
    ))?;
    browser.wait_for_text("[data-test=client-hostname]", &s.hostname)?;
    assert!(browser.find("[data-test=tab-new]")?.is_none());
    assert!(browser.find("[data-test=client-label-add]")?.is_none());
    browser.screenshot("client")?;
    browser.goto(&format!("#/clients/{}/collections/{flow}", s.client))?;
    browser.wait_for("[data-test=collection-status] [data-state=finished]")?;
    assert!(browser.find("[data-test=collection-cancel]")?.is_none());
    browser.screenshot("collection")?;

    let collect = format!("/api/v1/clients/{}/collections", s.client);
    let (status, _) = forged_post(&browser, &collect)?;
    assert_eq!(status, 403, "a reader's POST is refused");

    browser.click("[data-test=logout]")?;
    browser.login("admin", ADMIN_PASSWORD)?;
    let (status, body) = forged_post(&browser, &collect)?;
    assert_eq!(status, 403, "no CSRF token: refused ({body})");
    assert!(body.to_lowercase().contains("csrf"), "{body}");
    // The app's own call, with the token, is what works.
    let made = browser.execute_async(
        "const done = arguments[arguments.length - 1];
         window.packhunt.app.api('POST', arguments[0], {artifacts: ['Generic.Client.Info']})
           .then((r) => done(r.flow_id), (e) => done('failed: ' + e.message));",
        json!([collect]),
    )?;
    assert!(made.as_str().is_some_and(|f| f.starts_with("F.")), "{made}");
    Ok(())
}

/// Goal: an administrator cancels a collection that has not ended from its view, and the
/// view shows it cancelled without a reload. Method: an agent that takes the task and
/// never answers it.
#[test]
fn an_administrator_cancels_a_running_collection() -> Result<()> {
    let deployment = Deployment::start()?;
    let Some(browser) = Browser::start("cancel", &deployment)? else {
        return Ok(());
    };
    let mut agent = common::RawAgent::connect(&deployment)?;
    let flow = agent.tasked(&deployment, &["Linux.Sys.Pslist"])?;
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.screenshot("dashboard")?;
    browser.goto(&format!("#/clients/{}/collections/{flow}", agent.client_id))?;
    browser.wait_for("[data-test=collection-cancel]")?;
    browser.screenshot("running")?;
    browser.click("[data-test=collection-cancel]")?;
    browser.wait_for("[data-test=collection-status] [data-state=cancelled]")?;
    assert_eq!(browser.text("[data-test=collection-ended-by]")?, "cancel");
    browser.wait_gone("[data-test=collection-cancel]")?;
    browser.screenshot("cancelled")?;
    let (_, status) = deployment.api().get(&format!(
        "/api/v1/clients/{}/collections/{flow}",
        agent.client_id
    ))?;
    assert_eq!(status["state"], "cancelled");
    Ok(())
}

/// Goal: the clients view pages through a fleet larger than a page with the total
/// shown, and a search narrows it. Method: 120 `fleet-` clients and 5 others that
/// connected once (their info.json written before the master starts); the unsearched
/// list's total (125) differs from the searched one, so the wait for the search's pager
/// cannot be met by the view the search replaces.
#[test]
fn the_clients_view_pages_through_the_fleet() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    let datastore = packhunt::datastore::Datastore::open(deployment.datastore(), false)?;
    for i in 0..125u64 {
        let id = packhunt::ids::ClientId::parse(&format!("C.{:016x}", 0xf1ee7000 + i))?;
        let hostname = if i < 120 {
            format!("fleet-{i:03}")
        } else {
            format!("other-{i}")
        };
        let doc = packhunt::datastore::ClientInfoDoc {
            client_id: id.clone(),
            hostname,
            os: "linux".into(),
            labels: vec![],
            first_seen_ms: 1_700_000_000_000,
            last_seen_ms: 1_700_000_000_000 + i * 60_000,
            version: "test".into(),
        };
        packhunt::datastore::write_client_info(&datastore.client(&id), &doc)?;
    }
    deployment.start_frontend()?;
    let Some(browser) = Browser::start("fleet", &deployment)? else {
        return Ok(());
    };
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.screenshot("dashboard")?;
    browser.click("[data-test=nav-clients]")?;
    browser.wait_for_text("[data-test=pager-info]", "1–50 of 125")?;
    browser.type_into("[data-test=clients-search]", "fleet-")?;
    browser.click("[data-test=clients-submit]")?;
    browser.wait_for_text("[data-test=pager-info]", "1–50 of 120")?;
    browser.wait_for_count("[data-test=client-row]", 50)?;
    browser.screenshot("page-1")?;
    browser.click("[data-test=pager-next]")?;
    browser.wait_for_text("[data-test=pager-info]", "51–100 of 120")?;
    browser.click("[data-test=pager-next]")?;
    browser.wait_for_text("[data-test=pager-info]", "101–120 of 120")?;
    browser.wait_for_count("[data-test=client-row]", 20)?;
    browser.screenshot("page-3")?;
    browser.type_into("[data-test=clients-search]", "fleet-07")?;
    browser.click("[data-test=clients-submit]")?;
    browser.wait_for_text("[data-test=pager-info]", "1–10 of 10")?;
    browser.screenshot("narrowed")?;
    Ok(())
}

/// Goal: when the session ends, the next thing the user does brings the login form, and
/// logging in again returns to where they were going. Method: sessions of 2 s.
#[test]
fn an_expired_session_goes_back_to_login() -> Result<()> {
    let s = setup(|text| common::set_keys(text, &[("session_timeout_s", "2")]))?;
    let Some(browser) = Browser::start("expired", &s.deployment)? else {
        return Ok(());
    };
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.wait_for_hash("/dashboard")?;
    browser.screenshot("dashboard")?;
    // Past the session's lifetime (not a timing under test: the session must be over).
    std::thread::sleep(Duration::from_secs(3));
    // Whether or not a live view noticed first, asking for the clients brings the form.
    browser.goto("#/clients")?;
    browser.wait_for("[data-test=login-form]")?;
    browser.wait_for_hash("/login")?;
    browser.screenshot("login")?;
    let notice = browser.text("[data-test=login-notice]")?;
    assert!(notice.contains("session has ended"), "{notice}");
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.wait_for_hash("/clients")?;
    browser.wait_for(&format!(
        "[data-test=client-row][data-client-id=\"{}\"]",
        s.client
    ))?;
    browser.screenshot("clients")?;
    Ok(())
}

/// Nothing the Content-Security-Policy blocked and no uncaught script error in the page's
/// console (an inline script or style would be blocked silently otherwise).
fn assert_clean_console(browser: &Browser) -> Result<()> {
    let console = browser.console()?;
    for bad in [
        "Content Security Policy",
        "Uncaught",
        "TypeError",
        "SyntaxError",
    ] {
        assert!(!console.contains(bad), "console shows {bad}:\n{console}");
    }
    Ok(())
}

/// A POST from the page's own origin with the session cookie but no CSRF token.
fn forged_post(browser: &Browser, path: &str) -> Result<(u64, String)> {
    let answer = browser.execute_async(
        "const done = arguments[arguments.length - 1];
         fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
           headers: {'Content-Type': 'application/json'},
           body: JSON.stringify({artifacts: ['Generic.Client.Info']})})
           .then(async (r) => done([r.status, await r.text()]), (e) => done([0, String(e)]));",
        json!([path]),
    )?;
    let status = answer[0].as_u64().context("a status")?;
    Ok((status, answer[1].as_str().unwrap_or("").to_string()))
}

/// The bytes at `url`, fetched by the page (with its cookie), as the page sees them.
fn fetch_bytes(browser: &Browser, url: &str) -> Result<Vec<u8>> {
    let answer: Value = browser.execute_async(
        "const done = arguments[arguments.length - 1];
         fetch(arguments[0], {credentials: 'same-origin'})
           .then(async (r) => done([r.status, Array.from(new Uint8Array(await r.arrayBuffer()))]),
                 (e) => done([0, String(e)]));",
        json!([url]),
    )?;
    anyhow::ensure!(answer[0] == 200, "GET {url}: {answer}");
    Ok(answer[1]
        .as_array()
        .context("bytes")?
        .iter()
        .map(|b| b.as_u64().unwrap_or(0) as u8)
        .collect())
}
