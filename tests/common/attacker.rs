//! Hostile peers of the agent port, built from h2's client and rustls over real TCP
//! sockets: stalled uploads, task streams with a body, silent or half ClientHellos, and
//! raw HTTP/2 frame floods written byte for byte.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type AgentTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the agent port from `source` (e.g. 127.0.0.2 on loopback).
pub async fn tls_connect_from(
    source: IpAddr,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<AgentTls> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket
        .connect(SocketAddr::new("127.0.0.1".parse()?, port))
        .await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    Ok(tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?)
}

/// An HTTP/2 client on a fresh agent connection; its connection task runs on the
/// current tokio runtime.
pub async fn h2_client(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<h2::client::SendRequest<Bytes>> {
    let stream = super::agent_tls_connect(port, tls).await?;
    let (send, conn) = h2::client::handshake(stream).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send.ready().await?)
}

/// How each stalled upload stream ended, as the attacker saw it: its status, or 0 for a
/// reset or a broken connection.
#[derive(Clone, Default)]
pub struct Outcomes(pub Arc<Mutex<Vec<u16>>>);

impl Outcomes {
    pub fn ended(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.0.lock().unwrap().clone()
    }
}

/// Opens `streams` upload requests on one new connection that send their headers and
/// then, if `one_byte`, a single DATA byte, and never anything more. The request bodies
/// are held open (kept in the returned list) until dropped; each stream's end is
/// recorded in `outcomes`.
pub async fn stalled_uploads(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    streams: usize,
    one_byte: bool,
    outcomes: &Outcomes,
) -> Result<Vec<h2::SendStream<Bytes>>> {
    let mut send = h2_client(port, tls).await?;
    let mut bodies = Vec::new();
    for _ in 0..streams {
        send = send.ready().await?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "https://127.0.0.1:{port}{}",
                packhunt::protocol::UPLOAD_PATH
            ))
            .header("content-length", "1000")
            .body(())?;
        let (response, mut body) = send.send_request(request, false)?;
        if one_byte {
            body.send_data(Bytes::from_static(b"\x00"), false)?;
        }
        bodies.push(body);
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let status = match response.await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            };
            outcomes.0.lock().unwrap().push(status);
        });
    }
    Ok(bodies)
}

/// HTTP/2 frame types and flags the floods use (RFC 9113 6).
pub mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// A header block for `GET /` (HPACK: static-table entries and a literal authority).
pub fn get_root_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x41, 9];
    block.extend_from_slice(b"127.0.0.1");
    block
}

pub fn encode_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A raw HTTP/2 peer over an agent TLS connection: writes whatever frames it is given,
/// and reads the server's frames on a task of its own (so the server's answers never
/// back up), noting the GOAWAY's error code if one comes.
pub struct RawFrames {
    writer: tokio::io::WriteHalf<AgentTls>,
    goaway: tokio::sync::watch::Receiver<Option<u32>>,
}

impl RawFrames {
    /// Connects, sends the preface and an empty SETTINGS.
    pub async fn connect(port: u16, tls: Arc<rustls::ClientConfig>) -> Result<Self> {
        let stream = super::agent_tls_connect(port, tls).await?;
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, goaway) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            let mut header = [0u8; 9];
            loop {
                if reader.read_exact(&mut header).await.is_err() {
                    // Closed without (more) frames: say so with an impossible code.
                    let seen = *tx.borrow();
                    let _ = tx.send(seen.or(Some(u32::MAX)));
                    return;
                }
                let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                let mut payload = vec![0u8; len];
                if reader.read_exact(&mut payload).await.is_err() {
                    let seen = *tx.borrow();
                    let _ = tx.send(seen.or(Some(u32::MAX)));
                    return;
                }
                if header[3] == frame::GOAWAY && payload.len() >= 8 {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    let _ = tx.send(Some(code));
                }
            }
        });
        let mut raw = Self { writer, goaway };
        raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        raw.send(frame::SETTINGS, 0, 0, &[]).await?;
        Ok(raw)
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).await?;
        Ok(())
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<()> {
        self.write_all(&encode_frame(kind, flags, stream, payload))
            .await
    }

    /// Writes `frames` (already encoded) in batches until done or the server stops
    /// taking them (closed the connection); returns how many bytes went out.
    pub async fn flood(&mut self, frames: &[u8]) -> usize {
        let mut sent = 0;
        for chunk in frames.chunks(16 * 1024) {
            if self.writer.write_all(chunk).await.is_err() || self.writer.flush().await.is_err() {
                break;
            }
            sent += chunk.len();
            if self.goaway.borrow().is_some() {
                break;
            }
        }
        sent
    }

    /// The GOAWAY error code the server sent (u32::MAX: closed without one), waiting
    /// up to `limit`.
    pub async fn goaway(&mut self, limit: Duration) -> Result<u32> {
        let wait = self.goaway.wait_for(|code| code.is_some());
        let code = tokio::time::timeout(limit, wait)
            .await
            .context("no GOAWAY and no close")??;
        Ok(code.expect("waited for Some"))
    }
}

/// HTTP/2 ENHANCE_YOUR_CALM (RFC 9113 7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The resident set of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}
