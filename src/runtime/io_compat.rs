//! The glue between glommio's futures-io sockets and tokio-io consumers (h2, hyper):
//! TLS via futures-rustls on the glommio stream, then [`TokioCompat`] on top.
//!
//! `tokio_util::compat` hands the inner reader `ReadBuf::initialize_unfilled()`, and h2
//! (through tokio_util's codec) builds a fresh `ReadBuf` over its buffer's spare capacity
//! on every read, so every read zeroed the whole spare capacity first: at least 8 KiB per
//! read, and every idle agent's 8 KiB read buffer made resident by the zeroing alone.
//! [`TokioCompat`] reads into one scratch buffer per thread instead and copies out only the
//! bytes that arrived, so an idle connection's buffers stay as small as its traffic.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use tokio::io::ReadBuf;

pub type ServerTls = futures_rustls::server::TlsStream<TcpStream>;
pub type ServerIo = TokioCompat<ServerTls>;

/// Largest read handed to the TLS layer at once: one full TLS record of plaintext, so a
/// read never stops short of a record rustls has already decrypted.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

pub fn tokio_io(tls: ServerTls) -> ServerIo {
    TokioCompat::new(tls)
}

/// A futures-io stream seen as a tokio-io stream, without zeroing the reader's buffer.
pub struct TokioCompat<T> {
    inner: T,
}

impl<T> TokioCompat<T> {
    pub fn new(inner: T) -> Self {
        Self { inner }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> tokio::io::AsyncRead for TokioCompat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(SCRATCH_BYTES);
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let inner = Pin::new(&mut self.inner);
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => copy_read(inner, cx, &mut scratch[..want], buf),
            // Only reachable if a reader polls another TokioCompat from inside its own read;
            // a private buffer keeps that correct, if slower.
            Err(_) => copy_read(inner, cx, &mut vec![0; want], buf),
        })
    }
}

fn copy_read<T: AsyncRead>(
    inner: Pin<&mut T>,
    cx: &mut Context<'_>,
    scratch: &mut [u8],
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    match inner.poll_read(cx, scratch) {
        Poll::Ready(Ok(n)) => {
            buf.put_slice(&scratch[..n]);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

impl<T: AsyncWrite + Unpin> tokio::io::AsyncWrite for TokioCompat<T> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead as _, AsyncReadExt};

    /// A reader that hands out its bytes in fixed slices, like a socket under TLS.
    struct Chunks {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn reads_arrive_whole_and_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for step in [1, 7, 4096, SCRATCH_BYTES, SCRATCH_BYTES * 3] {
            let mut io = TokioCompat::new(Chunks {
                data: data.clone(),
                at: 0,
                step,
            });
            let mut out = Vec::new();
            futures::executor::block_on(io.read_to_end(&mut out)).unwrap();
            assert_eq!(out, data, "step {step}");
        }
    }

    #[test]
    fn a_read_fills_only_what_arrived() {
        let mut io = TokioCompat::new(Chunks {
            data: vec![9; 10],
            at: 0,
            step: 3,
        });
        let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        let mut buf = ReadBuf::uninit(&mut storage);
        let waker = futures::task::noop_waker();
        let poll = Pin::new(&mut io).poll_read(&mut Context::from_waker(&waker), &mut buf);
        assert!(matches!(poll, Poll::Ready(Ok(()))));
        assert_eq!(buf.filled(), &[9, 9, 9]);
        assert_eq!(
            buf.initialized().len(),
            3,
            "nothing beyond the bytes read was touched"
        );
    }
}
