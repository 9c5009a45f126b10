//! A small HTTPS client for the frontend's GUI/API port, pinned to the deployment CA:
//! one keep-alive HTTP/1.1 connection, so what it measures is the server's latency, not
//! a TCP + TLS handshake per request.
//!
//! The one API client of the workspace's tools: tests/common includes this file
//! (`#[path]`) for its blocking `Api`, so it uses only crates both have and nothing
//! else of loadgen's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;

/// Where the API is and who to be there.
#[derive(Clone)]
pub struct ApiTarget {
    pub host: String,
    pub port: u16,
    pub ca: Vec<CertificateDer<'static>>,
    /// (user, password) for Basic authentication; None sends no credentials.
    pub auth: Option<(String, String)>,
}

impl ApiTarget {
    /// `https://HOST:PORT[/]`.
    pub fn parse(
        url: &str,
        ca: &[CertificateDer<'static>],
        user: &str,
        password: &str,
    ) -> Result<Self> {
        let rest = url
            .strip_prefix("https://")
            .context("API URL must start with https://")?;
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .context("API URL needs a port")?;
        Ok(Self {
            host: host.to_string(),
            port: port.parse()?,
            ca: ca.to_vec(),
            auth: Some((user.into(), password.into())),
        })
    }

    /// The Authorization header value for `auth`, if any.
    pub fn authorization(&self) -> Option<String> {
        let (user, password) = self.auth.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {token}"))
    }
}

/// One HTTP/1.1 connection to the API port, over TLS pinned to the deployment CA: how
/// every API client here connects (keep-alive requests, the live watch's stream). Its
/// driver runs on the current tokio runtime until the connection closes.
pub async fn connect_http1<B>(target: &ApiTarget) -> Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = packhunt::tls::client::api_client_config(&target.ca)?;
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

pub struct ApiClient {
    target: ApiTarget,
    send: SendRequest<Full<Bytes>>,
    auth: Option<String>,
}

impl ApiClient {
    pub async fn connect(target: &ApiTarget) -> Result<Self> {
        let send = connect_http1(target).await?;
        Ok(Self {
            target: target.clone(),
            send,
            auth: target.authorization(),
        })
    }

    /// One request; returns status, body and how long it took.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes, Duration)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.target.host);
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        // The API takes only JSON bodies on changes.
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let started = Instant::now();
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body, started.elapsed()))
    }

    /// Schedules a collection; returns the flow id.
    pub async fn collect(&mut self, client_id: &str, artifacts: &[&str]) -> Result<String> {
        self.collect_request(client_id, serde_json::json!({ "artifacts": artifacts }))
            .await
    }

    /// Schedules a collection from a whole request body (artifacts, parameters, limits);
    /// returns the flow id.
    pub async fn collect_request(
        &mut self,
        client_id: &str,
        request: serde_json::Value,
    ) -> Result<String> {
        let body = serde_json::to_vec(&request)?;
        let (status, answer, _) = self
            .request(
                "POST",
                &format!("/api/v1/clients/{client_id}/collections"),
                Some(body),
            )
            .await?;
        if status != 200 {
            bail!(
                "collection for {client_id} refused: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&answer)?;
        Ok(v["flow_id"]
            .as_str()
            .context("flow_id in answer")?
            .to_string())
    }
}
