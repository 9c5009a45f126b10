//! A headless Chromium for browser tests, driven over WebDriver (W3C, HTTP/JSON) through
//! Debian's `chromedriver`. The WebDriver client is a few lines over `std::net`: the
//! driver listens on loopback, speaks plain HTTP/1.1 and answers with a Content-Length,
//! so one request per connection (`Connection: close`) needs no HTTP library.
//!
//! Every wait polls through `wait_until` with a generous limit that only stops a hung
//! test; a failed wait reports the browser's console log and the current URL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use super::{free_port, skip, wait_until, Deployment, Proc};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a wait for the page may take before the test fails: far above what any view
/// needs on a loaded 2-core box; only a broken page waits this long.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One WebDriver command may take this long (a page load, a screenshot) before the test
/// fails instead of hanging.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The key under which WebDriver returns an element reference (W3C WebDriver, 12.1).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver element reference (valid until the page replaces the element).
#[derive(Debug, Clone)]
pub struct Element(pub String);

/// A headless Chromium session on the GUI at `base` (e.g. `https://127.0.0.1:PORT`).
/// Closes the browser and stops chromedriver on drop.
pub struct Browser {
    pub base: String,
    /// Names screenshots: `target/gui-screenshots/<test>-<name>.png`.
    pub test: String,
    driver_port: u16,
    session: String,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser on `deployment`'s GUI, or None (after `common::skip`) when this machine
    /// has no Chromium or chromedriver.
    pub fn start(test: &str, deployment: &Deployment) -> Result<Option<Browser>> {
        Self::start_at(
            test,
            &format!("https://{}:{}", deployment.host, deployment.gui_port),
        )
    }

