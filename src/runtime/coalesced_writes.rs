//! A socket whose flushed writes wait for the end of the connection task's poll and then
//! go out as one `send`.
//!
//! Under TLS every record was its own `send()`: a reconnecting agent cost the server ten
//! of them (the handshake flight's records, the session tickets, SETTINGS, SETTINGS ACK,
//! WINDOW_UPDATE, the task stream's headers, Hello, the facts answer), and on loopback
//! each one also runs the peer's receive path on the sender's CPU (tuning.md, P6). The
//! layers above say when a batch is complete: rustls's handshake and h2 flush after each
//! flight of records or frames, and several flights often follow each other within one
//! poll of the connection task (the tickets, then h2's SETTINGS; SETTINGS ACK, then a
//! stream's headers and first frame). So writes are copied into one buffer, a flush only
//! marks them due, and the task's [`SendAfterPoll`] sends once the task's poll returns:
//! one `send` per poll. All of a connection's socket I/O happens in that one task (h2 does
//! its I/O in the connection future), so nothing flushed waits past the poll that flushed
//! it. A close always sends first, and so does a write that would pass
//! `COALESCED_WRITE_MAX_BYTES` (a writer that never flushes still makes progress).
//!
//! An idle connection keeps no buffer: it is freed once everything is sent. Bytes still
//! unsent when the socket is dropped (a TLS alert written on a failed handshake, with no
//! flush after it) get one non-blocking `send` so the peer still learns why.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

use crate::limits::COALESCED_WRITE_MAX_BYTES;
use crate::runtime::write_out::poll_write_out;

pub struct CoalescedWrites<S: AsRawFd> {
    socket: Rc<RefCell<Socket<S>>>,
}

struct Socket<S: AsRawFd> {
    inner: S,
    /// Written, not yet sent; `sent` of them are gone already.
    buffer: Vec<u8>,
    sent: usize,
    /// A flush marked the buffer for the task's `SendAfterPoll` to send.
    due: bool,
    /// A deferred send failed: the next call on the socket reports it.
    failed: Option<io::ErrorKind>,
}

/// Wraps the connection task's future: after each of its polls, sends what a flush made
/// due on its socket.
pub struct SendAfterPoll<F, S: AsRawFd> {
    future: Pin<Box<F>>,
    socket: Rc<RefCell<Socket<S>>>,
}

impl<S: AsRawFd> CoalescedWrites<S> {
    /// Sends after each poll of the future that the returned handle wraps; every use of
    /// the socket must be inside that future.
    pub fn deferred(inner: S) -> (Self, DeferredSends<S>) {
        let socket = Rc::new(RefCell::new(Socket {
            inner,
            buffer: Vec::new(),
            sent: 0,
            due: false,
            failed: None,
        }));
        let sends = DeferredSends {
            socket: socket.clone(),
        };
        (Self { socket }, sends)
    }
}

/// What sends a deferred socket's writes: wraps the future that uses the socket.
pub struct DeferredSends<S: AsRawFd> {
    socket: Rc<RefCell<Socket<S>>>,
}

impl<S: AsRawFd + AsyncWrite + Unpin> DeferredSends<S> {
    pub fn after_each_poll<F: Future>(self, future: F) -> SendAfterPoll<F, S> {
        SendAfterPoll {
            future: Box::pin(future),
            socket: self.socket,
        }
    }
}

impl<F: Future, S: AsRawFd + AsyncWrite + Unpin> Future for SendAfterPoll<F, S> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = self.future.as_mut().poll(cx);
        let mut socket = self.socket.borrow_mut();
        if socket.due && socket.failed.is_none() {
            match socket.poll_send_buffered(cx) {
                Poll::Ready(Ok(())) => socket.due = false,
                Poll::Ready(Err(e)) => socket.failed = Some(e.kind()),
                // Woken when the socket is writable; this poll runs again and sends the rest.
                Poll::Pending => {}
            }
        }
        polled
    }
}

impl<S: AsRawFd + AsyncWrite + Unpin> Socket<S> {
    fn unsent(&self) -> usize {
        self.buffer.len() - self.sent
    }

    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }

    /// Sends what is buffered; ready once all of it is gone.
    fn poll_send_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(poll_write_out(
            &mut self.inner,
            cx,
            &self.buffer,
            &mut self.sent
        ))?;
        // Freed rather than kept: most connections are idle between rare small writes.
        self.buffer = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes without passing the bound, sending first if needed.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        self.check()?;
        if self.unsent() > 0 && self.unsent() + len > COALESCED_WRITE_MAX_BYTES {
            return self.poll_send_buffered(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsRawFd + AsyncRead + Unpin> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut socket = self.socket.borrow_mut();
        Pin::new(&mut socket.inner).poll_read(cx, buf)
    }
}

