//! A live-watch client for tests: one `GET /api/v1/events/watch` over HTTPS/1.1, its
//! ndjson body read line by line on demand.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;

use super::Deployment;

/// How long a line may take to arrive before the test fails (a hang, not a timing).
pub const LINE_LIMIT: Duration = Duration::from_secs(30);

/// One watch request, its body read line by line on demand (between reads nothing
/// drives the connection, so an unread watcher applies TCP backpressure).
pub struct Watch {
    rt: tokio::runtime::Runtime,
    pub status: u16,
    pub content_type: String,
    body: hyper::body::Incoming,
    buffered: Vec<u8>,
}

impl Watch {
    pub fn open(deployment: &Deployment, host: &str, port: u16, path: &str) -> Result<Watch> {
        let ca = packhunt::config::ClientConfig::load(&deployment.client_config())?
            .client
            .ca_certificate;
        let target = super::api_client::ApiTarget {
            host: host.to_string(),
            port,
            ca,
            auth: Some(("admin".into(), super::ADMIN_PASSWORD.into())),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let response = rt.block_on(async {
            let mut send = super::api_client::connect_http1::<Empty<Bytes>>(&target).await?;
            let request = hyper::Request::get(path)
                .header("host", format!("{host}:{port}"))
                .header("authorization", target.authorization().context("auth")?)
                .body(Empty::<Bytes>::new())?;
            let exchange = send.send_request(request);
            anyhow::Ok(tokio::time::timeout(LINE_LIMIT, exchange).await??)
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Watch {
            rt,
            status,
            content_type,
            body: response.into_body(),
            buffered: Vec::new(),
        })
    }

    /// The next line as JSON; None when the stream ended.
    pub fn next_line(&mut self) -> Result<Option<Value>> {
        let (body, buffered) = (&mut self.body, &mut self.buffered);
        let read = async {
            loop {
                if let Some(at) = buffered.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffered.drain(..=at).collect();
                    return Ok(Some(serde_json::from_slice(&line).with_context(|| {
                        format!("not JSON: {}", String::from_utf8_lossy(&line))
                    })?));
                }
                match body.frame().await {
                    Some(frame) => {
                        if let Ok(data) = frame?.into_data() {
                            buffered.extend_from_slice(&data);
                        }
                    }
                    None if buffered.is_empty() => return Ok(None),
                    None => bail!("stream ended mid-line"),
                }
            }
        };
        self.rt
            .block_on(async { tokio::time::timeout(LINE_LIMIT, read).await })
            .context("no line within the limit")?
    }

    /// The next `n` lines, which must all be events.
    pub fn events(&mut self, n: usize) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for _ in 0..n {
            let line = self.next_line()?.context("stream ended early")?;
            ensure!(line.get("end").is_none(), "ended: {line}");
            out.push(line);
        }
        Ok(out)
    }

    /// The whole body as text (an error answer).
    pub fn error_text(self) -> Result<String> {
        let body = self
            .rt
            .block_on(async { tokio::time::timeout(LINE_LIMIT, self.body.collect()).await })??;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    }
}
