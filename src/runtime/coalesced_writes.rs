//! A socket whose writes wait for the next flush and then go out as one `send`.
//!
//! Under TLS every record was its own `send()`: a reconnecting agent cost the server ten
//! of them (the handshake flight's records, the session tickets, SETTINGS, SETTINGS ACK,
//! WINDOW_UPDATE, the task stream's headers, Hello, the facts answer), and on loopback
//! each one also runs the peer's receive path on the sender's CPU (tuning.md, P6). Both
//! layers above already say when a batch is complete: rustls's handshake and h2 flush
//! after each flight of records or frames. So writes are copied into one buffer and sent
//! at `poll_flush` (or when `COALESCED_WRITE_MAX_BYTES` would be passed, so a writer that
//! never flushes still makes progress).
//!
//! An idle connection keeps no buffer: it is freed once everything is sent. Bytes still
//! unsent when the stream is dropped (a TLS alert written on a failed handshake, with no
//! flush after it) get one non-blocking `send` so the peer still learns why.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

use crate::limits::COALESCED_WRITE_MAX_BYTES;

pub struct CoalescedWrites<S: AsRawFd> {
    inner: S,
    /// Written, not yet sent; `sent` of them are gone already.
    buffer: Vec<u8>,
    sent: usize,
}

impl<S: AsRawFd> CoalescedWrites<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
            sent: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn unsent(&self) -> usize {
        self.buffer.len() - self.sent
    }
}

impl<S: AsRawFd + AsyncWrite + Unpin> CoalescedWrites<S> {
    /// Sends what is buffered; ready once all of it is gone.
    fn poll_send_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buffer.len() {
            let rest = &self.buffer[self.sent..];
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Freed rather than kept: most connections are idle between rare small writes.
        self.buffer = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes without passing the bound, sending first if needed.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.unsent() > 0 && self.unsent() + len > COALESCED_WRITE_MAX_BYTES {
            return self.poll_send_buffered(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsRawFd + AsyncRead + Unpin> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsRawFd + AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        futures::ready!(this.poll_room(cx, buf.len()))?;
        if this.unsent() == 0 && buf.len() >= COALESCED_WRITE_MAX_BYTES {
            // Nothing to join it with: a copy would only cost.
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        futures::ready!(this.poll_room(cx, total.min(COALESCED_WRITE_MAX_BYTES)))?;
        let mut taken = 0;
        for buf in bufs {
            // Whole slices only past the first, so a caller's record is never split
            // across a bound it did not ask for; the first is always taken.
            if taken > 0 && this.unsent() + buf.len() > COALESCED_WRITE_MAX_BYTES {
                break;
            }
            this.buffer.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        futures::ready!(this.poll_send_buffered(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        futures::ready!(this.poll_send_buffered(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: AsRawFd> Drop for CoalescedWrites<S> {
    fn drop(&mut self) {
        let rest = &self.buffer[self.sent..];
        if rest.is_empty() {
            return;
        }
        // SAFETY: the fd is the inner socket's, still open (it closes when `inner` drops,
        // after this); `rest` is a valid slice for the call's duration. MSG_DONTWAIT: a
        // best effort that never blocks the executor; MSG_NOSIGNAL: a closed peer is an
        // error return, not SIGPIPE.
        unsafe {
            libc::send(
                self.inner.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// A connected pair on loopback: (the side under test, the peer).
    async fn pair() -> (CoalescedWrites<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = glommio::spawn_local(async move { TcpStream::connect(addr).await });
        let accepted = listener.accept().await.unwrap();
        let peer = connect.await.unwrap();
        (CoalescedWrites::new(accepted), peer)
    }

    /// What the peer can read within a short wait (nothing: empty).
    async fn readable(peer: &mut TcpStream, max: usize) -> Vec<u8> {
        peer.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0; max];
        match peer.read(&mut buf).await {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    fn executor() -> glommio::LocalExecutor {
        glommio::LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .make()
            .unwrap()
    }

    /// Goal: writes are held until a flush and then arrive whole and in order, and the
    /// buffer is freed once sent. Method: two writes (one vectored), a read before and
    /// after the flush.
    #[test]
    fn writes_wait_for_the_flush_and_arrive_in_order() {
        executor().run(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"hello ").await.unwrap();
            let n = ours
                .write_vectored(&[io::IoSlice::new(b"wor"), io::IoSlice::new(b"ld")])
                .await
                .unwrap();
            assert_eq!(n, 5);
            assert!(
                readable(&mut peer, 64).await.is_empty(),
                "nothing before the flush"
            );
            ours.flush().await.unwrap();
            let mut got = Vec::new();
            while got.len() < 11 {
                got.extend(readable(&mut peer, 64).await);
            }
            assert_eq!(got, b"hello world");
            assert_eq!(ours.buffer.capacity(), 0, "freed once sent");
        });
    }

    /// Goal: a writer that never flushes still gets its bytes out once the bound would be
    /// passed, and a large write goes straight through. Method: writes past the bound,
    /// read by the peer without any flush.
    #[test]
    fn the_bound_sends_without_a_flush() {
        executor().run(async {
            let (mut ours, mut peer) = pair().await;
            let chunk = vec![7u8; COALESCED_WRITE_MAX_BYTES / 2 + 1];
            ours.write_all(&chunk).await.unwrap();
            ours.write_all(&chunk).await.unwrap();
            let first = readable(&mut peer, COALESCED_WRITE_MAX_BYTES * 2).await;
            assert!(!first.is_empty(), "the first chunk was sent to make room");
            let big = vec![9u8; COALESCED_WRITE_MAX_BYTES];
            ours.flush().await.unwrap();
            ours.write_all(&big).await.unwrap();
            let mut total = first.len();
            while total < chunk.len() * 2 + big.len() {
                let got = readable(&mut peer, 1 << 20).await;
                assert!(!got.is_empty(), "everything arrives without another flush");
                total += got.len();
            }
        });
    }

    /// Goal: bytes written but never flushed still reach the peer when the stream is
    /// dropped (a TLS alert before closing). Method: write, drop, read to EOF.
    #[test]
    fn unsent_bytes_go_out_on_drop() {
        executor().run(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"alert").await.unwrap();
            drop(ours);
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"alert");
        });
    }
}
