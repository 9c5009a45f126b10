//! The client side of the agent protocol, one implementation for the real agent and for
//! loadgen: connect (TCP, mTLS, HTTP/2), open the task stream, post uploads.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::config::url::ServerUrl;
use crate::config::EnrolmentSecret;
use crate::limits::{
    AGENT_CONNECT_TIMEOUT, AGENT_UPLOAD_TIMEOUT, MAX_ACK_BYTES, TCP_KEEPALIVE_IDLE,
    TCP_KEEPALIVE_INTERVAL,
};
use crate::protocol::event_table::{TableDigest, EVENT_TABLE_HEADER};
use crate::protocol::framing::{self, FrameDecoder, FrameError};
use crate::protocol::{pb, CONTENT_TYPE, ENROLMENT_HEADER, TASKS_PATH, UPLOAD_PATH};

#[derive(Debug, thiserror::Error)]
pub enum CommsError {
    #[error("connect to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("TLS with {url}: {source}")]
    Tls { url: String, source: std::io::Error },
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("task stream: {0}")]
    Frame(#[from] FrameError),
    #[error("bad server name `{0}`")]
    ServerName(String),
    /// The runtime the connection was to run on stopped or its task failed.
    #[error("the connection's runtime: {0}")]
    Runtime(String),
}

/// An open connection to one frontend.
pub struct Connection {
    send: SendRequest<Bytes>,
    pub url: ServerUrl,
    pub connect_time: Duration,
    /// The deployment's enrolment secret, sent on every request when set.
    enrolment: Option<http::HeaderValue>,
}

/// The task stream of a connection: frames from the server, in order.
pub struct TaskStream {
    body: h2::RecvStream,
    decoder: FrameDecoder,
}

/// The server's answer to one upload.
#[derive(Debug, Clone)]
pub struct UploadReply {
    pub status: u16,
    pub ack: Option<pb::UploadAck>,
    /// The server's `Retry-After`, when it sent one (503).
    pub retry_after: Option<Duration>,
}

pub async fn connect(
    url: &ServerUrl,
    tls: Arc<rustls::ClientConfig>,
    local_ip: Option<IpAddr>,
) -> Result<(Connection, TaskStream), CommsError> {
    connect_holding(url, tls, local_ip, None).await
}

/// `connect`, telling the server which client event table the agent holds (its digest),
/// so an unchanged table is not sent again after Hello.
pub async fn connect_holding(
    url: &ServerUrl,
    tls: Arc<rustls::ClientConfig>,
    local_ip: Option<IpAddr>,
    event_table: Option<TableDigest>,
) -> Result<(Connection, TaskStream), CommsError> {
    connect_enrolled(url, tls, local_ip, event_table, None).await
}

/// `connect_holding`, presenting the deployment's enrolment secret (if it has one) on
/// the task stream and every upload.
pub async fn connect_enrolled(
    url: &ServerUrl,
    tls: Arc<rustls::ClientConfig>,
    local_ip: Option<IpAddr>,
    event_table: Option<TableDigest>,
    enrolment_secret: Option<&EnrolmentSecret>,
) -> Result<(Connection, TaskStream), CommsError> {
    let started = Instant::now();
    let enrolment = enrolment_secret.map(|s| {
        http::HeaderValue::from_str(s.as_str()).expect("a parsed secret is visible ASCII")
    });
    let fut = connect_inner(url, tls, local_ip, event_table, enrolment.clone());
    let (send, tasks) = tokio::time::timeout(AGENT_CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| CommsError::Timeout(AGENT_CONNECT_TIMEOUT))??;
    Ok((
        Connection {
            send,
            url: url.clone(),
            connect_time: started.elapsed(),
            enrolment,
        },
        tasks,
    ))
}

async fn connect_inner(
    url: &ServerUrl,
    tls: Arc<rustls::ClientConfig>,
    local_ip: Option<IpAddr>,
    event_table: Option<TableDigest>,
    enrolment: Option<http::HeaderValue>,
) -> Result<(SendRequest<Bytes>, TaskStream), CommsError> {
    let io_err = |source| CommsError::Connect {
        url: url.to_string(),
        source,
    };
    let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(io_err)?
        .next()
        .ok_or_else(|| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "host has no address",
            ))
        })?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_err)?;
    if let Some(ip) = local_ip {
        defer_port_choice(&socket);
        socket.bind(SocketAddr::new(ip, 0)).map_err(io_err)?;
    }
    let tcp = socket.connect(addr).await.map_err(io_err)?;
    tcp.set_nodelay(true).map_err(io_err)?;
    set_keepalive(&tcp).map_err(io_err)?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| CommsError::ServerName(url.host.clone()))?;
    let tls_stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|source| CommsError::Tls {
            url: url.to_string(),
            source,
        })?;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(256 * 1024)
        .handshake::<_, Bytes>(tls_stream)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await?;
    let mut request = http::Request::builder()
        .method("GET")
        .uri(format!("https://{}:{}{}", url.host, url.port, TASKS_PATH));
    if let Some(digest) = event_table {
        request = request.header(EVENT_TABLE_HEADER, digest.to_hex());
    }
    if let Some(secret) = enrolment {
        request = request.header(ENROLMENT_HEADER, secret);
    }
    let request = request.body(()).expect("static request parts are valid");
    let (response, _) = send.send_request(request, true)?;
    let response = response.await?;
    if response.status() != 200 {
        let message = "task stream refused".to_string();
        return Err(CommsError::Status {
            status: response.status().as_u16(),
            message,
        });
    }
    let tasks = TaskStream {
        body: response.into_body(),
        decoder: FrameDecoder::new(crate::limits::MAX_TASK_FRAME_BYTES),
    };
    Ok((send, tasks))
}

