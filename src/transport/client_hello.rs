//! Whether a connection's ClientHello has arrived: the socket is read through
//! [`HelloWatch`], which follows the first TLS record's header and says once that whole
//! record is in. A peer that connects and sends nothing, or a ClientHello byte by byte,
//! is then closed at `CLIENT_HELLO_TIMEOUT` instead of holding a handshake permit for the
//! whole handshake deadline.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

/// TLS record header: content type (1), legacy version (2), length (2).
const RECORD_HEADER_BYTES: usize = 5;

/// Shared between the watcher (inside the TLS stream) and the connection's driver.
#[derive(Clone, Default)]
pub struct HelloSeen(Rc<Cell<bool>>);

impl HelloSeen {
    pub fn get(&self) -> bool {
        self.0.get()
    }
}

/// Reads through to `inner`, noting when the first TLS record is complete; afterwards a
/// plain pass-through.
pub struct HelloWatch<S> {
    inner: S,
    seen: HelloSeen,
    header: [u8; RECORD_HEADER_BYTES],
    /// Bytes of the first record read so far (header included); `usize::MAX` once done.
    read: usize,
}

impl<S> HelloWatch<S> {
    pub fn new(inner: S) -> (Self, HelloSeen) {
        let seen = HelloSeen::default();
        let watch = Self {
            inner,
            seen: seen.clone(),
            header: [0; RECORD_HEADER_BYTES],
            read: 0,
        };
        (watch, seen)
    }

    fn observe(&mut self, bytes: &[u8]) {
        if self.read == usize::MAX {
            return;
        }
        for &b in bytes {
            if self.read < RECORD_HEADER_BYTES {
                self.header[self.read] = b;
            }
            self.read += 1;
            if self.read >= RECORD_HEADER_BYTES {
                let body = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                if self.read >= RECORD_HEADER_BYTES + body {
                    self.read = usize::MAX;
                    self.seen.0.set(true);
                    return;
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HelloWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.observe(&buf[..n]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HelloWatch<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_once_the_first_record_is_complete_however_it_is_split() {
        let record: Vec<u8> = [0x16, 0x03, 0x01, 0x00, 0x04, 1, 2, 3, 4].to_vec();
        for split in 0..record.len() {
            let (mut watch, seen) = HelloWatch::new(());
            watch.observe(&record[..split]);
            assert!(!seen.get(), "not complete after {split} bytes");
            watch.observe(&record[split..]);
            assert!(seen.get(), "complete after split at {split}");
        }
    }
}
