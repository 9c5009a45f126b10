//! The browser app in a real headless Chromium (tests/common/browser.rs): log in, find an
//! agent, collect from it with a parameter, page through results, download an upload,
//! what a reader is offered, a forged POST, an expired session. Every view visited is
//! saved under target/gui-screenshots/.

mod common;

use anyhow::Result;
use common::browser::Browser;
use common::{Deployment, ADMIN_PASSWORD};

/// Goal: the app's files are served without credentials, with their content types, and
/// nothing else is. Method: plain GETs without Basic auth.
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
    Ok(())
}

/// Goal: the app starts on the login form, and a wrong password stays there with an
/// error. Method: Chromium on the GUI port, the form filled in as a user would.
#[test]
fn wrong_password_stays_on_login_with_an_error() -> Result<()> {
    let deployment = Deployment::start()?;
    let Some(browser) = Browser::start("login_wrong", &deployment)? else {
        return Ok(());
    };
    browser.goto("#/clients")?;
    browser.wait_for("[data-test=login-form]")?;
    browser.screenshot("login")?;
    browser.type_into("[data-test=login-user]", "admin")?;
    browser.type_into(
        "[data-test=login-password]",
        &format!("{ADMIN_PASSWORD}-wrong"),
    )?;
    browser.click("[data-test=login-submit]")?;
    let error = browser.text("[data-test=login-error]")?;
    assert!(error.contains("Wrong user or password"), "{error}");
    assert!(browser.hash()?.starts_with("/login"));
    assert!(!browser.displayed(&browser.find("[data-test=topbar]")?.expect("top bar"))?);
    browser.screenshot("login-error")?;
    Ok(())
}
