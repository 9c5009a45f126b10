//! Goal: the live views work in a real browser. An analyst creates a hunt over a label
//! from the hunts view, starts it, and watches its progress climb to every matching agent
//! without reloading the page, then reads its results; the dashboard shows each frontend
//! (master and minion) with its connected agents; the events view sets the client event
//! table and shows a real agent's event rows as they arrive.
//! Method: real frontends on loopback, a loadgen fleet (hunt, dashboard) or a real
//! `packhunt client` (events), headless Chromium over WebDriver (`common::browser`). A
//! marker set on `window` before the hunt starts must survive to the end: a reload would
//! clear it. Every view visited is saved under `target/gui-screenshots/`.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::browser::Browser;
use common::{spawn_loadgen, start_agent, wait_until, Deployment, ADMIN_PASSWORD};
use serde_json::json;

const CONNECT_LIMIT: Duration = Duration::from_secs(120);
const LABEL: &str = "gui-hunt";

/// A loadgen fleet of `clients` agents that stays up for the test (killed on drop).
fn fleet(deployment: &Deployment, clients: usize) -> Result<common::Proc> {
    let report = deployment.path().join("loadgen-report.json");
    spawn_loadgen(&deployment.client_config(), clients, 600, &report, &[])
}

/// Sets the `<select>` at `css` to `value` as a user's choice would (its options are not
/// "displayed" to WebDriver while the list is closed), firing `change`.
fn choose(browser: &Browser, css: &str, value: &str) -> Result<()> {
    browser.wait_for(css)?;
    let done = browser.execute(
        "const s = document.querySelector(arguments[0]); \
         if (![...s.options].some((o) => o.value === arguments[1])) return false; \
         s.value = arguments[1]; s.dispatchEvent(new Event('change', { bubbles: true })); \
         return true;",
        json!([css, value]),
    )?;
    ensure!(done == true, "{css} has no option {value}");
    Ok(())
}

/// Polls the page until the text of `css` is exactly `want`.
fn wait_text(browser: &Browser, css: &str, want: &str) -> Result<String> {
    browser.wait(&format!("`{css}` is `{want}`"), || {
        let Some(element) = browser.find(css)? else {
            return Ok(None);
        };
        let text = browser.element_text(&element).unwrap_or_default();
        Ok((text.trim() == want).then_some(text))
    })
}

#[test]
fn hunt_created_started_and_watched_live() -> Result<()> {
    const TEST: &str = "hunt_created_started_and_watched_live";
    const AGENTS: usize = 5;
    const LABELLED: usize = 3;
    // Recruiting one agent a second spreads the hunt's progress over a few seconds.
    let deployment = Deployment::start_with(|text| {
        common::set_keys(text, &[("hunt_recruitment_per_second", "1")])
    })?;
    let _fleet = fleet(&deployment, AGENTS)?;
    let ids = deployment.wait_connected(AGENTS, CONNECT_LIMIT)?;
    let api = deployment.api();
    for id in ids.iter().take(LABELLED) {
        let (status, body) = api.post(
            &format!("/api/v1/clients/{id}/labels"),
            &json!({"add": [LABEL]}),
        )?;
        ensure!(status == 200, "label {id}: {status} {body}");
    }
    let Some(browser) = Browser::start(TEST, &deployment)? else {
        return Ok(());
    };
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.goto("#/hunts")?;
    browser.wait_for("[data-test=hunts-list] [data-test=hunts-table-empty]")?;
    browser.wait_for("[data-test=live-status][data-state=live]")?;
    browser.screenshot("hunts-empty")?;

    browser.click("[data-test=hunt-new]")?;
    browser.wait_for("[data-test=hunt-form]")?;
    browser.type_into("[data-test=hunt-artifact-filter]", "client info")?;
    browser.click("[data-test=hunt-artifact-option][data-artifact='Generic.Client.Info']")?;
    browser.wait_for("[data-test=artifact-params][data-artifact='Generic.Client.Info']")?;
    browser.type_into("[data-test=hunt-labels]", LABEL)?;
    browser.screenshot("hunt-form")?;
    // A reload would lose this; the progress must arrive without one.
    browser.execute("window.__liveMarker = 'kept'; return true;", json!([]))?;
    browser.click("[data-test=hunt-create]")?;
    let hash = browser.wait_for_hash("/hunts/H.")?;
    let hunt_id = hash
        .trim_start_matches("/hunts/")
        .split('?')
        .next()
        .unwrap_or("")
        .to_string();
    ensure!(hunt_id.starts_with("H."), "{hash}");

    browser.wait_for("[data-test=live-status][data-state=live]")?;
    let done = LABELLED.to_string();
    // Every figure the page showed on its way, in order: it only ever climbs. The first
    // one between none and all is saved as a screenshot of the hunt in progress.
    let mut shown: Vec<usize> = Vec::new();
    browser.wait("the hunt completed on the page", || {
        let text = browser.text("[data-test=hunt-completed]")?;
        let completed: usize = text.trim().parse().unwrap_or(0);
        if shown.last() != Some(&completed) {
            if completed > 0 && completed < LABELLED && !shown.iter().any(|&c| c > 0) {
                browser.screenshot("hunt-in-progress")?;
            }
            shown.push(completed);
        }
        Ok((completed == LABELLED).then_some(()))
    })?;
    ensure!(
        shown.windows(2).all(|w| w[0] <= w[1]),
        "completed went down: {shown:?}"
    );
    wait_text(&browser, "[data-test=hunt-scheduled]", &done)?;
    let marker = browser.execute("return window.__liveMarker || null;", json!([]))?;
    ensure!(marker == "kept", "the page was reloaded: {marker}");
    browser.wait_for("[data-test=hunt-result-row]")?;
    let rows = browser.find_all("[data-test=hunt-result-row]")?;
    let (_, hunt) = api.get(&format!("/api/v1/hunts/{hunt_id}"))?;
    ensure!(
        hunt["completed"] == LABELLED && hunt["state"] == "running",
        "{hunt}"
    );
    ensure!(
        !rows.is_empty() && rows.len() as u64 <= hunt["total_rows"].as_u64().unwrap_or(0),
        "{} result rows shown, hunt {hunt}",
        rows.len()
    );
    let export = browser.wait_for("[data-test=hunt-export]")?;
    let href = browser.attribute(&export, "href")?.unwrap_or_default();
    ensure!(
        href.ends_with(&format!("/api/v1/hunts/{hunt_id}/export.zip")),
        "{href}"
    );
    browser.screenshot("hunt-finished")?;

    // Stopped from the page, cancelling nothing (all ended): the list shows it stopped.
    browser.click("[data-test=hunt-stop]")?;
    browser.wait_for_text("[data-test=state-badge]", "stopped")?;
    browser.goto("#/hunts")?;
    let row = format!("[data-test=hunt-row][data-hunt='{hunt_id}'][data-state=stopped]");
    browser.wait_for(&row)?;
    wait_text(
        &browser,
        &format!("{row} [data-test=hunt-completed]"),
        &done,
    )?;
    browser.screenshot("hunts-list")?;
    Ok(())
}

