//! Helpers for the users and roles tests: calls made as a given user that report the
//! status without waiting for a streaming body, and `packhunt user` runs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::Deployment;

/// A request that takes longer is a failure, not a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// One answer: its status and, for a refusal, its `error` text.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub error: String,
}

/// `method path` as `user` (HTTP Basic), with `body` as JSON. A successful answer's body
/// is not read (live routes stream until the client goes); a refusal's is.
pub fn call_as(
    deployment: &Deployment,
    (user, password): (&str, &str),
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Outcome> {
    let target = deployment.api().without_auth().target()?;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let host = format!("{}:{}", deployment.host, deployment.gui_port);
    let body = match body {
        Some(v) => serde_json::to_vec(v)?,
        None => Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let exchange = async {
            let mut send = super::api_client::connect_http1::<Full<Bytes>>(&target).await?;
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", &host)
                .header("authorization", format!("Basic {credentials}"));
            if !body.is_empty() {
                request = request.header("content-type", "application/json");
            }
            let response = send
                .send_request(request.body(Full::new(Bytes::from(body)))?)
                .await?;
            let status = response.status().as_u16();
            let mut error = String::new();
            if status >= 400 {
                let bytes = response.into_body().collect().await?.to_bytes();
                let json: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                error = json["error"].as_str().unwrap_or_default().to_string();
            }
            anyhow::Ok(Outcome { status, error })
        };
        tokio::time::timeout(REQUEST_LIMIT, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {REQUEST_LIMIT:?}"))?
    })
}

/// What a `packhunt user ...` run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `packhunt user ARGS --config CONFIG`, with `stdin` as its standard input.
pub fn user_command(config: &Path, args: &[&str], stdin: Option<&str>) -> Result<Run> {
    let mut child = Command::new(super::packhunt_bin())
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        let mut input = child.stdin.take().context("stdin")?;
        if let Some(text) = stdin {
            // A refused command may exit before it reads its input; that is its answer,
            // not the helper's failure.
            match input.write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
    }
    let out = child.wait_with_output()?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
