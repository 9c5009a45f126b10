//! A stream read through an observer: watchers (the agent port's ClientHello deadline and
//! frame-flood meter, the GUI port's header timeout) see every byte the layer above reads,
//! with no copy, and writes pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

/// What a watcher does with the bytes read through it.
pub trait ReadObserver {
    /// Every chunk read from the inner stream, in order.
    fn observe(&mut self, bytes: &[u8]);
    /// Once true, nothing more is read from the peer: reads stay pending and the
    /// connection's driver ends the connection.
    fn stop_reading(&self) -> bool {
        false
    }
}

pub struct ObservedRead<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> ObservedRead<S, O> {
    pub fn with(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin, O: ReadObserver + Unpin> AsyncRead for ObservedRead<S, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.observer.stop_reading() {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.observer.observe(&buf[..n]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, O: Unpin> AsyncWrite for ObservedRead<S, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
