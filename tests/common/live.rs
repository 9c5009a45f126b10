//! A server-sent-events client for tests: one `GET /api/v1/live/...` over HTTPS/1.1 with
//! Basic auth, its `text/event-stream` body read event by event on demand.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;

use super::Deployment;

/// How long an event may take to arrive before the test fails (a hang, not a timing).
pub const EVENT_LIMIT: Duration = Duration::from_secs(30);

/// One block of the stream (the text between blank lines).
#[derive(Debug, Clone, PartialEq)]
pub enum SseBlock {
    /// `data:` lines, parsed as JSON; `event` is the `event:` field if any.
    Data { event: Option<String>, json: Value },
    /// Only `:` comment lines (keepalives).
    Comment(String),
    /// `retry: <ms>`.
    Retry(u64),
}

pub struct LiveStream {
    rt: tokio::runtime::Runtime,
    pub status: u16,
    pub content_type: String,
    pub cache_control: String,
    body: hyper::body::Incoming,
    buffered: Vec<u8>,
}

impl LiveStream {
    /// Opens `path` on the deployment's GUI port as `admin`.
    pub fn open(deployment: &Deployment, path: &str) -> Result<LiveStream> {
        let api = deployment.api();
        let auth = api.auth.clone();
        Self::open_as(deployment, path, auth)
    }

    /// Opens `path` with the given Basic credentials (None: without).
    pub fn open_as(
        deployment: &Deployment,
        path: &str,
        auth: Option<(String, String)>,
    ) -> Result<LiveStream> {
        let target = super::Api {
            auth,
            ..deployment.api()
        }
        .target()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let response = rt.block_on(async {
            let mut send = super::api_client::connect_http1::<Empty<Bytes>>(&target).await?;
            let mut request = hyper::Request::get(path)
                .header("host", format!("{}:{}", target.host, target.port))
                .header("accept", "text/event-stream");
            if let Some(value) = target.authorization() {
                request = request.header("authorization", value);
            }
            let exchange = send.send_request(request.body(Empty::<Bytes>::new())?);
            anyhow::Ok(tokio::time::timeout(EVENT_LIMIT, exchange).await??)
        })?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        Ok(LiveStream {
            status: response.status().as_u16(),
            content_type: header("content-type"),
            cache_control: header("cache-control"),
            rt,
            body: response.into_body(),
            buffered: Vec::new(),
        })
    }

    /// The next block; None when the stream ended.
    pub fn next_block(&mut self) -> Result<Option<SseBlock>> {
        let (body, buffered) = (&mut self.body, &mut self.buffered);
        let read = async {
            loop {
                if let Some(at) = buffered.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffered.drain(..at + 2).collect();
                    return parse_block(&String::from_utf8(block)?).map(Some);
                }
                match body.frame().await {
                    Some(frame) => {
                        if let Ok(data) = frame?.into_data() {
                            buffered.extend_from_slice(&data);
                        }
                    }
                    None if buffered.is_empty() => return Ok(None),
                    None => bail!("stream ended mid-event"),
                }
            }
        };
        self.rt
            .block_on(async { tokio::time::timeout(EVENT_LIMIT, read).await })
            .context("no event within the limit")?
    }

    /// The next `data:` event's JSON (skipping comments and retry fields).
    pub fn next_data(&mut self) -> Result<Value> {
        loop {
            match self.next_block()?.context("the stream ended")? {
                SseBlock::Data { json, .. } => return Ok(json),
                SseBlock::Comment(_) | SseBlock::Retry(_) => {}
            }
        }
    }

    /// Reads events until one satisfies `done` (within `limit`); returns it.
    pub fn wait_data(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let json = self.next_data()?;
            if done(&json) {
                return Ok(json);
            }
            last = json;
        }
        bail!("{what}: not within {limit:?}; last event: {last}")
    }

    /// The whole body as text (an error answer).
    pub fn error_text(self) -> Result<String> {
        let body = self
            .rt
            .block_on(async { tokio::time::timeout(EVENT_LIMIT, self.body.collect()).await })??;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    }
}

/// One event-stream block: `data:` lines joined with `\n`, `event:`, `retry:`, comments.
pub fn parse_block(block: &str) -> Result<SseBlock> {
    let (mut data, mut event, mut comments, mut retry) = (Vec::new(), None, Vec::new(), None);
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix(':') {
            comments.push(c.trim().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
        } else if let Some(e) = line.strip_prefix("event:") {
            event = Some(e.trim().to_string());
        } else if let Some(r) = line.strip_prefix("retry:") {
            retry = Some(r.trim().parse()?);
        } else {
            bail!("not an event-stream line: {line:?}");
        }
    }
    if !data.is_empty() {
        let text = data.join("\n");
        let json = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        return Ok(SseBlock::Data { event, json });
    }
    if let Some(ms) = retry {
        return Ok(SseBlock::Retry(ms));
    }
    Ok(SseBlock::Comment(comments.join("\n")))
}
