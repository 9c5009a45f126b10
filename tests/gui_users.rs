//! The Users view in a real headless Chromium against a real master and agent: an
//! administrator adds an investigator (and adds, then removes, a second user through the
//! confirm), logs out; the investigator logs in, is offered no Users entry nor the event
//! table's editor, and starts a collection that finishes. Every view visited is saved
//! under target/gui-screenshots/users-<view>.png.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::agent_outbox::OutboxAgent;
use common::browser::Browser;
use common::{Deployment, ADMIN_PASSWORD};

const INVESTIGATOR: &str = "ivan";
const INVESTIGATOR_PASSWORD: &str = "ivan-password-1";

/// Goal: what the contract gives an administrator and an investigator, through the GUI.
/// Method: the forms filled in and the buttons clicked; the API's answers checked.
#[test]
fn an_administrator_adds_an_investigator_who_collects() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.start_frontend()?;
    let _agent = OutboxAgent::new(&deployment, 1024 * 1024)?.start()?;
    let client = deployment.wait_connected(1, Duration::from_secs(30))?[0].clone();
    let Some(browser) = Browser::start("users", &deployment)? else {
        return Ok(());
    };
    browser.login("admin", ADMIN_PASSWORD)?;
    let nav = browser.wait_for("[data-test=nav-users]")?;
    assert!(browser.displayed(&nav)?, "an administrator sees Users");
    browser.click("[data-test=nav-users]")?;
    browser.wait_for("[data-test=user-row][data-user=admin]")?;
    browser.screenshot("list")?;

    // Two passwords that differ never leave the page.
    add_user(
        &browser,
        INVESTIGATOR,
        "investigator",
        (INVESTIGATOR_PASSWORD, "other"),
    )?;
    browser.wait_for_text("[data-test=users-error]", "differ")?;
    add_user(
        &browser,
        INVESTIGATOR,
        "investigator",
        (INVESTIGATOR_PASSWORD, INVESTIGATOR_PASSWORD),
    )?;
    browser.wait_for_text("[data-test=users-notice]", "Added ivan (investigator)")?;
    browser.wait_for("[data-test=user-row][data-user=ivan]")?;
    add_user(
        &browser,
        "temp",
        "reader",
        ("temp-password-1", "temp-password-1"),
    )?;
    let temp = "[data-test=user-row][data-user=temp]";
    browser.wait_for(temp)?;
    browser.screenshot("added")?;
    browser.click(&format!("{temp} [data-test=user-remove]"))?;
    browser.wait_for(&format!("{temp} [data-test=user-remove-confirm]"))?;
    browser.screenshot("confirm-remove")?;
    browser.click(&format!("{temp} [data-test=user-remove-confirm]"))?;
    browser.wait_gone(temp)?;
    let (_, users) = deployment.api().get("/api/v1/users")?;
    let names: Vec<&str> = users["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", INVESTIGATOR]);

    browser.click("[data-test=logout]")?;
    browser.login(INVESTIGATOR, INVESTIGATOR_PASSWORD)?;
    assert_eq!(browser.text("[data-test=session-role]")?, "investigator");
    let nav = browser
        .find("[data-test=nav-users]")?
        .context("nav entry")?;
    assert!(
        !browser.displayed(&nav)?,
        "an investigator sees no Users entry"
    );
    browser.screenshot("investigator-dashboard")?;
    browser.goto("#/users")?;
    browser.wait_for("[data-test=users-forbidden]")?;
    assert!(browser.find("[data-test=user-add-form]")?.is_none());
    browser.goto("#/events")?;
    browser.wait_for("[data-test=event-table-form]")?;
    assert!(browser.find("[data-test=event-table-save]")?.is_none());
    browser.screenshot("investigator-events")?;

    browser.goto(&format!("#/clients/{client}?tab=new"))?;
    browser.click("[data-test=artifact-option][data-artifact=\"Generic.Client.Info\"]")?;
    browser.screenshot("investigator-new-collection")?;
    browser.click("[data-test=collect-submit]")?;
    browser.wait_for_hash(&format!("/clients/{client}/collections/F."))?;
    browser
        .wait_for("[data-test=collection-status] [data-test=state-badge][data-state=finished]")?;
    browser.screenshot("investigator-collection")?;
    let console = browser.console()?;
    for bad in ["Content Security Policy", "Uncaught", "TypeError"] {
        assert!(!console.contains(bad), "console shows {bad}:\n{console}");
    }
    Ok(())
}

/// Fills in and sends the add-user form.
fn add_user(browser: &Browser, name: &str, role: &str, passwords: (&str, &str)) -> Result<()> {
    browser.type_into("[data-test=user-add-name]", name)?;
    // Set as a user's pick does (a closed <select>'s options are not "shown").
    browser.execute(
        "const s = document.querySelector(arguments[0]); s.value = arguments[1];
         s.dispatchEvent(new Event('change'));",
        serde_json::json!(["[data-test=user-add-role]", role]),
    )?;
    browser.type_into("[data-test=user-add-password]", passwords.0)?;
    browser.type_into("[data-test=user-add-again]", passwords.1)?;
    browser.click("[data-test=user-add-submit]")
}
