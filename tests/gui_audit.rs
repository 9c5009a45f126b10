//! The audit view in a real headless Chromium (tests/common/browser.rs) against a real
//! master: an administrator's collection and a failed login at the form show up in it,
//! the action filter narrows the table, and a reader is offered neither the view nor its
//! entries. Screenshots go to target/gui-screenshots/audit-*.png.

mod common;

use anyhow::{ensure, Context, Result};
use common::browser::Browser;
use common::{Deployment, RawAgent, ADMIN_PASSWORD};
use serde_json::json;

const READER: &str = "analyst";
const READER_PASSWORD: &str = "reader-pw-123";

/// Goal: what an administrator did and a failed login appear in the audit view with who,
/// from where, what and how it ended; only administrators see the view.
/// Method: a collection through the API, a wrong password typed into the login form, then
/// the view read as a user would (table rows, filter), then the same as a reader.
#[test]
fn collection_and_failed_login_show_in_the_audit_view() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user(READER, READER_PASSWORD, packhunt::config::Role::Reader)?;
    deployment.start_frontend()?;
    let Some(browser) = Browser::start("audit", &deployment)? else {
        return Ok(());
    };
    let agent = RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();
    let (code, body) = deployment.api().post(
        &format!("/api/v1/clients/{client}/collections"),
        &json!({"artifacts": ["Generic.Client.Info"]}),
    )?;
    ensure!(code == 200, "collection: {code} {body}");
    let flow = body["flow_id"].as_str().context("flow_id")?.to_string();

    browser.goto("#/login")?;
    browser.type_into("[data-test=login-user]", "intruder")?;
    browser.type_into("[data-test=login-password]", "not-a-password")?;
    browser.click("[data-test=login-submit]")?;
    browser.wait_for_text("[data-test=login-error]", "Wrong user or password")?;
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.click("[data-test=nav-audit]")?;
    browser.wait_for_hash("/audit")?;

    let collection = "[data-test=audit-row][data-action='collection.create']";
    let failed = "[data-test=audit-row][data-action='login.failed']";
    browser.wait_for(collection)?;
    browser.wait_for(failed)?;
    let target = browser.text(&format!("{collection} [data-test=audit-target-cell]"))?;
    assert_eq!(target, format!("{client}/{flow}"));
    let row = browser.text(collection)?;
    for expected in ["admin", "127.0.0.1", "http", "ok"] {
        assert!(row.contains(expected), "`{expected}` in `{row}`");
    }
    let row = browser.text(failed)?;
    for expected in ["intruder", "127.0.0.1", "refused", "wrong user or password"] {
        assert!(row.contains(expected), "`{expected}` in `{row}`");
    }
    // Newest first: the admin's own login came after the failed one.
    let actions = browser.execute(
        "return [...document.querySelectorAll('[data-test=audit-row]')].map(r => r.dataset.action);",
        json!([]),
    )?;
    assert_eq!(
        actions,
        json!(["login", "login.failed", "collection.create"]),
        "{actions}"
    );
    assert!(browser
        .text("[data-test=audit-pager-info]")?
        .contains("of 3"));
    browser.screenshot("view")?;

    browser.type_into("[data-test=audit-action]", "login.failed")?;
    browser.click("[data-test=audit-submit]")?;
    browser.wait_for_hash("/audit?")?;
    browser.wait_for("[data-test=audit-filtered]")?;
    browser.wait_for_count("[data-test=audit-row]", 1)?;
    browser.wait_for(failed)?;
    browser.screenshot("filtered")?;

    // A custom UTC range: one before anything happened shows nothing; one around now
    // shows the three entries again.
    browser.goto("#/audit?span=custom&from=1577836800000&to=1577923200000")?;
    browser.wait_for("[data-test=audit-empty]")?;
    let from = browser
        .find("[data-test=audit-from]")?
        .context("from input")?;
    let shown = browser.execute(
        "return arguments[0].value;",
        json!([{ "element-6066-11e4-a52e-4f735466cecf": from.0 }]),
    )?;
    // Shown in UTC (Chromium leaves out zero seconds).
    assert!(
        shown.as_str().unwrap_or("").starts_with("2020-01-01T00:00"),
        "{shown}"
    );
    let now = packhunt::clock::now_ms();
    browser.goto(&format!(
        "#/audit?span=custom&from={}&to={}",
        now - 3_600_000,
        now + 3_600_000
    ))?;
    browser.wait_for_count("[data-test=audit-row]", 3)?;

    // A reader: no nav entry, and the view says whose it is.
    browser.click("[data-test=logout]")?;
    browser.wait_for("[data-test=login-form]")?;
    browser.login(READER, READER_PASSWORD)?;
    let nav = browser
        .find("[data-test=nav-audit]")?
        .context("nav entry")?;
    assert!(!browser.displayed(&nav)?, "no audit entry for a reader");
    browser.goto("#/audit")?;
    browser.wait_for("[data-test=audit-forbidden]")?;
    assert!(browser.find("[data-test=audit-row]")?.is_none());
    browser.screenshot("reader")?;
    drop(agent);
    Ok(())
}