impl<S: AsRawFd + AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut socket = self.socket.borrow_mut();
        futures::ready!(socket.poll_room(cx, buf.len()))?;
        if socket.unsent() == 0 && buf.len() >= COALESCED_WRITE_MAX_BYTES {
            // Nothing to join it with: a copy would only cost.
            return Pin::new(&mut socket.inner).poll_write(cx, buf);
        }
        socket.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut socket = self.socket.borrow_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        futures::ready!(socket.poll_room(cx, total.min(COALESCED_WRITE_MAX_BYTES)))?;
        let mut taken = 0;
        for buf in bufs {
            // Whole slices only past the first, so a caller's record is never split
            // across a bound it did not ask for; the first is always taken.
            if taken > 0 && socket.unsent() + buf.len() > COALESCED_WRITE_MAX_BYTES {
                break;
            }
            socket.buffer.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut socket = self.socket.borrow_mut();
        socket.check()?;
        socket.due |= socket.unsent() > 0;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut socket = self.socket.borrow_mut();
        socket.check()?;
        futures::ready!(socket.poll_send_buffered(cx))?;
        socket.due = false;
        Pin::new(&mut socket.inner).poll_close(cx)
    }
}

impl<S: AsRawFd> Drop for Socket<S> {
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
    async fn raw_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = glommio::spawn_local(async move { TcpStream::connect(addr).await });
        let accepted = listener.accept().await.unwrap();
        let peer = connect.await.unwrap();
        (accepted, peer)
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
    /// after the flush, all in the task the socket's sends wrap.
    #[test]
    fn writes_wait_for_the_flush_and_arrive_in_order() {
        executor().run(async {
            let (inner, mut peer) = raw_pair().await;
            let (mut ours, sends) = CoalescedWrites::deferred(inner);
            sends
                .after_each_poll(async move {
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
                    assert_eq!(ours.socket.borrow().buffer.capacity(), 0, "freed once sent");
                })
                .await;
        });
    }

    /// Goal: a writer that never flushes still gets its bytes out once the bound would be
    /// passed, and a large write goes straight through. Method: writes past the bound,
    /// read by the peer without any flush.
    #[test]
    fn the_bound_sends_without_a_flush() {
        executor().run(async {
            let (inner, mut peer) = raw_pair().await;
            let (mut ours, sends) = CoalescedWrites::deferred(inner);
            sends
                .after_each_poll(async move {
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
                })
                .await;
        });
    }

    /// Goal: bytes written but never flushed still reach the peer when the stream is
    /// dropped (a TLS alert before closing). Method: write, drop, read to EOF.
    #[test]
    fn unsent_bytes_go_out_on_drop() {
        executor().run(async {
            let (inner, mut peer) = raw_pair().await;
            let (mut ours, sends) = CoalescedWrites::deferred(inner);
            ours.write_all(b"alert").await.unwrap();
            drop((ours, sends));
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"alert");
        });
    }

    /// Goal: flushes within one poll of the task go out together
    /// after the poll, and nothing waits past it. Method: two write+flush pairs in one
    /// poll of a `SendAfterPoll` task that then waits; the peer reads both at once.
    #[test]
    fn a_deferred_socket_sends_once_after_the_poll() {
        executor().run(async {
            let (inner, mut peer) = raw_pair().await;
            let (mut ours, sends) = CoalescedWrites::deferred(inner);
            let (flushed_tx, flushed_rx) = futures::channel::oneshot::channel::<()>();
            let task = glommio::spawn_local(sends.after_each_poll(async move {
                ours.write_all(b"first ").await.unwrap();
                ours.flush().await.unwrap();
                ours.write_all(b"second").await.unwrap();
                ours.flush().await.unwrap();
                let due = ours.socket.borrow().due;
                let unsent = ours.socket.borrow().unsent();
                let _ = flushed_tx.send(());
                // Waits (the poll returns) with both flights still in the buffer.
                glommio::timer::sleep(Duration::from_millis(300)).await;
                (due, unsent)
            }));
            flushed_rx.await.unwrap();
            let got = readable(&mut peer, 64).await;
            assert_eq!(
                got, b"first second",
                "both flights in one read, before the task ends"
            );
            let (due, unsent) = task.await;
            assert!(due, "the flushes were deferred");
            assert_eq!(unsent, 12, "nothing was sent inside the poll");
        });
    }
}
