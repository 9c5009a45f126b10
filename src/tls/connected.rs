//! A server-side TLS connection as tonic takes it: the stream, what the server learned of
//! its peer in the handshake (tonic's connect info, read by each call), and whatever the
//! server holds for as long as the connection is open (a connection slot, say).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct TlsConnected<I, G = ()> {
    inner: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    info: I,
    _held: G,
}

impl<I, G> TlsConnected<I, G> {
    pub fn new(
        inner: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        info: I,
        held: G,
    ) -> Self {
        Self {
            inner,
            info,
            _held: held,
        }
    }
}

impl<I, G> tonic::transport::server::Connected for TlsConnected<I, G>
where
    I: Clone + Send + Sync + 'static,
{
    type ConnectInfo = I;
    fn connect_info(&self) -> I {
        self.info.clone()
    }
}

impl<I: Unpin, G: Unpin> AsyncRead for TlsConnected<I, G> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: Unpin, G: Unpin> AsyncWrite for TlsConnected<I, G> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
