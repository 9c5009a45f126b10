//! A browser's view of the GUI/API for tests: requests with any headers (cookies,
//! Origin, CSRF token, content type), answers with their headers, and a logged-in
//! session that sends what the GUI's own fetches send.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::Deployment;

/// A request that takes longer is a failure, not a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// One answer, headers included.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The GUI's origin as a browser that loaded it sends it.
pub fn origin(deployment: &Deployment) -> String {
    format!("https://{}:{}", deployment.host, deployment.gui_port)
}

/// Sends one request on a fresh connection, with `Host` as a browser sets it.
pub fn send(
    deployment: &Deployment,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Answer> {
    let target = deployment.api().without_auth().target()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let host = format!("{}:{}", deployment.host, deployment.gui_port);
    rt.block_on(async {
        let exchange = async {
            let mut send = super::api_client::connect_http1::<Full<Bytes>>(&target).await?;
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", &host);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            let response = send.send_request(request).await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await?.to_bytes().to_vec();
            anyhow::Ok(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_LIMIT, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {REQUEST_LIMIT:?}"))?
    })
}

/// POSTs a login as the GUI's form does.
pub fn post_login(deployment: &Deployment, user: &str, password: &str) -> Result<Answer> {
    let body = serde_json::json!({ "user": user, "password": password });
    let origin = origin(deployment);
    send(
        deployment,
        "POST",
        "/api/v1/session",
        &[
            ("content-type", "application/json"),
            ("origin", &origin),
            ("x-requested-with", "packhunt"),
        ],
        Some(serde_json::to_vec(&body)?),
    )
}

/// A logged-in browser: its cookie and CSRF token.
pub struct GuiSession {
    /// `packhunt_session=<token>`, as the browser sends it back.
    pub cookie: String,
    pub csrf_token: String,
    /// What the login answered.
    pub login: Answer,
}

impl GuiSession {
    /// Logs in; fails unless the answer is 200 with a cookie.
    pub fn login(deployment: &Deployment, user: &str, password: &str) -> Result<GuiSession> {
        let login = post_login(deployment, user, password)?;
        anyhow::ensure!(
            login.status == 200,
            "login as {user}: {} {}",
            login.status,
            String::from_utf8_lossy(&login.body)
        );
        let set_cookie = login.header("set-cookie").context("no Set-Cookie")?;
        let cookie = set_cookie
            .split(';')
            .next()
            .context("empty Set-Cookie")?
            .to_string();
        let csrf_token = login.json()["csrf_token"]
            .as_str()
            .context("csrf_token")?
            .to_string();
        Ok(GuiSession {
            cookie,
            csrf_token,
            login,
        })
    }

    /// A request as the GUI's fetches send it: cookie, CSRF token, Origin, JSON body.
    pub fn request(
        &self,
        deployment: &Deployment,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer> {
        self.request_with(deployment, method, path, body, &[])
    }

    /// As `request`, with `headers` replacing (or, with an empty value, removing) the
    /// GUI's own.
    pub fn request_with(
        &self,
        deployment: &Deployment,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let origin = origin(deployment);
        let mut all: Vec<(&str, &str)> = vec![
            ("cookie", &self.cookie),
            ("x-csrf-token", &self.csrf_token),
            ("origin", &origin),
            ("x-requested-with", "packhunt"),
        ];
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        for (name, value) in headers {
            all.retain(|(n, _)| n != name);
            if !value.is_empty() {
                all.push((name, value));
            }
        }
        let body = body.map(serde_json::to_vec).transpose()?;
        send(deployment, method, path, &all, body)
    }
}

/// Sends one request over HTTP/2, as a browser does (no `Host` header: the address is
/// in `:authority`; each cookie may come in its own `cookie` header).
pub fn send_h2(
    deployment: &Deployment,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Answer> {
    let ca = packhunt::config::ClientConfig::load(&deployment.client_config())?
        .client
        .ca_certificate;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (host, port) = (deployment.host.clone(), deployment.gui_port);
    rt.block_on(async {
        let exchange = async {
            let mut config = (*packhunt::tls::client::api_client_config(&ca)?).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await?;
            let (client, conn) = h2::client::handshake(tls).await?;
            tokio::spawn(conn);
            let mut client = client.ready().await?;
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(format!("https://{host}:{port}{path}"));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let body = body.unwrap_or_default();
            let (response, mut stream) = client.send_request(request.body(())?, body.is_empty())?;
            if !body.is_empty() {
                stream.send_data(Bytes::from(body), true)?;
            }
            let response = response.await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                body.flow_control().release_capacity(chunk.len())?;
                bytes.extend_from_slice(&chunk);
            }
            anyhow::Ok(Answer {
                status,
                headers,
                body: bytes,
            })
        };
        tokio::time::timeout(REQUEST_LIMIT, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {REQUEST_LIMIT:?}"))?
    })
}
