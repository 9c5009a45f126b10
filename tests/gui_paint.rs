//! A measurement, not a check (ignored by default; `benches/targets.sh gui-paint` runs it):
//! how long each GUI view takes to show its data in a real headless Chromium on loopback,
//! with SEED clients (default 50,000) in the master's client index and one real agent with
//! one finished collection. Prints one JSON line per view; asserts only that each view
//! showed what it should.
//!
//! Per view: the route is set in the page and the time runs (`performance.now()`, in the
//! page) until the view's data element is in the document and the next frame has been
//! produced (`requestAnimationFrame` then a task): painted, plus up to one frame interval
//! (16.7 ms at Chromium's 60 Hz). The first load of the app (login form) is the browser's own
//! first-contentful-paint entry.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use common::agent_outbox::OutboxAgent;
use common::browser::Browser;
use common::{Deployment, ADMIN_PASSWORD};
use serde_json::{json, Value};

/// Navigates to `route` from inside the page and resolves with the milliseconds until
/// `css` exists and the next frame has been produced.
const TIME_VIEW_JS: &str = r#"
const [route, css, done] = arguments;
const t0 = performance.now();
location.hash = route;
const look = () => {
  if (document.querySelector(css)) {
    requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
  } else {
    setTimeout(look, 2);
  }
};
look();
"#;

const REPEATS: usize = 5;

#[test]
#[ignore = "a measurement: run by benches/targets.sh gui-paint"]
fn time_to_first_paint_of_each_view() -> Result<()> {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let mut deployment = Deployment::generate_with(|_| {})?;
    let status = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/seed_clients.py"
        ))
        .arg(deployment.datastore())
        .arg(seed.to_string())
        .status()
        .context("python3 benches/seed_clients.py")?;
    anyhow::ensure!(status.success(), "seeding clients failed");
    deployment.start_frontend()?;
    let api = deployment.api();
    common::wait_until(
        "the client index loaded",
        Duration::from_secs(300),
        || Ok(api.get("/api/v1/clients?limit=1")?.1),
        |page| page["complete"] != json!(false) && page["total"].as_u64() >= Some(seed),
    )?;
    let _agent = OutboxAgent::new(&deployment, 1024 * 1024)?.start()?;
    let client = deployment.wait_connected(1, Duration::from_secs(30))?[0].clone();
    let (_, flow) = api.post(
        &format!("/api/v1/clients/{client}/collections"),
        &json!({"artifacts": ["Linux.Sys.Pslist"]}),
    )?;
    let flow = flow["flow_id"].as_str().context("flow_id")?.to_string();
    common::wait_until(
        "the collection finished",
        Duration::from_secs(60),
        || {
            Ok(api
                .get(&format!("/api/v1/clients/{client}/collections/{flow}"))?
                .1)
        },
        |status| status["state"] == "finished",
    )?;

    let Some(browser) = Browser::start("paint", &deployment)? else {
        return Ok(());
    };
    browser.goto("#/login")?;
    browser.wait_for("[data-test=login-form]")?;
    let fcp = browser.execute(
        "const e = performance.getEntriesByName('first-contentful-paint')[0]; \
         return e ? e.startTime : null;",
        json!([]),
    )?;
    println!(
        "{}",
        json!({"view": "login (first load)", "first_contentful_paint_ms": fcp})
    );
    browser.login("admin", ADMIN_PASSWORD)?;

    let views = [
        (
            "dashboard",
            "#/dashboard".to_string(),
            "[data-test=frontend-row]",
        ),
        ("clients", "#/clients".to_string(), "[data-test=client-row]"),
        (
            "clients, label: search",
            "#/clients?q=label%3Agroup-70".to_string(),
            "[data-test=client-row]",
        ),
        (
            "clients, page 500",
            "#/clients?start=25000".to_string(),
            "[data-test=client-row]",
        ),
        (
            "client",
            format!("#/clients/{client}"),
            "[data-test=collection-row]",
        ),
        (
            "collection",
            format!("#/clients/{client}/collections/{flow}"),
            "[data-test=result-row]",
        ),
        ("hunts", "#/hunts".to_string(), "[data-test=hunts-total]"),
        (
            "events",
            "#/events".to_string(),
            "[data-test=event-table-version]",
        ),
    ];
    for (name, route, css) in &views {
        let mut times = Vec::new();
        for _ in 0..REPEATS {
            // From another view, so that each time is a fresh render of this one.
            browser.execute("location.hash = '#/login-elsewhere';", json!([]))?;
            std::thread::sleep(Duration::from_millis(50));
            let ms = browser.execute_async(TIME_VIEW_JS, json!([route, css]))?;
            times.push(ms.as_f64().context("a time")?);
        }
        browser.screenshot(&name.replace([' ', ',', ':'], "-"))?;
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{}",
            json!({"view": name, "clients": seed, "median_ms": times[REPEATS / 2],
                   "max_ms": times[REPEATS - 1], "runs": times})
        );
    }
    let console: Value = json!(browser.console()?);
    println!("{}", json!({"console": console}));
    Ok(())
}
