//! Goal: each limit that keeps a frontend stable, exceeded on purpose, gives the agent
//! the documented answer and shows in /metrics. Method: a frontend with tiny limits,
//! peers built in the test (raw HTTP/2 where a misbehaving agent is needed).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Deployment, RawAgent};
use packhunt::protocol::pb;

/// Replaces the value of each `key = ...` line of the generated server config, adding the
/// key under [limits] when the file does not have it.
fn set_limits(text: &mut String, keys: &[(&str, &str)]) {
    for (key, value) in keys {
        let line = format!("{key} = {value}");
        match text.lines().position(|l| l.split('=').next().map(str::trim) == Some(key)) {
            Some(i) => {
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                lines[i] = line;
                *text = lines.join("\n");
            }
            None => *text = text.replacen("[limits]\n", &format!("[limits]\n{line}\n"), 1),
        }
    }
}

/// Opens an upload whose body never finishes: it holds a concurrency permit.
async fn stalled_upload(port: u16, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<(h2::client::SendRequest<Bytes>, h2::SendStream<Bytes>)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    let (send, conn) = h2::client::handshake(stream).await?;
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://127.0.0.1:{port}{}", packhunt::protocol::UPLOAD_PATH))
        .header("content-type", packhunt::protocol::CONTENT_TYPE)
        .body(())?;
    let (_response, mut body) = send.clone().ready().await?.send_request(request, false)?;
    body.send_data(Bytes::from_static(&[0u8; 16]), false)?;
    Ok((send, body))
}

#[test]
fn uploads_beyond_the_concurrency_limit_wait_then_get_503_with_retry_after() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|t| {
        set_limits(t, &[("shards", "1"), ("concurrency", "1"), ("concurrency_wait_ms", "300")]);
    })?;
    assert_eq!(deployment.metric("packhunt_upload_concurrency_limit")?, 1);
    assert_eq!(deployment.metric("packhunt_upload_memory_bound_bytes")?, 5 * 1024 * 1024);
    // Connected (and its ClientInfo sent) before the permit is taken.
    let mut agent = RawAgent::connect(&deployment)?;
    let tls = packhunt::tls::client::agent_client_config(
        &packhunt::config::ClientConfig::load(&deployment.client_config())?.client.ca_certificate,
        agent.identity.rustls_cert_chain(),
        agent.identity.rustls_private_key(),
    )?;
    // A runtime with its own thread keeps the stalled connection alive in the background.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let stalled = rt.block_on(stalled_upload(deployment.agent_port, tls))?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(deployment.metric("packhunt_uploads_in_flight")?, 1, "the stalled upload holds the only permit");

    let info = pb::Upload { kind: Some(pb::upload::Kind::Info(pb::ClientInfo { hostname: "h".into(), os: "linux".into(), version: "t".into() })) };
    let started = std::time::Instant::now();
    let reply = agent.upload(&info)?;
    assert_eq!(reply.status, 503, "no permit within the wait");
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited for a permit first");
    let retry = reply.retry_after.expect("a Retry-After comes with the 503");
    assert!((2..=10).contains(&retry.as_secs()), "{retry:?}");
    assert_eq!(deployment.metric("packhunt_upload_rejections_total{reason=\"concurrency\"}")?, 1);

    // The permit comes back when the stalled upload goes away.
    drop(stalled);
    drop(rt);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.upload(&info)?.status, 200);
    assert_eq!(deployment.metric("packhunt_uploads_in_flight")?, 0);
    assert_eq!(deployment.metric("packhunt_upload_bytes_in_flight")?, 0);
    Ok(())
}
