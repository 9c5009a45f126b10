//! The HTTP/1.1 client of the HTTP sinks: one POST at a time from the sink's sender
//! thread, on a current-thread tokio runtime of its own (hyper's client, already in the
//! tree for the tests, so no second HTTP stack), over rustls for `https://`. A fresh
//! connection per batch: a batch is large, and nothing is left half-open across an
//! outage of the sink.
//!
//! Must not: retry (the sender decides), or run on an agent shard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::HttpTarget;
use crate::limits::{MAX_SINK_RESPONSE_BYTES, SINK_REQUEST_TIMEOUT};

/// A sink's answer, read whole (up to `MAX_SINK_RESPONSE_BYTES`).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, if the sink sent one.
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

pub struct HttpClient {
    runtime: tokio::runtime::Runtime,
    target: HttpTarget,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The sink's stop flag: a request in flight is abandoned once it is set.
    stop: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot start the HTTP client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the CA bundle {path}: {message}")]
    Roots { path: String, message: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// Where Debian and its derivatives keep the system's trusted roots.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl HttpClient {
    pub fn new(target: &HttpTarget, stop: Arc<AtomicBool>) -> Result<Self, HttpSetupError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HttpSetupError::Runtime)?;
        let tls = match target.url.tls {
            false => None,
            true => Some(tls_connector(target)?),
        };
        Ok(Self {
            runtime,
            target: target.clone(),
            tls,
            stop,
        })
    }

    /// POSTs `body` to the target's path + `suffix`; an error is a failed attempt
    /// (connect, TLS, timeout, broken answer), said in words for the log.
    pub fn post(&self, suffix: &str, content_type: &str, body: Vec<u8>) -> Result<Answer, String> {
        let request = self.request(suffix, content_type, body)?;
        self.runtime.block_on(async {
            tokio::select! {
                answer = tokio::time::timeout(SINK_REQUEST_TIMEOUT, self.send(request)) => {
                    let late = || format!("no answer within {SINK_REQUEST_TIMEOUT:?}");
                    answer.unwrap_or_else(|_| Err(late()))
                }
                () = self.stopped() => Err("the sink is stopping".into()),
            }
        })
    }

    async fn stopped(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(crate::limits::SINK_POLL_INTERVAL).await;
        }
    }

    fn request(
        &self,
        suffix: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let url = &self.target.url;
        let host = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let mut builder = http::Request::post(url.path_with(suffix))
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, content_type);
        for (name, value) in &self.target.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<Answer, String> {
        let url = &self.target.url;
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", url.host, url.port))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", url.host))?;
                exchange(TokioIo::new(stream), request).await
            }
        }
    }
}

async fn exchange<IO>(io: IO, request: http::Request<Full<Bytes>>) -> Result<Answer, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP request: {e}"));
    let answer = match response {
        Ok(response) => read_answer(response).await,
        Err(e) => Err(e),
    };
    driver.abort();
    answer
}

async fn read_answer(response: http::Response<hyper::body::Incoming>) -> Result<Answer, String> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = Limited::new(response.into_body(), MAX_SINK_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

fn tls_connector(
    target: &HttpTarget,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), HttpSetupError> {
    let path = target
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| SYSTEM_CA_BUNDLE.to_string());
    let roots_err = |message: String| HttpSetupError::Roots {
        path: path.clone(),
        message,
    };
    let pem = std::fs::read(&path).map_err(|e| roots_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| roots_err(e.to_string()))?;
        // A bundle may carry a certificate rustls cannot use; the others still serve.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(roots_err("no usable certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(target.url.host.clone())
        .map_err(|e| HttpSetupError::Tls(format!("`{}`: {e}", target.url.host)))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}