#[test]
fn dashboard_shows_each_frontend_and_its_agents() -> Result<()> {
    const TEST: &str = "dashboard_shows_each_frontend_and_its_agents";
    const AGENTS: usize = 4;
    let (deployment, minions) = common::cluster(1)?;
    let _fleet = fleet(&deployment, AGENTS)?;
    deployment.wait_connected(AGENTS, CONNECT_LIMIT)?;
    let Some(browser) = Browser::start(TEST, &deployment)? else {
        return Ok(());
    };
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.goto("#/dashboard")?;
    browser.wait_for("[data-test=live-status][data-state=live]")?;
    wait_text(
        &browser,
        "[data-test=fleet-connected-value]",
        &AGENTS.to_string(),
    )?;
    let minion = &minions[0].name;
    let minion_row = format!("[data-test=frontend-row][data-name='{minion}']");
    wait_text(
        &browser,
        &format!("{minion_row} [data-test=frontend-up]"),
        "up",
    )?;
    // The rows' agents add up to the fleet: every agent is on one of the two.
    let (_, frontends) = deployment.api().get("/api/v1/frontends")?;
    let mut shown = 0;
    for f in frontends["items"].as_array().context("items")? {
        let name = f["name"].as_str().context("name")?;
        let css =
            format!("[data-test=frontend-row][data-name='{name}'] [data-test=frontend-connected]");
        let text = browser.text(&css)?;
        shown += text
            .trim()
            .parse::<usize>()
            .with_context(|| format!("{name}: {text}"))?;
    }
    ensure!(shown == AGENTS, "rows show {shown} agents");
    // Known clients: every agent has a folder once its facts landed (counted in the
    // background, at least the connected ones).
    browser.wait("known clients counted", || {
        let text = browser.text("[data-test=fleet-known-value]")?;
        Ok(text.trim().parse::<usize>().ok().filter(|k| *k >= AGENTS))
    })?;
    let limit = browser.text("[data-test=limit-max_upload_bytes]")?;
    ensure!(limit.contains("5,242,880"), "max_upload_bytes: {limit}");
    browser.screenshot("dashboard")?;
    Ok(())
}