impl TaskStream {
    /// The next server message; None when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<pb::ServerMessage>, CommsError> {
        loop {
            if let Some(msg) = self.decoder.next_message::<pb::ServerMessage>()? {
                return Ok(Some(msg));
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.decoder.extend(&chunk);
                }
                None => return Ok(None),
            }
        }
    }
}

impl Connection {
    /// Posts one upload message and reads the ack.
    pub async fn upload(&mut self, upload: &pb::Upload) -> Result<UploadReply, CommsError> {
        self.post_raw(framing::encode(upload)).await
    }

    /// Posts raw bytes as an upload body (tests use it to send hostile bodies).
    pub async fn post_raw(&mut self, body: Bytes) -> Result<UploadReply, CommsError> {
        let fut = self.post_inner(body);
        tokio::time::timeout(AGENT_UPLOAD_TIMEOUT, fut)
            .await
            .map_err(|_| CommsError::Timeout(AGENT_UPLOAD_TIMEOUT))?
    }

    async fn post_inner(&mut self, body: Bytes) -> Result<UploadReply, CommsError> {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "https://{}:{}{}",
                self.url.host, self.url.port, UPLOAD_PATH
            ))
            .header("content-type", CONTENT_TYPE)
            .header("content-length", body.len());
        if let Some(secret) = &self.enrolment {
            request = request.header(ENROLMENT_HEADER, secret.clone());
        }
        let request = request.body(()).expect("static request parts are valid");
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(request, false)?;
        // The server may answer (413, 503) before it has read the body: whichever
        // comes first decides, and a refused body is not an error of ours.
        tokio::pin!(response);
        let response = tokio::select! {
            sent = send_body(&mut stream, body) => match sent {
                Ok(()) => response.await?,
                Err(e) => match tokio::time::timeout(Duration::from_secs(1), response).await {
                    Ok(Ok(r)) => r,
                    _ => return Err(e),
                },
            },
            r = &mut response => r?,
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = response.into_body();
        let mut decoder = FrameDecoder::new(MAX_ACK_BYTES);
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            decoder.extend(&chunk);
            if decoder.pending_bytes() > MAX_ACK_BYTES + 10 {
                break;
            }
        }
        let ack = decoder
            .next_frame()
            .ok()
            .flatten()
            .and_then(|b| pb::UploadAck::decode(b).ok());
        Ok(UploadReply {
            status,
            ack,
            retry_after,
        })
    }
}

/// Sends `body` respecting the peer's flow-control window.
async fn send_body(stream: &mut h2::SendStream<Bytes>, mut body: Bytes) -> Result<(), CommsError> {
    if body.is_empty() {
        stream.send_data(body, true)?;
        return Ok(());
    }
    while !body.is_empty() {
        stream.reserve_capacity(body.len());
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await;
        let n = match granted {
            Some(n) => n?,
            None => {
                return Err(CommsError::Status {
                    status: 0,
                    message: "stream closed while sending".into(),
                })
            }
        };
        if n == 0 {
            continue;
        }
        let chunk = body.split_to(n.min(body.len()));
        stream.send_data(chunk, body.is_empty())?;
    }
    Ok(())
}

/// The agent's own liveness check of its connection. The task stream is quiet for as long
/// as nobody tasks the agent, so without it a connection the frontend dropped without a
/// FIN (its host gone, a balancer's state lost, a loopback backlog drop under load) would
/// look open to the agent forever and it would never reconnect. Same timing as the
/// frontend's side of the socket.
fn set_keepalive(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

/// Lets `connect` pick the source port of a socket bound to a source address. Bound to
/// port 0 alone, the kernel must find a port free of any binding at bind time, a scan
/// that grows with every socket already bound: a simulated fleet of 19,000 agents on
/// one address spent a whole core there, connecting ~100 agents/s. Deferred, the port
/// only has to be unique for the destination. Best effort: without it, bind still works.
/// Public for loadgen, whose simulated agents bind source addresses the same way.
pub fn defer_port_choice(socket: &impl std::os::fd::AsFd) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd borrowed from `socket` and a c_int option value of the
    // size given.
    unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod keepalive_tests {
    use super::*;

    #[tokio::test]
    async fn agent_socket_probes_a_quiet_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, _peer) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let tcp = tcp.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(
            !sock.keepalive().unwrap(),
            "off by default, so the setting is ours"
        );
        set_keepalive(&tcp).unwrap();
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), TCP_KEEPALIVE_IDLE);
        assert_eq!(sock.keepalive_interval().unwrap(), TCP_KEEPALIVE_INTERVAL);
    }
}
