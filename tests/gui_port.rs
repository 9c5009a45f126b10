//! Goal: no peer of the GUI/API port can hold a connection for nothing: one that sends
//! nothing is closed at the TLS accept deadline, one that sends part of a request's
//! headers at the header timeout, connections over the cap are closed at accept (and the
//! API works again once they are gone), each counted; and every state-changing request,
//! Basic-authenticated ones included, must be JSON and come from no other origin.
//! Method: a master with short GUI limits; raw TCP and TLS peers built in the test;
//! curl for requests with headers a browser would send.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{set_keys, wait_until, Deployment, ADMIN_PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST: &str = "gui_port";

fn short_gui_limits(text: &mut String) {
    set_keys(
        text,
        &[
            ("tls_accept_timeout_ms", "1000"),
            ("header_timeout_ms", "1000"),
            ("connection_idle_timeout_ms", "60000"),
            ("max_connections", "4"),
        ],
    );
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Reads until the server closes; how long that took. 10 s only stops a hung test.
async fn until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Err(_) => anyhow::bail!("still open after 10 s"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

fn closed(deployment: &Deployment, reason: &str) -> Result<u64> {
    deployment.metric(&format!(
        "packhunt_gui_connections_closed_total{{reason=\"{reason}\"}}"
    ))
}

#[test]
fn a_silent_peer_is_closed_at_the_tls_accept_deadline() -> Result<()> {
    let deployment = Deployment::start_with(short_gui_limits)?;
    let took = runtime()?.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", deployment.gui_port)).await?;
        until_closed(&mut tcp).await
    })?;
    // Closed by the 1 s deadline, not by chance; the default would be 10 s.
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert_eq!(closed(&deployment, "tls_timeout")?, 1);
    Ok(())
}

#[test]
fn a_peer_sending_part_of_its_headers_is_closed_at_the_header_timeout() -> Result<()> {
    let deployment = Deployment::start_with(|text| {
        short_gui_limits(text);
        // A busy machine's handshake must not meet the accept deadline first.
        set_keys(text, &[("tls_accept_timeout_ms", "10000")]);
    })?;
    let tls = common::secrets::gui_tls_http1(&deployment_ca(&deployment)?)?;
    let took = runtime()?.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", deployment.gui_port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        // A request line and one header, never the blank line that ends them.
        stream
            .write_all(b"GET /api/v1/clients HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await?;
        stream.flush().await?;
        until_closed(&mut stream).await
    })?;
    // The idle timeout is a minute: only the header timeout closes it this soon.
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert_eq!(closed(&deployment, "header_timeout")?, 1);
    assert_eq!(closed(&deployment, "idle_timeout")?, 0);
    Ok(())
}

#[test]
fn connections_over_the_cap_are_refused_and_the_api_works_once_they_close() -> Result<()> {
    let deployment = Deployment::start_with(|text| {
        short_gui_limits(text);
        // The held connections must outlive the test's checks.
        set_keys(text, &[("tls_accept_timeout_ms", "30000")]);
    })?;
    let rt = runtime()?;
    let held = rt.block_on(async {
        // Connect until one is closed at once: the server accepts in turn, so on a busy
        // machine a connection may still wait in the backlog when the next one comes.
        let mut held = Vec::new();
        for _ in 0..20 {
            let mut next =
                tokio::net::TcpStream::connect(("127.0.0.1", deployment.gui_port)).await?;
            let mut buf = [0u8; 16];
            match tokio::time::timeout(Duration::from_secs(2), next.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return anyhow::Ok(held),
                _ => held.push(next),
            }
        }
        anyhow::bail!("no connection refused after {} held", held.len())
    })?;
    assert!(held.len() >= 4, "refused with only {} held", held.len());
    // While the four are held, an API call is refused too.
    let short = deployment
        .api()
        .with_request_timeout(Duration::from_secs(5));
    assert!(short.get("/api/v1/clients").is_err(), "over the cap");
    drop(held);
    let api = deployment.api();
    let (status, _) = wait_until(
        "an API call from a fresh connection",
        Duration::from_secs(20),
        || Ok(api.get("/api/v1/clients").ok()),
        |answer| answer.is_some(),
    )?
    .context("answered")?;
    assert_eq!(status, 200);
    assert!(closed(&deployment, "over_cap")? >= 2);
    assert_eq!(closed(&deployment, "tls_timeout")?, 0);
    Ok(())
}

/// curl with Basic credentials and `headers`; (status, body).
fn curl(
    deployment: &Deployment,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-m", "20", "-X", method, "-d", body])
        .args(["-u", &format!("admin:{ADMIN_PASSWORD}")])
        .args(["-w", "\n%{http_code}"]);
    for header in headers {
        cmd.args(["-H", header]);
    }
    cmd.arg(format!("https://127.0.0.1:{}{path}", deployment.gui_port));
    let out = cmd.output().context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

#[test]
fn basic_authenticated_changes_must_be_json_from_no_other_origin() -> Result<()> {
    if Command::new("curl").arg("--version").output().is_err() {
        common::skip(TEST, "curl");
        return Ok(());
    }
    let deployment = Deployment::start()?;
    let path = "/api/v1/clients/C.0123456789abcdef/collections";
    let body = r#"{"artifacts":["Generic.Client.Info"]}"#;
    // curl's default for -d is a form: what a cross-site form would send.
    let (status, answer) = curl(&deployment, "POST", path, &[], body)?;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    let (status, answer) = curl(
        &deployment,
        "POST",
        path,
        &["Content-Type: text/plain"],
        body,
    )?;
    assert_eq!(status, 403, "{answer}");
    let json = "Content-Type: application/json";
    let (status, answer) = curl(
        &deployment,
        "POST",
        path,
        &[json, "Origin: https://evil.example"],
        body,
    )?;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("Origin"), "{answer}");
    // JSON from the GUI's own origin or from a script (no Origin) reaches the route: this
    // client never connected, so 404, not a refusal.
    let own = format!("Origin: https://127.0.0.1:{}", deployment.gui_port);
    for headers in [vec![json], vec![json, own.as_str()]] {
        let (status, answer) = curl(&deployment, "POST", path, &headers, body)?;
        assert_eq!(status, 404, "{headers:?}: {answer}");
    }
    assert!(
        deployment.metric("packhunt_gui_requests_refused_total{reason=\"content_type\"}")? >= 2
    );
    assert!(deployment.metric("packhunt_gui_requests_refused_total{reason=\"origin\"}")? >= 1);
    // The ordinary test client (JSON with its content type) is unaffected.
    let (status, _) = deployment.api().post(
        path,
        &serde_json::json!({"artifacts": ["Generic.Client.Info"]}),
    )?;
    assert_eq!(status, 404);
    Ok(())
}

fn deployment_ca(deployment: &Deployment) -> Result<String> {
    let client: packhunt::config::ClientFile =
        toml::from_str(&std::fs::read_to_string(deployment.client_config())?)?;
    Ok(client.client.ca_certificate)
}