    /// A browser on the GUI at `base`, or None when Chromium or chromedriver is missing.
    pub fn start_at(test: &str, base: &str) -> Result<Option<Browser>> {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            skip(test, "chromium and chromium-driver (Debian packages)");
            return Ok(None);
        }
        let profile = tempfile::tempdir()?;
        let driver_port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log"))?;
        let driver = Proc(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={driver_port}"))
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .context("starting chromedriver")?,
        );
        wait_until(
            "chromedriver ready",
            WAIT_LIMIT,
            || Ok(http(driver_port, "GET", "/status", None).ok()),
            |status| status.as_ref().is_some_and(|s| s["value"]["ready"] == true),
        )?;
        let user_data = profile.path().join("chromium");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--ignore-certificate-errors",
                    "--window-size=1400,1000", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        }}});
        let created = http(driver_port, "POST", "/session", Some(&capabilities))
            .context("creating the WebDriver session")?;
        let session = created["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {created}"))?
            .to_string();
        Ok(Some(Browser {
            base: base.trim_end_matches('/').to_string(),
            test: test.to_string(),
            driver_port,
            session,
            _driver: driver,
            _profile: profile,
        }))
    }

    /// Sends one WebDriver command of this session; returns its `value`.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        let answer = http(self.driver_port, method, &path, body)?;
        Ok(answer["value"].clone())
    }

    /// Opens `route` on the GUI: `#/clients` or `/assets/app.js` (relative to `base`), or
    /// a full URL.
    pub fn goto(&self, route: &str) -> Result<()> {
        let url = if route.starts_with("http") {
            route.to_string()
        } else if route.starts_with('#') {
            format!("{}/{route}", self.base)
        } else {
            format!("{}{route}", self.base)
        };
        self.command("POST", "/url", Some(&json!({ "url": url })))?;
        Ok(())
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self
            .command("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The part of the URL after `#` (`/clients?q=x`), empty without one.
    pub fn hash(&self) -> Result<String> {
        let url = self.current_url()?;
        Ok(url
            .split_once('#')
            .map(|(_, h)| h.to_string())
            .unwrap_or_default())
    }

    /// The first element matching `css`, if any (now, without waiting).
    pub fn find(&self, css: &str) -> Result<Option<Element>> {
        Ok(self.find_all(css)?.into_iter().next())
    }

    /// Every element matching `css` (now, without waiting).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let found = self.command(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": css })),
        )?;
        Ok(found
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| Some(Element(e[ELEMENT_KEY].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until an element matching `css` is present and displayed; returns it.
    pub fn wait_for(&self, css: &str) -> Result<Element> {
        let found = self.wait(&format!("`{css}` shown"), || {
            for element in self.find_all(css)? {
                if self.displayed(&element).unwrap_or(false) {
                    return Ok(Some(element));
                }
            }
            Ok(None)
        })?;
        Ok(found)
    }

    /// Waits until the text of the first element matching `css` contains `needle` (found
    /// and read in one script, as `text`).
    pub fn wait_for_text(&self, css: &str, needle: &str) -> Result<String> {
        self.wait(&format!("`{css}` says `{needle}`"), || {
            let text = self.execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                json!([css]),
            )?;
            let text = text.as_str().unwrap_or_default();
            Ok(text.contains(needle).then(|| text.to_string()))
        })
    }

    /// Waits until exactly `count` elements match `css` (counted in one script, so a view
    /// replacing its elements between two calls cannot be seen half-way).
    pub fn wait_for_count(&self, css: &str, count: usize) -> Result<()> {
        self.wait(&format!("{count} × `{css}`"), || {
            let found = self.execute(
                "return document.querySelectorAll(arguments[0]).length;",
                json!([css]),
            )?;
            Ok((found.as_u64() == Some(count as u64)).then_some(()))
        })
    }

    /// Waits until no element matches `css`.
    pub fn wait_gone(&self, css: &str) -> Result<()> {
        self.wait(&format!("`{css}` gone"), || {
            Ok(self.find(css)?.is_none().then_some(()))
        })
    }

    /// Waits until the URL's hash starts with `prefix` (e.g. `/dashboard`); returns it.
    pub fn wait_for_hash(&self, prefix: &str) -> Result<String> {
        self.wait(&format!("the route is {prefix}"), || {
            let hash = self.hash()?;
            Ok(hash.starts_with(prefix).then_some(hash))
        })
    }

    /// Polls `probe` until it returns Some; a failure shows the URL and the console.
    pub fn wait<V>(&self, what: &str, mut probe: impl FnMut() -> Result<Option<V>>) -> Result<V> {
        let mut found = None;
        let waited = wait_until(
            what,
            WAIT_LIMIT,
            || {
                found = probe()?;
                Ok(found.is_some())
            },
            |done| *done,
        );
        if let Err(e) = waited {
            let _ = self.screenshot("failed");
            bail!(
                "{e:#}\nat {}\nbrowser console:\n{}",
                self.current_url().unwrap_or_default(),
                self.console().unwrap_or_default()
            );
        }
        Ok(found.expect("the wait ends only once found"))
    }

    /// Whether `element` takes space on the page and is not hidden.
    pub fn displayed(&self, element: &Element) -> Result<bool> {
        let shown = self.execute(
            "const e = arguments[0]; return e.getClientRects().length > 0 \
             && getComputedStyle(e).visibility !== 'hidden';",
            json!([{ ELEMENT_KEY: element.0 }]),
        )?;
        Ok(shown.as_bool().unwrap_or(false))
    }

    /// Waits for `css` and clicks it.
    pub fn click(&self, css: &str) -> Result<()> {
        let element = self.wait_for(css)?;
        self.click_element(&element)
    }

    /// Clicks `element` after scrolling it to the middle of the window (at the top, a
    /// sticky table header would take the click).
    pub fn click_element(&self, element: &Element) -> Result<()> {
        self.execute(
            "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});",
            json!([{ ELEMENT_KEY: element.0 }]),
        )?;
        let answer = self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(&json!({})),
        )?;
        check_error(&answer, "click")
    }

    /// Waits for `css`, clears it and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.wait_for(css)?;
        let cleared = self.command(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(&json!({})),
        )?;
        check_error(&cleared, "clear")?;
        let typed = self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(&json!({ "text": text })),
        )?;
        check_error(&typed, "type")
    }

    /// Waits for `css` and returns its rendered text. Found and read in one script in the
    /// page: live views replace their elements as events arrive, and an element found in
    /// one WebDriver call may be gone (stale) by the next.
    pub fn text(&self, css: &str) -> Result<String> {
        self.wait(&format!("`{css}` shown"), || {
            let text = self.execute(
                "const e = document.querySelector(arguments[0]); \
                 return e && e.getClientRects().length ? e.innerText : null;",
                json!([css]),
            )?;
            Ok(text.as_str().map(str::to_string))
        })
    }

    pub fn element_text(&self, element: &Element) -> Result<String> {
        let text = self.command("GET", &format!("/element/{}/text", element.0), None)?;
        check_error(&text, "text")?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// An element's attribute (`href`, `data-client-id`, ...), if it has it.
    pub fn attribute(&self, element: &Element, name: &str) -> Result<Option<String>> {
        let value = self.command(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )?;
        Ok(value.as_str().map(str::to_string))
    }

    /// Picks the option of the `<select>` at `css` whose value is `value`.
    pub fn select(&self, css: &str, value: &str) -> Result<()> {
        self.click(&format!("{css} option[value=\"{value}\"]"))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; returns
    /// what it returns.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value> {
        let value = self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )?;
        check_error(&value, "execute")?;
        Ok(value)
    }

    /// Runs `script` asynchronously: it ends by calling `arguments[arguments.length - 1]`
    /// with its result (e.g. after a `fetch`).
    pub fn execute_async(&self, script: &str, args: Value) -> Result<Value> {
        let value = self.command(
            "POST",
            "/execute/async",
            Some(&json!({ "script": script, "args": args })),
        )?;
        check_error(&value, "execute_async")?;
        Ok(value)
    }

    /// Saves the window as `target/gui-screenshots/<test>-<name>.png`; returns the path.
    pub fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let shot = self.command("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().context("screenshot is base64 text")?)?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Logs in through the login form and waits for the app to leave it.
    pub fn login(&self, user: &str, password: &str) -> Result<()> {
        self.goto("#/login")?;
        self.type_into("[data-test=login-user]", user)?;
        self.type_into("[data-test=login-password]", password)?;
        self.click("[data-test=login-submit]")?;
        self.wait_for("[data-test=topbar]")?;
        self.wait_for_text("[data-test=session-user]", user)?;
        Ok(())
    }

    /// The browser's console messages so far (what a failing test shows).
    pub fn console(&self) -> Result<String> {
        let log = self.command("POST", "/se/log", Some(&json!({ "type": "browser" })))?;
        Ok(log
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default())
    }

    /// Every cookie of the current page's site, deleted (as a browser that forgot them).
    pub fn delete_cookies(&self) -> Result<()> {
        self.command("DELETE", "/cookie", None)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; chromedriver itself is killed by its `Proc`.
        let _ = http(
            self.driver_port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// `target/gui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target tmp dir is inside target/")
        .join("gui-screenshots")
}

/// A WebDriver error answer (`{"error","message"}`) as a Rust error.
fn check_error(value: &Value, what: &str) -> Result<()> {
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        bail!(
            "{what}: {error}: {}",
            value["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// One HTTP/1.1 exchange with chromedriver on loopback; returns the JSON answer.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let body = body
        .map(serde_json::to_vec)
        .transpose()?
        .unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    // chromedriver keeps the connection open whatever the request says: read the head,
    // then exactly Content-Length bytes.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let (split, length) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("{method} {path}: chromedriver closed the connection mid-answer");
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .context("chromedriver's answer has no Content-Length")?;
            break (split, length);
        }
    };
    while answer.len() < split + 4 + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("{method} {path}: chromedriver's answer ended early");
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let json = &answer[split + 4..split + 4 + length];
    if json.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(json).with_context(|| {
        format!(
            "{method} {path}: chromedriver answered non-JSON: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(500)])
        )
    })
}