#[test]
fn events_view_sets_the_table_and_watches_an_agent() -> Result<()> {
    const TEST: &str = "events_view_sets_the_table_and_watches_an_agent";
    const STATS: &str = "Generic.Client.Stats";
    const PROCESS_START: &str = "Linux.Events.ProcessStart";
    let deployment = Deployment::start()?;
    let _agent = start_agent(&deployment)?;
    let ids = deployment.wait_connected(1, CONNECT_LIMIT)?;
    let Some(browser) = Browser::start(TEST, &deployment)? else {
        return Ok(());
    };
    browser.login("admin", ADMIN_PASSWORD)?;
    browser.goto("#/events")?;
    wait_text(&browser, "[data-test=event-table-version]", "0")?;
    browser.screenshot("events-empty")?;

    browser.click("[data-test=event-list-all-add]")?;
    browser.wait_for("[data-test=event-list-all] [data-test=event-entry]")?;
    choose(
        &browser,
        "[data-test=event-list-all] [data-test=event-entry-artifact]",
        STATS,
    )?;
    browser.type_into(&format!("[data-test='event-param-{STATS}-period_s']"), "1")?;
    // And a list for agents labelled `web`: process starts.
    browser.type_into("[data-test=event-table-new-label]", "web")?;
    browser.click("[data-test=event-table-add-label]")?;
    let web = "[data-test=event-list-label][data-label=web]";
    browser.click(&format!("{web} [data-test=event-list-label-add]"))?;
    choose(
        &browser,
        &format!("{web} [data-test=event-entry-artifact]"),
        PROCESS_START,
    )?;
    browser.screenshot("events-editing")?;
    browser.click("[data-test=event-table-save]")?;
    wait_text(&browser, "[data-test=event-table-version]", "1")?;
    let (_, table) = deployment.api().get("/api/v1/events/client_table")?;
    ensure!(
        table["version"] == 1
            && table["all"][0]["name"] == STATS
            && table["all"][0]["parameters"]["period_s"] == "1"
            && table["by_label"]["web"][0]["name"] == PROCESS_START,
        "{table}"
    );

    choose(&browser, "[data-test=watch-artifact]", STATS)?;
    browser.click("[data-test=watch-start]")?;
    browser.wait_for_text("[data-test=watch-status]", "watching")?;
    let client = browser.text("[data-test=watch-row] [data-test=watch-client-id]")?;
    ensure!(client == ids[0], "row from {client}, agent {}", ids[0]);
    // More rows keep arriving on the same page.
    let first: u64 = events_seen(&browser)?;
    wait_until(
        "more events",
        Duration::from_secs(30),
        || events_seen(&browser),
        |n| *n > first,
    )?;
    browser.screenshot("events-watching")?;
    browser.click("[data-test=watch-stop]")?;
    browser.wait_for_text("[data-test=watch-status]", "stopped")?;
    Ok(())
}

/// The count in "watching A: N events".
fn events_seen(browser: &Browser) -> Result<u64> {
    let status = browser.text("[data-test=watch-status]")?;
    let n = status
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.replace(',', ""))
        .unwrap_or_default();
    Ok(n.parse().unwrap_or(0))
}

#[test]
fn a_reader_sees_the_live_views_without_change_buttons() -> Result<()> {
    const TEST: &str = "a_reader_sees_the_live_views_without_change_buttons";
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user("reader", "reader-pw", packhunt::config::Role::Reader)?;
    deployment.start_frontend()?;
    let (status, created) = deployment.api().post(
        "/api/v1/hunts",
        &json!({"artifacts": ["Generic.Client.Info"], "condition": {"labels": ["nobody"]}}),
    )?;
    ensure!(status == 200, "{status} {created}");
    let hunt_id = created["hunt_id"].as_str().context("hunt_id")?.to_string();
    let Some(browser) = Browser::start(TEST, &deployment)? else {
        return Ok(());
    };
    browser.login("reader", "reader-pw")?;
    browser.goto("#/hunts")?;
    browser.wait_for(&format!(
        "[data-test=hunt-row][data-hunt='{hunt_id}'][data-state=paused]"
    ))?;
    for hook in ["hunt-new", "hunt-start", "hunt-stop"] {
        ensure!(
            browser.find(&format!("[data-test={hook}]"))?.is_none(),
            "a reader is offered {hook}"
        );
    }
    browser.screenshot("hunts")?;
    browser.goto(&format!("#/hunts/{hunt_id}"))?;
    browser.wait_for("[data-test=live-status][data-state=live]")?;
    browser.wait_for("[data-test=hunt-results-table-empty]")?;
    ensure!(
        browser.find("[data-test=hunt-start]")?.is_none(),
        "start offered"
    );
    browser.screenshot("hunt")?;
    browser.goto("#/events")?;
    wait_text(&browser, "[data-test=event-table-version]", "0")?;
    ensure!(
        browser.find("[data-test=event-table-save]")?.is_none(),
        "a reader is offered to save the table"
    );
    browser.screenshot("events")?;
    browser.goto("#/dashboard")?;
    browser.wait_for("[data-test=live-status][data-state=live]")?;
    browser.wait_for("[data-test=frontend-row][data-role=master]")?;
    browser.screenshot("dashboard")?;
    Ok(())
}
